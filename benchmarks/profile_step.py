"""Where the time of one GAN training step goes: torch.profiler over the fused step and the stock eager step
(the ``fastgan`` and ``eager`` variants of ``fastgan bench``'s step case), side by side per op.

    python benchmarks/profile_step.py [--device cpu|cuda] [--steps 20] [--threads N] [--top 25] [--r1]

Prints, per variant, the ops with the most self time per step, then the difference per op (fastgan minus
eager), and a summary by pass (forward / backward / optimizer, from the profiler's stack of record_function
ranges and autograd nodes). On CUDA the times are the device's (kernel) self times.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastgan  # noqa: E402
from fastgan.bench.cases import StepCase  # noqa: E402
from fastgan.bench.timing import _quiet_fd2  # noqa: E402


def profile_variant(variant: str, device: torch.device, steps: int, r1: bool = False):
    from torch.profiler import ProfilerActivity, profile, record_function
    runner = StepCase(r1=r1).make(variant, device, sets=4)
    runner.check()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with fastgan.use_impl(runner.impl):
        for _ in range(5):
            runner.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        with _quiet_fd2(), profile(activities=acts) as prof:
            for _ in range(steps):
                with record_function("## step"):
                    runner.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
    return prof


def per_op(prof, device, steps):
    rows = {}
    for e in prof.key_averages():
        if e.key.startswith("## ") or e.key.startswith("ProfilerStep"):
            continue
        t = (e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total) / steps
        if t > 0:
            rows[e.key] = (t, e.count / steps)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--r1", action="store_true", help="the step with the R1 penalty (double backward through D)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    res = {}
    for v in ("fastgan", "eager"):
        prof = profile_variant(v, dev, args.steps, args.r1)
        res[v] = per_op(prof, dev, args.steps)
        step = [e for e in prof.key_averages() if e.key == "## step"]
        wall = step[0].cpu_time_total / args.steps if step else float("nan")
        total = sum(t for t, _ in res[v].values())
        print(f"\n=== {v}: {wall / 1e3:.2f} ms per step (wall, under the profiler); self times sum to "
              f"{total / 1e3:.2f} ms; {sum(c for _, c in res[v].values()):.0f} op calls per step")
        print(f"{'op':48s} {'us/step':>10s} {'calls':>6s} {'share':>6s}")
        for k, (t, c) in sorted(res[v].items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(f"{k[:48]:48s} {t:10.1f} {c:6.0f} {100 * t / total:5.1f}%")
    print("\n=== difference per op, fastgan - eager (us per step; + means fastgan spends more)")
    keys = set(res["fastgan"]) | set(res["eager"])
    diff = sorted(((res["fastgan"].get(k, (0, 0))[0] - res["eager"].get(k, (0, 0))[0], k) for k in keys),
                  key=lambda x: -abs(x[0]))
    for d, k in diff[:args.top]:
        f, e = res["fastgan"].get(k, (0, 0)), res["eager"].get(k, (0, 0))
        print(f"{k[:48]:48s} {d:+10.1f}   (fastgan {f[0]:9.1f} x{f[1]:.0f}, eager {e[0]:9.1f} x{e[1]:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
