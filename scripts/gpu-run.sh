#!/usr/bin/env bash
# Runs the CUDA bundle (scripts/gpu-bundle.sh) on the GPU machine: sets LD_LIBRARY_PATH to that
# machine's libtorch and CUDA libraries, prints `wavemamba info`, runs every test executable, then
# runs the arguments, if any, as a wavemamba command line (e.g. `bench scan --device cuda`).
# Libraries: $TORCH_LIB / $CUDA_LIB, else found through that machine's python, else DESIGN.md's paths.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(command -v python3 || true)}
[ -x /opt/torch/.venv/bin/python ] && py=${PYTHON:-/opt/torch/.venv/bin/python}
site=$("$py" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null ||
  echo /opt/torch/.venv/lib/python3.12/site-packages)
# gpu-bundle/lib: alsa-lib, which the binary links (cpal) and the GPU machine lacks.
export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:${TORCH_LIB:-$site/torch/lib}:${CUDA_LIB:-$site/nvidia/cu13/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=gpu-bundle/wavemamba
[ -x "$bin" ] || { echo "no $bin: run scripts/gpu-bundle.sh on the build machine first" >&2; exit 1; }
export WAVEMAMBA_BIN="$PWD/$bin"  # for tests/cli.rs
status=0
echo "== wavemamba info"; "$bin" info || status=1
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  for t in gpu-bundle/tests/*; do
    echo "== $(basename "$t")"
    "$t" --test-threads=4 || status=1
  done
fi
if [ $# -gt 0 ]; then echo "== wavemamba $*"; "$bin" "$@" || status=1; fi
exit $status
