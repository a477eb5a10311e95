#!/usr/bin/env bash
# The README's main job. Until a trained model ships in models/, it shows the build (versions,
# kernels, devices) and runs the selective scan kernel of csrc/ forward and backward on random data.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/wavemamba
"$bin" info
echo
"$bin" bench scan --batch 1 --dim 64 --len 4096 --state 16 --backward --reps 3
