#!/usr/bin/env bash
# On the GPU machine, from the CUDA bundle (scripts/gpu-bundle.sh): the CUDA scan tests, then
# `wavemamba bench scan --device cuda` on the cases of issue 8 (BENCHMARKS.md), each with the
# tuning variants given in $VARIANTS (space-separated env assignments, commas between several;
# "default" = none). JSON lines go to $OUT/bench.jsonl, logs to $OUT/, a table to stdout (medians;
# "q" columns: means of calls queued back to back).
#   scripts/gpu-scan.sh                      # tests + benchmarks, default settings
#   SKIP_TESTS=1 VARIANTS="default,WM_SCAN_WIDE=1" scripts/gpu-scan.sh
#   TEST_VARIANTS="default,WM_SCAN_BWD_WIDE=0" PROFILE="16,128,16384,bf16" BIN=other/wavemamba …
#   SKIP_TESTS=1 BINS="old/wavemamba gpu-bundle/wavemamba" scripts/gpu-scan.sh   # two builds, one run
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/wavemamba-gpu-scan}
mkdir -p "$OUT"
py=${PYTHON:-$(command -v python3 || true)}
[ -x /opt/torch/.venv/bin/python ] && py=${PYTHON:-/opt/torch/.venv/bin/python}
site=$("$py" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null ||
  echo /opt/torch/.venv/lib/python3.12/site-packages)
# gpu-bundle/lib: the alsa-lib the binary links (scripts/gpu-bundle.sh); the GPU machine has none.
export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:${TORCH_LIB:-$site/torch/lib}:${CUDA_LIB:-$site/nvidia/cu13/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${BIN:-gpu-bundle/wavemamba}
status=0

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv 2>&1 | tee "$OUT/gpu.txt"

# Test runs: "name=ENV ENV …" (the kernel variants read these at every call).
IFS=',' read -r -a test_variants <<<"${TEST_VARIANTS:-default}"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout 120 gpu-bundle/tests/cuda_ops --test-threads=4 >"$OUT/test_cuda_ops.log" 2>&1 || status=1
  echo "== test cuda_ops: $(grep -E '^test result' "$OUT/test_cuda_ops.log")"
  for tv in "${test_variants[@]}"; do
    t=cuda_scan
    env_args=()
    [ "$tv" != default ] && read -r -a env_args <<<"$tv"
    log="$OUT/test_${t}_$(echo "$tv" | tr -c 'A-Za-z0-9_' '_' | cut -c1-60).log"
    echo "== test $t [$tv]"
    if ! env "${env_args[@]}" timeout 300 "gpu-bundle/tests/$t" --test-threads=4 >"$log" 2>&1; then
      status=1
      status=1
      grep -E "panicked|rel err|differ|FAILED|error" "$log" | head -30
      if command -v compute-sanitizer >/dev/null && [ ! -e "$OUT/sanitizer.log" ]; then
        echo "== compute-sanitizer memcheck (first failing test)"
        first=$(grep -oE "^test [a-z0-9_]+ \.\.\. FAILED" "$log" | head -1 | cut -d' ' -f2)
        [ -n "$first" ] && env "${env_args[@]}" timeout 150 compute-sanitizer --tool memcheck \
          --print-limit 20 "gpu-bundle/tests/$t" --exact "$first" --test-threads=1 \
          >"$OUT/sanitizer.log" 2>&1
        grep -E "Invalid|ERROR SUMMARY|at 0x|by thread" "$OUT/sanitizer.log" | head -20
      fi
    fi
    grep -E "^test result" "$log"
  done
fi

# (batch, dim, len, dtype) of issue 8, N = 16, variable B/C (B, N, L), with z, D, bias, softplus.
cases=${CASES:-"16,128,16384,f32 16,128,16384,bf16 8,256,65536,f32 8,2048,2048,f32 8,2048,2048,bf16 1,256,1048576,f32"}
IFS=',' read -r -a variants <<<"${VARIANTS:-default}"
# BINS="a/wavemamba b/wavemamba": several binaries, interleaved case by case (compare them in one run).
read -r -a bins <<<"${BINS:-$bin}"
for v in "${variants[@]}"; do
  for c in $cases; do
    IFS=',' read -r B D L DT <<<"$c"
    env_args=()
    [ "$v" != default ] && read -r -a env_args <<<"$v"
    for b in "${bins[@]}"; do
      label=$v
      [ ${#bins[@]} -gt 1 ] && label="$b $v"
      json=$(env "${env_args[@]}" timeout 120 "$b" bench scan --device cuda --batch "$B" --dim "$D" \
        --len "$L" --state 16 --dtype "$DT" --backward --no-reference --warmup "${WARMUP:-3}" \
        --reps "${REPS:-10}" --json 2>>"$OUT/bench.err") || { status=1; echo "bench $c [$label] failed"; continue; }
      echo "{\"variant\":\"$label\",\"report\":$json}" >>"$OUT/bench.jsonl"
    done
  done
done

"$py" - "$OUT/bench.jsonl" <<'EOF'
import json, sys
target = {("16,128,16384","float32"): (0.75, 2.45), ("16,128,16384","bfloat16"): (0.36, 1.84),
          ("8,256,65536","float32"): (2.72, 9.37), ("8,2048,2048","float32"): (0.59, 2.14),
          ("8,2048,2048","bfloat16"): (0.33, 1.57), ("1,256,1048576","float32"): (6.0, 21.6)}
print(f"{'variant':34} {'case':16} {'dtype':8} {'fwd ms':>8} {'(<=)':>6} {'f+b ms':>8} {'(<=)':>6} {'GB/s':>6} {'f+b GB/s':>8} {'ws/BDL':>6} {'fwd q':>7} {'f+b q':>7}")
try:
    lines = open(sys.argv[1]).read().split("\n")
except OSError:
    lines = []
for line in lines:
    if not line.strip():
        continue
    x = json.loads(line); r = x["report"]
    case = f"{r['batch']},{r['dim']},{r['len']}"
    t = target.get((case, r["dtype"]), (float("nan"), float("nan")))
    ws = r.get("cuda_workspace_over_bdl_f32")
    print(f"{x['variant'][:34]:34} {case:16} {r['dtype'][:8]:8} {r['fwd_ms']:8.3f} {t[0]:6.2f} "
          f"{(r['fwdbwd_ms'] or 0):8.3f} {t[1]:6.2f} {r['achieved_gbps']:6.0f} "
          f"{(r['fwdbwd_achieved_gbps'] or 0):8.0f} {(ws if ws is not None else float('nan')):6.2f} "
          f"{(r.get('fwd_ms_queued') or float('nan')):7.3f} {(r.get('fwdbwd_ms_queued') or float('nan')):7.3f}")
EOF
# Optional Nsight Compute profiles (PROFILE="B,D,L,dtype …"): one forward+backward each, the scan
# kernels only, speed-of-light and warp-state sections, into $OUT/ncu_*.txt.
for c in ${PROFILE:-}; do
  IFS=',' read -r B D L DT <<<"$c"
  command -v ncu >/dev/null || { echo "no ncu"; break; }
  timeout 120 ncu --clock-control none --kernel-name regex:scan_ --launch-skip 0 --launch-count 6 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
    "$bin" bench scan --device cuda --batch "$B" --dim "$D" --len "$L" --dtype "$DT" --backward \
    --no-reference --warmup 0 --reps 1 >"$OUT/ncu_${B}_${D}_${L}_${DT}.txt" 2>&1 || echo "ncu $c failed"
  grep -E "scan_|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued" \
    "$OUT/ncu_${B}_${D}_${L}_${DT}.txt" | head -60
done

exit $status
