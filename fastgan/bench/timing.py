"""Timing, peak memory and machine ceilings for ``fastgan bench``.

* CPU: ``time.perf_counter`` around blocks of iterations. CUDA: ``torch.cuda.Event`` pairs around blocks of
  iterations on the current stream, read after ``Event.synchronize``.
* Every runner is warmed up first (compilation, handle creation and first-touch allocation stay out of the
  numbers), a block length is calibrated so that one block lasts ``block_s``, and then the blocks of the
  variants of one case are interleaved (variant A, B, C, A, B, C, ...) so that slow drifts of a shared machine
  hit them alike. Each block gives one per-iteration time; the result is the median over blocks with the
  quartiles and min/max as the spread. The Python garbage collector is off inside a block.
* Peak memory of one iteration: CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated before it
  (after a reset of the peak); a CUDA-graph variant instead reports the graph's private pool, which stays
  allocated. CPU: the running sum of the allocation and free events that ``torch.profiler`` records with
  ``profile_memory=True`` during one iteration (memory held before the iteration not counted).
* Ceilings, measured at the start of a run: copy bandwidth (one large tensor copied, bytes read + written)
  and the float32 matrix-product rate (one large square ``torch.mm``, with the TF32 setting in force); the best
  of a few runs, since a ceiling is what the machine can do (on a busy machine it is still an underestimate).
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from .. import _impl


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _no_gc():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def time_block(step: Callable, n: int, device: torch.device) -> float:
    """Seconds per iteration of ``n`` back-to-back calls of ``step``."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        with _no_gc():
            start.record()
            for _ in range(n):
                step()
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    with _no_gc():
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        t1 = time.perf_counter()
    return (t1 - t0) / n


def warm_up(runner, device: torch.device, min_iters: int, min_s: float) -> float:
    """Runs ``runner`` until both ``min_iters`` calls and ``min_s`` seconds have passed; returns the seconds per
    call of the last calls (a first estimate for calibration)."""
    t_end = time.perf_counter() + min_s
    i = 0
    with _impl.use_impl(runner.impl):
        while True:
            sync(device)
            t0 = time.perf_counter()
            runner.step()
            sync(device)
            dt = time.perf_counter() - t0
            i += 1
            if i >= min_iters and time.perf_counter() >= t_end:
                return dt


def calibrate(runner, device: torch.device, block_s: float, max_iters: int = 100000) -> int:
    """Iterations per block so that a block lasts about ``block_s``."""
    n = 1
    with _impl.use_impl(runner.impl):
        while True:
            dt = time_block(runner.step, n, device) * n
            if dt >= block_s / 4 or n >= max_iters:
                break
            n *= 4
    per = dt / n
    return max(1, min(max_iters, int(math.ceil(block_s / max(per, 1e-9)))))


def summarize(samples: List[float]) -> dict:
    s = sorted(samples)
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25, p75 = s[0], s[-1]
    return {"median_s": statistics.median(s), "p25_s": p25, "p75_s": p75, "min_s": s[0], "max_s": s[-1],
            "n_blocks": len(s)}


def time_interleaved(runners: list, device: torch.device, repeats: int, block_s: float,
                     deadline: Optional[float] = None) -> Dict[str, dict]:
    """Per-iteration times of already warmed-up runners, blocks interleaved across runners.
    Stops adding blocks at ``deadline`` (time.perf_counter()) once every runner has at least 3."""
    iters = {r.variant: calibrate(r, device, block_s) for r in runners}
    samples: Dict[str, List[float]] = {r.variant: [] for r in runners}
    for rep in range(repeats):
        if deadline is not None and rep >= 3 and time.perf_counter() > deadline:
            break
        for r in runners:
            with _impl.use_impl(r.impl):
                samples[r.variant].append(time_block(r.step, iters[r.variant], device))
    out = {}
    for r in runners:
        res = summarize(samples[r.variant])
        res["iters_per_block"] = iters[r.variant]
        out[r.variant] = res
    return out


# ------------------------------------------------------------------------------------------------ memory
@contextlib.contextmanager
def _quiet_fd2():
    """Silences file descriptor 2 (kineto prints start/stop lines and device-count errors there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(runner, device: torch.device) -> tuple:
    """(bytes or None, method): the extra memory one iteration of a warmed-up runner needs at its peak."""
    if device.type == "cuda":
        if runner.variant.endswith("+graph"):
            pool = runner.info.get("graph_pool_bytes")
            return pool, "CUDA graph private pool (allocated at capture, held for the graph's life)"
        sync(device)
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with _impl.use_impl(runner.impl):
            out = runner.step()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak), "torch.cuda.max_memory_allocated during one iteration, minus memory held before it"
    try:
        from torch.profiler import ProfilerActivity, profile
        with _quiet_fd2():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                with _impl.use_impl(runner.impl):
                    out = runner.step()
            del out
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        cur = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            cur += e.nbytes()
            peak = max(peak, cur)
        return int(peak), "torch.profiler(profile_memory=True): peak of allocations minus frees during one iteration"
    except Exception as e:  # the profiler is optional equipment here
        return None, f"n/a ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------------------------- ceilings
def _run_times(fn, device: torch.device, n: int) -> list:
    """Seconds of each of ``n`` calls of ``fn`` (CUDA: device time between events), the first one dropped."""
    out = []
    for i in range(n):
        sync(device)
        if device.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            dt = e0.elapsed_time(e1) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        if i:
            out.append(dt)
    return out


def copy_rate(device: torch.device, nbytes: float, quick: bool) -> float:
    """The best copy bandwidth (B/s, read + write) for a copy that moves ``nbytes`` in all (a source of nbytes / 2):
    the memory ceiling of a case with that footprint, from whichever cache level holds it."""
    n = max(1, int(nbytes) // 8)
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    reps = max(1, min(1000, int(4e6 // n)))  # (small copies repeated, so one timed call is not all overhead)

    def many():
        for _ in range(reps):
            dst.copy_(src)
    runs = [8.0 * n * reps / dt for dt in _run_times(many, device, 8 if device.type == "cuda" else (4 if quick else 6))]
    return max(runs)


def measure_peaks(device: torch.device, quick: bool, tiny: bool = False) -> dict:
    """Copy bandwidth (B/s, read + write) and float32 compute rate (FLOP/s: the best vendor GEMM or convolution) of
    ``device``: the best of a few runs
    (first run discarded; the medians are kept too).
    ``tiny``: small sizes that only exercise the code (smoke runs); the numbers are then not ceilings."""
    cuda = device.type == "cuda"
    out = {"tiny": tiny}
    nbytes = (1 << 30) if cuda else ((128 << 20) if quick else (256 << 20))
    if tiny:
        nbytes = 16 << 20
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    runs = [2 * nbytes / dt for dt in _run_times(lambda: dst.copy_(src), device, 8 if cuda else (4 if quick else 6))]
    out["copy_Bps"] = max(runs)  # a ceiling: the best run (the median is in copy_Bps_median)
    out["copy_Bps_median"] = statistics.median(runs)
    out["copy_bytes"] = nbytes
    del src, dst

    # The compute ceiling: the best rate of the operation classes the cases use -- float32 GEMMs and convolutions of
    # a few large shapes, through the vendor libraries (MKL / oneDNN on the CPU, cuBLAS / cuDNN on CUDA) -- so that
    # no case can legitimately exceed it (a single 2048^3 matmul was beaten by oneDNN's convolutions on the CPU).
    n = 8192 if cuda else 2048
    if tiny:
        n = 256
    shapes = [("gemm", (n, n, n)), ("gemm", (n // 2, 4 * n, n // 2))]
    conv_n = 256 if cuda else 64
    shapes += [("conv", (conv_n, 128, 28, 256)), ("conv", (conv_n, 64, 56, 128))] if not tiny else \
        [("conv", (4, 8, 8, 8))]
    best = {}
    for kind, dims in shapes:
        if kind == "gemm":
            m, k, nn_ = dims
            a, b = torch.randn(m, k, device=device), torch.randn(k, nn_, device=device)
            fn, flops = (lambda: torch.mm(a, b)), 2.0 * m * k * nn_
        else:
            bn, cin, hw, cout = dims
            x = torch.randn(bn, cin, hw, hw, device=device).contiguous(memory_format=torch.channels_last)
            w = torch.randn(cout, cin, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
            fn, flops = (lambda: torch.nn.functional.conv2d(x, w, padding=1)), 2.0 * bn * cout * hw * hw * cin * 9
        runs = [flops / dt for dt in _run_times(fn, device, 5 if cuda else (3 if quick else 5))]
        best[f"{kind} {'x'.join(map(str, dims))}"] = max(runs)
    which = max(best, key=best.get)
    out["compute_flops"] = best[which]
    out["compute_flops_of"] = which
    out["compute_rates"] = best
    out["gemm_flops"] = max(v for k, v in best.items() if k.startswith("gemm"))
    out["gemm_n"] = n
    out["gemm_dtype"] = "float32"
    if cuda:
        out["gemm_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        out["conv_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    return out
