"""The two latencies the GPU design's step prediction rests on (benchmarks/notes_kernels.md, "Predictions for the
tensor-core design"), measured with fastgan's own kernels:

1. the cost of one node in a CUDA graph of dependent small kernels: a chain of fastgan ``bias_act`` launches, each
   reading the previous one's output, with programmatic dependent launch off and on, beside a chain of ATen adds
   (one elementwise kernel each); and the same chains launched eagerly (the host's cost per call);
2. the k-loop latency of the GEMM tiles: fastgan's dense forward (bias + leaky ReLU epilogue, the kernel route
   forced) at M = N = 64 (one 64x64 tile) and K = 16 n for n = 1 .. 31 k-tiles (below the split-K threshold),
   in a CUDA graph of dependent launches; a least-squares line t = a + b n gives the time per 16-deep k-tile (b)
   and the fixed cost of a launch in a graph (a). Exact float32 (SIMT tiles), TF32 and BF16 (tensor-core tiles);
   one tile, and a full wave (two tiles per SM).

    python benchmarks/latency_probe.py [--device cuda|cpu] [--out DIR] [--quick]

Prints one ``== `` line per measurement with the prediction beside it and writes latency_probe.json under --out.
On the CPU (the GPU check's dry run) the same loops run eagerly on the CPU kernels: that checks the plumbing, and
its numbers are not the GPU's.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the source tree's fastgan
import fastgan  # noqa: E402
from fastgan import _ext  # noqa: E402
import fastgan.functional as FF  # noqa: E402

# Estimates from benchmarks/notes_kernels.md (no GPU had measured them when they were written).
PREDICTED = {"node_us": (1.0, 1.5), "ktile_us": {"float32": 0.35, "tf32": 0.1, "bfloat16": 0.1}}
KTILES = (1, 2, 4, 8, 16, 31)  # K = 16 n; K >= 512 would split K over several blocks (gemm.cuh make_plan)


def fit_line(xs, ys):
    """Least squares y = a + b x: (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def per_launch_us(fn, launches: int, device: torch.device, reps: int) -> float:
    """Median time per launch of ``fn`` (which makes ``launches`` dependent launches): replays of a CUDA graph
    of it on CUDA, eager calls on the CPU."""
    if device.type != "cuda":
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6 / launches
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch's graph docs advise
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e3 / launches)
    return statistics.median(ts)


def eager_us(fn, launches: int, device: torch.device, reps: int) -> float:
    """Median wall time per call of eager launches, the device drained before and after (the host's cost)."""
    ts = []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts[1:]) * 1e6 / launches


def chains(device: torch.device, n: int, reps: int) -> dict:
    x = torch.randn(1, 256, device=device)
    b = torch.randn(256, device=device) * 1e-3

    def fastgan_chain():
        y = x
        for _ in range(n):
            y = FF.bias_act(y, b, act="lrelu", alpha=0.2)
        return y

    def aten_chain():
        y = x
        for _ in range(n):
            y = torch.add(y, b)
        return y

    cuda = device.type == "cuda"
    res = {"chain_length": n, "graph_us": {}, "eager_us": {}}
    pdl_modes = (False, True) if cuda else (False,)
    for pdl in pdl_modes:
        key = "fastgan bias_act" + (", PDL on" if pdl else "")
        launched = _ext.C.cuda_pdl_launches() if pdl else 0
        with fastgan.cuda_pdl(pdl) if cuda else contextlib.nullcontext():
            res["graph_us"][key] = per_launch_us(fastgan_chain, n, device, reps)
            res["eager_us"][key] = eager_us(fastgan_chain, n, device, reps)
        if pdl:  # launch() drops the attribute where the kernels are not sm_90+ code: then the row is PDL off
            res["pdl_launches"] = _ext.C.cuda_pdl_launches() - launched
    res["graph_us"]["ATen add"] = per_launch_us(aten_chain, n, device, reps)
    res["eager_us"]["ATen add"] = eager_us(aten_chain, n, device, reps)
    return res


def ktile(device: torch.device, launches: int, reps: int, ktiles=KTILES, on_row=None) -> dict:
    """The k-loop rows (see the module docstring); ``on_row(key, row)`` is called as each is measured."""
    cuda = device.type == "cuda"
    sm = torch.cuda.get_device_properties(device).multi_processor_count if cuda else 1
    precisions = (("float32", torch.float32, False), ("tf32", torch.float32, True), ("bfloat16", torch.bfloat16, False))
    out = {}
    route = fastgan.cuda_gemm_route("kernels") if cuda else contextlib.nullcontext()
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        with route, torch.no_grad():
            for name, dtype, tf32 in precisions:
                torch.backends.cuda.matmul.allow_tf32 = tf32
                for wave, rows in (("one tile", 64), ("full wave", 64 * 2 * sm)):
                    pts = []
                    for n in ktiles:
                        k = 16 * n
                        x = torch.randn(rows, k, device=device, dtype=dtype)
                        w = torch.randn(64, k, device=device, dtype=dtype) * k ** -0.5
                        bias = torch.zeros(64, device=device, dtype=dtype)
                        ys = [None]

                        def gemms():
                            for _ in range(launches):  # one stream: each launch waits for the one before
                                ys[0] = FF.linear(x, w, bias, act="lrelu", alpha=0.2)

                        pts.append((n, per_launch_us(gemms, launches, device, reps)))
                    a, b = fit_line([p[0] for p in pts], [p[1] for p in pts])
                    key = f"{name}, {wave}"
                    out[key] = {"precision": name, "rows": rows, "points_us": pts, "intercept_us": a,
                                "per_ktile_us": b, "predicted_per_ktile_us": PREDICTED["ktile_us"][name]}
                    if on_row is not None:
                        on_row(key, out[key])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="folder for latency_probe.json")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (the dry run's plumbing check)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    reps = 3 if a.quick else 15
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
    def save():  # after each section: a run cut short keeps what it measured
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            path = os.path.join(a.out, "latency_probe.json")
            with open(path + ".tmp", "w") as f:
                json.dump(res, f, indent=1)
            os.replace(path + ".tmp", path)

    if device.type != "cuda":
        print("== CPU: eager calls on the CPU kernels, the plumbing only (these are not the GPU's numbers)")
    c = res["chains"] = chains(device, 10 if a.quick else 100, reps)
    save()
    cuda = device.type == "cuda"
    lo, hi = PREDICTED["node_us"]
    print(f"== per node of a chain of {c['chain_length']} dependent small kernels, "
          f"{'in a CUDA graph' if cuda else 'eager, CPU'} (us): "
          + ", ".join(f"{k} {v:.2f}" for k, v in c["graph_us"].items()) + (f"  [predicted {lo}-{hi}]" if cuda else ""))
    print("== per eager call, host included (us): " + ", ".join(f"{k} {v:.2f}" for k, v in c["eager_us"].items()))
    if cuda and not c.get("pdl_launches"):
        print("== WARNING: the 'PDL on' rows made no programmatic launch (fastgan's kernels are not sm_90+ code "
              "here): they measure PDL off")
    res["ktile"] = {}

    def row(key, r):
        res["ktile"][key] = r
        pts = " ".join(f"{n}:{t:.2f}" for n, t in r["points_us"])
        pred = f"  [predicted {r['predicted_per_ktile_us']} per k-tile]" if cuda else ""
        print(f"== GEMM k-loop, {key} (x {r['rows']}x16n, 64 outputs): {r['per_ktile_us']:.3f} us per 16-deep k-tile "
              f"+ {r['intercept_us']:.2f} us per launch{pred}  (k-tiles:us {pts})", flush=True)
        save()
    ktile(device, 4 if a.quick else 20, reps, KTILES[:3] if a.quick else KTILES, on_row=row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
