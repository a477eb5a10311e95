#!/usr/bin/env bash
# The README's main job: continue the bundled prompt (assets/prompts/allison.wav, held-out speech)
# with the bundled default model (models/default) and write the WAV and its spectrogram; then
# denoise a noisy version of it (assets/prompts/noisy-allison.wav: held-out wind noise at 5 dB SNR)
# with the bundled denoiser (models/denoiser).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/wavemamba
mkdir -p demo
"$bin" generate --model models/default --prompt assets/prompts/allison.wav --seconds "${SECONDS_OUT:-2}" \
  --out demo/continuation.wav --spectrogram demo/continuation.png --seed "${SEED:-1}"
"$bin" denoise --model models/denoiser assets/prompts/noisy-allison.wav demo/denoised.wav \
  --spectrogram demo/denoised.png
echo
echo "listen: demo/denoised.wav     (the denoiser's output for assets/prompts/noisy-allison.wav)"
echo "look:   demo/denoised.png     (spectrogram: noisy input | denoised output)"
echo "listen: demo/continuation.wav (prompt, then the model's continuation)"
echo "look:   demo/continuation.png (spectrogram; the white line marks where the prompt ends)"
