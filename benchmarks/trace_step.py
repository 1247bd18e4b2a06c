"""What one training step launches: torch.profiler over the trainer's own step (fastgan train's defaults, batch 128)
on the embedded data, a plain step and an R1 step (lazy R1's every 4th), after warm-up.

    python benchmarks/trace_step.py [--device cuda|cpu] [--layers fused|stock] [--out DIR] [--cuda-graph]

Per step kind it prints every kernel (CUDA: device kernels; CPU: the ATen / fastgan ops that do the work) with its
call count and device (or self CPU) time, the kernel count, the total device time and the step's wall time, and
writes trace_<layers>.json (the same numbers) under --out. The GPU check (benchmarks/gpu_check.sh) runs it for both
layer kinds; benchmarks/RESULTS.md reads its output.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trace(device: str, layers: str, steps: int = 3, cuda_graph: bool = False) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from fastgan.train.trainer import TrainConfig, Trainer
    dev = torch.device(device)
    cfg = TrainConfig(out=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fastgan_trace_{layers}"), device=device,
                      layers=layers, quiet=True, overwrite=True, cuda_graph=cuda_graph)
    t = Trainer(cfg)
    step_fn = t._graph_step if cuda_graph else t._step
    cuda = dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    out = {"device": device, "layers": layers, "cuda_graph": cuda_graph, "torch": torch.__version__, "kinds": {}}

    def train_step(step, batch):  # as Trainer.train's loop: the stock layers' EMA update follows the step
        t.step = step
        step_fn(*batch)
        if t.ema_after_step:
            t.step += 1
            t._update_ema()

    # warm-up: both kinds of step, and with --cuda-graph both graphs captured (each kind's third step: the R1 steps
    # are 0, 4, 8), so no capture falls inside the profiled steps
    for s in range(9):
        train_step(s, t._batch(s))
    for kind, step in (("plain", 9), ("r1", 12)):
        assert (t.r1_weight(step) > 0) == (kind == "r1")
        batches = [t._batch(step) for _ in range(steps)]
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            for b in batches:
                train_step(step, b)
            if cuda:
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / steps
        per = collections.defaultdict(lambda: [0, 0.0])
        for e in prof.events():
            if cuda:
                if e.device_type != torch.autograd.DeviceType.CUDA:
                    continue
                key, us = e.name, e.device_time if hasattr(e, "device_time") else e.cuda_time
            else:
                if e.cpu_parent is not None or not (e.name.startswith("aten::") or e.name.startswith("fastgan")):
                    continue  # top-level ops only (their children are their own implementation)
                key, us = e.name, e.cpu_time_total
            per[key][0] += 1
            per[key][1] += us
        rows = sorted(([k, n / steps, us / steps] for k, (n, us) in per.items()), key=lambda r: -r[2])
        out["kinds"][kind] = {"wall_us": wall * 1e6, "kernels_per_step": sum(r[1] for r in rows),
                              "device_us": sum(r[2] for r in rows), "rows": rows}
    return out


def show(res: dict, top: int) -> None:
    what = "kernels" if res["device"].startswith("cuda") else "top-level ops (CPU)"
    for kind, k in res["kinds"].items():
        print(f"== {res['layers']} layers, {kind} step{' (CUDA graph)' if res['cuda_graph'] else ''}: "
              f"{k['kernels_per_step']:.0f} {what} per step, {k['device_us']:.1f} us of "
              f"{'device' if what == 'kernels' else 'CPU'} time, wall {k['wall_us']:.1f} us per step")
        for name, n, us in k["rows"][:top]:
            print(f"  {us:10.1f} us  {n:5.1f}x  {name[:110]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", choices=("fused", "stock", "both"), default="both")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    for layers in (("fused", "stock") if a.layers == "both" else (a.layers,)):
        res = trace(a.device, layers, a.steps, a.cuda_graph)
        show(res, a.top)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, f"trace_{layers}{'_graph' if a.cuda_graph else ''}.json"), "w") as f:
                json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
