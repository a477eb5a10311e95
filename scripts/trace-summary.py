#!/usr/bin/env python3
"""Summarise a Chrome trace from `wavemamba bench train --trace FILE` or `bench prefill --trace
FILE` (standard library only).

Prints GPU kernel time by kernel name (total, share, launches), the GPU's busy time against the
wall time the trace spans, and the CPU operators with the most self-reported time. Kernel names
are shortened (template arguments dropped) so instantiations of one kernel add up.

    scripts/trace-summary.py trace.json [--top 25] [--steps 2]   (a prefill trace: --steps 1)
"""
import argparse
import collections
import json
import re


def short(name: str) -> str:
    name = re.sub(r"<.*>", "<…>", name)  # template arguments
    name = re.sub(r"\(.*\)$", "", name)  # parameter lists
    return name[:110]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=2, help="training steps in the trace (per-step figures)")
    a = ap.parse_args()
    events = json.load(open(a.trace))["traceEvents"]
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    cpu = [e for e in events if e.get("cat") == "cpu_op" and "dur" in e]
    if not gpu:
        print("no GPU kernels in the trace (CPU run, or CUPTI unavailable)")
    else:
        by = collections.defaultdict(lambda: [0.0, 0])
        for e in gpu:
            k = by[short(e["name"])]
            k[0] += e["dur"]
            k[1] += 1
        busy = sum(v[0] for v in by.values())
        t0 = min(e["ts"] for e in gpu)
        t1 = max(e["ts"] + e["dur"] for e in gpu)
        print(f"GPU: {len(gpu)} kernels, busy {busy / 1e3 / a.steps:.2f} ms per step of "
              f"{(t1 - t0) / 1e3 / a.steps:.2f} ms wall ({100 * busy / (t1 - t0):.0f}% busy)")
        print(f"{'ms/step':>8} {'share':>6} {'calls/step':>10}  kernel")
        for name, (dur, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[: a.top]:
            print(f"{dur / 1e3 / a.steps:8.3f} {100 * dur / busy:5.1f}% {n / a.steps:10.1f}  {name}")
    by = collections.defaultdict(lambda: [0.0, 0])
    for e in cpu:
        k = by[e["name"]]
        k[0] += e["dur"]
        k[1] += 1
    print(f"\nCPU operators (inclusive time), top {min(a.top, len(by))}:")
    for name, (dur, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"{dur / 1e3 / a.steps:8.3f} ms/step {n / a.steps:8.1f} calls/step  {name}")


if __name__ == "__main__":
    main()
