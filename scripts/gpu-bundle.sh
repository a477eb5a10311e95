#!/usr/bin/env bash
# Builds, on this machine, everything the GPU machine runs (it has libtorch and a GPU but no cargo):
# the release binary and the test executables, with --features cuda, into gpu-bundle/ (git-ignored,
# small enough to travel with the working tree), plus scripts/gpu-run.sh to run them there.
# Uses its own target dir (target/cuda) so CPU and CUDA builds do not rebuild each other.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA=1 ./scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release --features cuda
mapfile -t tests < <(cargo test --release --features cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
rm -rf gpu-bundle && mkdir -p gpu-bundle/tests
cp "$CARGO_TARGET_DIR/release/wavemamba" gpu-bundle/
for t in "${tests[@]}"; do
  cp "$t" "gpu-bundle/tests/$(basename "$t" | sed 's/-[0-9a-f]*$//')"
done
strip gpu-bundle/wavemamba gpu-bundle/tests/* 2>/dev/null || true
# The binary links alsa-lib (cpal, for `live`); the GPU machine has none: carry it along
# (scripts/gpu-run.sh puts gpu-bundle/lib on LD_LIBRARY_PATH).
mkdir -p gpu-bundle/lib
cp -L "$(ldconfig -p | awk '/libasound\.so\.2 /{print $NF; exit}')" gpu-bundle/lib/
du -sh gpu-bundle
echo "gpu-bundle ready: on the GPU machine run  scripts/gpu-run.sh [command ...]"
