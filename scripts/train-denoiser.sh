#!/usr/bin/env bash
# Trains the bundled denoiser (models/denoiser) the way it was made: a 64-wide, 8-layer plain Mamba
# (scripts/configs/denoiser.json; one core streams it at RTF < 0.3) on speech + noise token packs,
# mixed on the fly at −5…20 dB SNR, within a wall-clock budget: it measures the machine's training
# throughput first and sets --steps so that the whole cosine schedule fits.
#
#   BIN=gpu-bundle/wavemamba DEVICE=cuda SPEECH=packs/speech-en-es-fr.wmtok \
#     NOISE=packs/noise-ambient.wmtok BUDGET_S=420 scripts/train-denoiser.sh
#
# Packs: `wavemamba train --data CORPUS --save-pack P.wmtok --steps 0` (scripts/build-corpus.py makes
# the speech corpus: add `--select kind=speech` for the speech rows of its manifest.tsv; noise:
# 0ad + megaglest ambience from ../shared/tools/speech-corpus).
# With INIT (fine-tuning) the run trains that model's own config: CONFIG is not used.
# Writes the run to $OUTDIR (default runs/denoiser); the model is $OUTDIR/best.
# On the GPU machine put gpu-bundle/lib (alsa-lib) and that machine's torch/CUDA libraries on
# LD_LIBRARY_PATH first, as scripts/gpu-run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/wavemamba}
SPEECH=${SPEECH:-packs/speech-en-es-fr.wmtok}
NOISE=${NOISE:-packs/noise-ambient.wmtok}
BUDGET_S=${BUDGET_S:-420}
THREADS=${THREADS:-$(nproc)}
OUTDIR=${OUTDIR:-runs/denoiser}
CONFIG=${CONFIG:-scripts/configs/denoiser.json}
BATCH=${BATCH:-32}
LEN=${LEN:-8192}
DEVICE=${DEVICE:-cpu}
LR=${LR:-2e-3}
WARMUP=${WARMUP:-200}
INIT=${INIT:-}   # a model directory to fine-tune from (e.g. models/denoiser)
SEED=${SEED:-1}
PRECISION=${PRECISION:-fp32}   # bf16: autocast on CUDA
if [ -n "$INIT" ]; then
  # `train --init` keeps the model's config (and refuses a --config of another model): measure
  # the throughput of that config, and leave --config out.
  CONFIG=$INIT/config.json
  model=(--init "$INIT")
else
  model=(--config "$CONFIG")
fi
for p in "$SPEECH" "$NOISE"; do
  if [ ! -f "$p" ] && [ -f "$p.xz" ]; then xz -dk -T0 "$p.xz"; fi
  [ -f "$p" ] || { echo "no token pack at $p" >&2; exit 1; }
done
rate=$("$BIN" bench train --config "$CONFIG" --batch "$BATCH" --len "$LEN" --steps 2 --threads "$THREADS" --device "$DEVICE" --precision "$PRECISION" --json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["samples_per_s"])')
# The denoising loss (expected value, three STFTs), the noise mixing and validation cost more than
# NLL: measured on the H200, the denoiser trained at 0.76 of the LM benchmark's rate in fp32 (2.1 vs
# 2.8 M samples/s) but at 0.41 in bf16, where the LM step itself is cheaper (stage 3 of
# models/README.md: factor 0.55 and BUDGET_S=280 planned 4617 steps, i.e. a benchmark of 7.86 M
# samples/s; training ran 12.2 steps/s of 32 × 8192 = 3.2 M, and the 335 s limit stopped it at 4020).
factor=$([ "$PRECISION" = bf16 ] && echo 0.4 || echo 0.8)
steps=$(python3 -c "print(max(50, int($factor * $BUDGET_S * $rate / ($BATCH * $LEN))))")
echo "LM throughput $rate samples/s on $THREADS threads ($DEVICE): training $steps steps of $BATCH x $LEN"
"$BIN" train --task denoise --data "$SPEECH" --noise "$NOISE" "${model[@]}" --out "$OUTDIR" --device "$DEVICE" --precision "$PRECISION" \
  --steps "$steps" --batch "$BATCH" --len "$LEN" --lr "$LR" --warmup "$WARMUP" \
  --valid-every 200 --ckpt-every 200 --log-every 20 --threads "$THREADS" --seed "$SEED" --quiet
