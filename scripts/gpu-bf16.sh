#!/usr/bin/env bash
# The bf16-autocast check of issue 8, on the GPU machine (from the repository root there, with
# gpu-bundle/wavemamba, gpu-bundle/tests/cuda_{scan,ops} and packs/speech-en-es-fr.wmtok):
#   1. `bench train` samples/s alone on the GPU, 16 × 16384, for `small` and 64 × 8
#      (scripts/configs/denoiser.json): bf16 autocast (scan in float32, the default), bf16 with the
#      bf16 scan kernels (WM_SCAN_BF16_IO=1) and fp32;
#   2. the CUDA test executables;
#   3. LM trainings on the speech pack (1500 steps × 32 × 8192, lr 1e-3, 200 warm-up steps),
#      concurrently, each cut at TRAIN_S seconds: bf16 and bf16 with the bf16 scan kernels, and
#      fp32 when FP32=1. metrics.jsonl are copied to $OUT as they grow.
# Results: $OUT/{bench.jsonl,tests.txt,metrics-*.jsonl}; a summary on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
site=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$site/torch/lib:$site/nvidia/cu13/lib"
OUT=${OUT:-/tmp/gpu-bf16-out}
TRAIN_S=${TRAIN_S:-150}
mkdir -p "$OUT" runs
B=gpu-bundle/wavemamba
[ -f packs/speech-en-es-fr.wmtok ] || xz -dk -T0 packs/speech-en-es-fr.wmtok.xz
t0=$SECONDS
for cfg in small scripts/configs/denoiser.json; do
  for v in "bf16" "bf16 WM_SCAN_BF16_IO=1" "fp32"; do
    set -- $v
    env X=1 "${@:2}" "$B" bench train --config "$cfg" --device cuda --batch 16 --len 16384 \
      --steps 10 --precision "$1" --json 2>/dev/null |
      sed "s/^{/{\"config\":\"$(basename "$cfg")\",\"env\":\"${*:2}\",/" >> "$OUT/bench.jsonl"
  done
done
echo "bench done after $((SECONDS - t0)) s"; cat "$OUT/bench.jsonl"
for t in gpu-bundle/tests/*; do
  "$t" --test-threads=4 > "$OUT/tests-$(basename "$t").txt" 2>&1 &
done
common=(train --data packs/speech-en-es-fr.wmtok --config small --device cuda --steps 1500
  --batch 32 --len 8192 --lr 1e-3 --warmup 200 --valid-every 250 --ckpt-every 500 --log-every 10
  --threads 4 --quiet)
run() { # name precision env...
  local name=$1 prec=$2; shift 2
  env X=1 "$@" timeout "$TRAIN_S" "$B" "${common[@]}" --precision "$prec" --out "runs/$name" \
    > "runs/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - t0)) s: $(grep -v Warning "runs/$name.log" | tail -n 3 | tr '\n' ' ')"
  cp "runs/$name/metrics.jsonl" "$OUT/metrics-$name.jsonl"
}
run bf16 bf16 &
run bf16-scan-bf16 bf16 WM_SCAN_BF16_IO=1 &
[ "${FP32:-0}" = 1 ] && run fp32 fp32 &
wait
echo "all done after $((SECONDS - t0)) s"
grep -h "test result" "$OUT"/tests-*.txt
