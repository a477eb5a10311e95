#!/usr/bin/env bash
# Trains the bundled default model (models/default) the way it was made: the `small` preset on a
# token pack of real speech (scripts/build-corpus.py, then `wavemamba train --data
# CORPUS/manifest.tsv --select kind=speech --save-pack PACK --steps 0`), within a wall-clock budget: it measures the
# machine's training throughput first and sets --steps so the whole cosine schedule fits.
#
#   BIN=target/release/wavemamba PACK=packs/speech-en-es-fr.wmtok BUDGET_S=480 scripts/train-default.sh
#
# Writes the run to $OUTDIR (default runs/default); the model is $OUTDIR/best.
# On the GPU machine put gpu-bundle/lib (alsa-lib) and that machine's torch/CUDA libraries on
# LD_LIBRARY_PATH first, as scripts/gpu-run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/wavemamba}
PACK=${PACK:-packs/speech-en-es-fr.wmtok}
BUDGET_S=${BUDGET_S:-480}
THREADS=${THREADS:-$(nproc)}
OUTDIR=${OUTDIR:-runs/default}
CONFIG=${CONFIG:-small}
BATCH=${BATCH:-16}
LEN=${LEN:-8192}
DEVICE=${DEVICE:-cpu}
LR=${LR:-3e-3}
WARMUP=${WARMUP:-50}
PRECISION=${PRECISION:-fp32}
if [ ! -f "$PACK" ] && [ -f "$PACK.xz" ]; then xz -dk -T0 "$PACK.xz"; fi
[ -f "$PACK" ] || { echo "no token pack at $PACK" >&2; exit 1; }
rate=$("$BIN" bench train --config "$CONFIG" --batch "$BATCH" --len "$LEN" --steps 2 --threads "$THREADS" --device "$DEVICE" --precision "$PRECISION" --json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["samples_per_s"])')
steps=$(python3 -c "print(max(50, int(0.92 * $BUDGET_S * $rate / ($BATCH * $LEN))))")
echo "throughput $rate samples/s on $THREADS threads ($DEVICE): training $steps steps of $BATCH x $LEN"
"$BIN" train --data "$PACK" --config "$CONFIG" --out "$OUTDIR" --device "$DEVICE" --precision "$PRECISION" --steps "$steps" --batch "$BATCH" --len "$LEN" \
  --lr "$LR" --warmup "$WARMUP" --valid-every 100 --ckpt-every 100 --log-every 10 --threads "$THREADS" --seed 1 --quiet
