#!/usr/bin/env bash
# The README's main job: continue the bundled prompt (assets/prompts/allison.wav, held-out speech)
# with the bundled default model (models/default) and write the WAV and its spectrogram.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/wavemamba
mkdir -p demo
"$bin" generate --model models/default --prompt assets/prompts/allison.wav --seconds "${SECONDS_OUT:-2}" \
  --out demo/continuation.wav --spectrogram demo/continuation.png --seed "${SEED:-1}"
echo
echo "listen: demo/continuation.wav (prompt, then the model's continuation)"
echo "look:   demo/continuation.png (spectrogram; the white line marks where the prompt ends)"
