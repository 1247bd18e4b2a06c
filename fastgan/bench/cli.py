"""``fastgan bench``: fastgan's fused ops and training step against stock PyTorch, on this machine.

    fastgan bench [--device cpu|cuda] [--quick] [--out DIR] [--cases PATTERN] [--variants LIST]

Runs every case of :mod:`fastgan.bench.cases` (each op's forward and forward + backward at the seed GAN's
shapes and at large shapes, and the whole training step) in every variant (fastgan, the stock eager
baseline, torch.compile modes, CUDA-graph capture), as :mod:`fastgan.bench.timing` describes: warm-up,
interleaved blocks, CUDA events on a GPU, rotating input sets larger than the last-level cache, median and
quartiles, peak memory. Each result also reads as GB/s or FLOP/s and as a fraction of the machine's copy
bandwidth or float32 GEMM rate, both measured at the start of the run.

Writes ``DIR/bench.json`` (everything), ``DIR/bench.md`` (the tables, ready for a README) and ``DIR/bench.png``
(speed-ups over stock eager), and prints the table. The Python API is :func:`run_suite`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

from ..train.cli import _float_pos, _int_ge  # the command line's shared argument types

__all__ = ["add_parser", "run_suite", "format_table", "write_outputs", "SCHEMA"]

SCHEMA = 1

# per setting: warm-up (min iterations, min seconds), interleaved blocks, seconds per block,
# rotating input sets: footprint target (multiples of the last-level cache) and caps
_SETTINGS = {
    ("cpu", "quick"): dict(warm_iters=3, warm_s=0.05, repeats=7, block_s=0.02, cache_mult=1, max_sets=256,
                           max_set_bytes=128 << 20),
    ("cpu", "full"): dict(warm_iters=5, warm_s=0.2, repeats=15, block_s=0.05, cache_mult=2, max_sets=1024,
                          max_set_bytes=256 << 20),
    ("cuda", "quick"): dict(warm_iters=10, warm_s=0.05, repeats=15, block_s=0.003, cache_mult=2, max_sets=1024,
                            max_set_bytes=2 << 30),
    ("cuda", "full"): dict(warm_iters=20, warm_s=0.2, repeats=30, block_s=0.01, cache_mult=3, max_sets=2048,
                           max_set_bytes=4 << 30),
}
_SMOKE = dict(warm_iters=0, warm_s=0.0, repeats=1, block_s=0.0, cache_mult=0, max_sets=1, max_set_bytes=0)

_VARIANT_HELP = {
    "fastgan": "fastgan fused ops (use_impl('native')); step: --layers fused",
    "fastgan-kernels": "dense/conv2d on CUDA: fastgan with every product on its own kernels "
                       "(fastgan.cuda_gemm_route('kernels'))",
    "fastgan-aten": "dense/conv2d on CUDA: fastgan with every product on cuBLAS/cuDNN + the fused epilogue pass "
                    "(cuda_gemm_route('aten')); with fastgan-kernels, both sides of the size-based routing",
    "eager": "step: the stock baseline, --layers stock (torch.nn layers, separate activations, "
             "nn.BCEWithLogitsLoss); ops: fastgan's pure-PyTorch reference path (use_impl('torch')), an extra",
    "eager-ref": "step: fused layers on the pure-PyTorch reference path (use_impl('torch'))",
    "eager-nchw": "step, CPU: eager with D in NCHW (the trainer keeps D channels_last on the CPU)",
    "stock": "ops: the stock baseline, the idiomatic torch.nn.functional composition (F.linear/F.conv2d + "
             "F.leaky_relu/torch.sigmoid; F.binary_cross_entropy_with_logits on a full_like target)",
    "bare": "dense/conv forward without the activation: F.linear / F.conv2d with bias (lower bound)",
    "compile": "torch.compile(mode='default') of the eager baseline",
    "compile-ro": "torch.compile(mode='reduce-overhead') of the eager baseline (CUDA graphs via inductor)",
    "compile-ma": "torch.compile(mode='max-autotune') of the eager baseline",
    "eager+graph": "step: the stock eager step (fused capturable Adam) captured in one CUDA graph",
    "fastgan+graph": "step: the fastgan step captured in one CUDA graph",
}


# ------------------------------------------------------------------------------------------------ helpers
def _fmt_time(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "n/a"
    b = float(b)
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(b) >= div:
            return f"{b / div:.3g} {unit}"
    return f"{b:.0f} B"


def _fmt_rate(rate: Optional[float], unit: str) -> str:
    if rate is None:
        return "-"
    if unit == "B/s":
        return f"{rate / 1e9:.3g} GB/s"
    if rate >= 1e12:
        return f"{rate / 1e12:.3g} TFLOP/s"
    return f"{rate / 1e9:.3g} GFLOP/s"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_rev() -> Optional[str]:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _allocator_active() -> bool:
    """Whether `--cpu-allocator caching` installed the caching allocator in this process (the module is only
    imported by that option)."""
    mod = sys.modules.get(__package__ + "._allocator")
    return mod is not None and mod.caching_cpu_allocator_active()


def environment(device) -> dict:
    import torch
    from .. import __version__, _ext
    cuda = device.type == "cuda"
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "fastgan": __version__, "git": _git_rev(), "fastgan_C": _ext.build_info() or None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "loadavg_start": _loadavg(),
        "cpu_allocator": ("caching (fastgan.bench._allocator: freed blocks reused per size, last in first out)"
                          if _allocator_active()
                          else "default (torch's CPU allocator: the C library's malloc)"),
    }
    if cuda:
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=torch.cuda.get_device_name(device), capability=f"sm_{p.major}{p.minor}",
                   sms=p.multi_processor_count, gpu_memory_bytes=p.total_memory,
                   l2_bytes=getattr(p, "L2_cache_size", None), cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    return env


def _short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


# -------------------------------------------------------------------------------------------- the suite
def _n_sets(case, device, st) -> int:
    from .cases import cache_bytes
    if st["max_sets"] <= 1 or not case.set_bytes:
        return 1
    want = st["cache_mult"] * cache_bytes(device)
    n = math.ceil(want / case.set_bytes)
    n = min(n, st["max_sets"], max(1, st["max_set_bytes"] // case.set_bytes))
    return max(1, n)


def stock_baseline(family: str) -> str:
    """The variant every speed-up a user sees is measured against: the idiomatic stock composition (``stock``:
    torch.nn.functional calls) for the ops, the stock torch.nn model (``eager``) for the training step."""
    from .cases import BASELINE
    return BASELINE if family == "step" else "stock"


def _derive(case_res: dict, peaks: dict) -> None:
    """Ratios against stock torch, rates, and fractions of the measured ceilings (never above 100%: a rate above
    its ceiling means the ceiling does not hold for that row, e.g. a memory-bound case served from cache, and no
    fraction is given)."""
    from .cases import BASELINE
    flops, nbytes = case_res["flops"], case_res["bytes"]
    compute = peaks.get("compute_flops") or peaks["gemm_flops"]
    t_flop = flops / compute if flops else 0.0
    t_byte = nbytes / peaks["copy_Bps"] if nbytes else 0.0
    # memory-bound rows: the copy of the case's own byte count where it was measured (cache-resident when the case is)
    copy = max(peaks["copy_Bps"], peaks.get("copy_at_bytes", {}).get(_bytes_key(nbytes), 0.0))
    copy_of = "copy bandwidth" if copy == peaks["copy_Bps"] else f"a copy of the same {_fmt_bytes(nbytes)}"
    # a rate this run reached above the probes (the case's best row): the ceiling is that rate (settle_ceilings)
    copy_of, copy = (f"the best row of this case ({case_res['name']})", case_res["best_Bps"]) \
        if case_res.get("best_Bps", 0.0) > copy else (copy_of, copy)
    case_res["floor_flop_s"], case_res["floor_byte_s"] = t_flop, t_byte
    case_res["floor_s"] = max(t_flop, t_byte)
    case_res["bound"] = "compute" if t_flop >= t_byte else "memory"
    stock_name = stock_baseline(case_res["family"])
    case_res["baseline"] = stock_name
    stock = next((r for r in case_res["results"] if r["variant"] == stock_name and r.get("median_s")), None)
    # fastgan's own pure-PyTorch reference path (ops: the `eager` variant): a labelled extra, never a headline
    ref = None if case_res["family"] == "step" else \
        next((r for r in case_res["results"] if r["variant"] == BASELINE and r.get("median_s")), None)
    # a row in a CUDA graph is measured against stock's step in a CUDA graph where that ran: the graph's own gain
    # is not fastgan's
    stock_graph = next((r for r in case_res["results"] if r["variant"] == stock_name + "+graph" and r.get("median_s")),
                       None)
    for r in case_res["results"]:
        med = r.get("median_s")
        if not med:
            continue
        base = stock_graph if stock_graph is not None and r["variant"].endswith("+graph") else stock
        r["baseline"] = base["variant"] if base is not None else stock_name
        r["ratio_vs_stock"] = base["median_s"] / med if base else None
        r["ratio_vs_reference"] = ref["median_s"] / med if ref else None
        r["flops_per_s"] = flops / med if flops else None
        r["bytes_per_s"] = nbytes / med if nbytes else None
        if case_res["bound"] == "compute":
            r["rate"], r["rate_unit"] = r["flops_per_s"], "FLOP/s"
            r["ceiling"], r["ceiling_of"] = compute, peaks.get("compute_flops_of", "float32 GEMM")
        else:
            r["rate"], r["rate_unit"] = r["bytes_per_s"], "B/s"
            r["ceiling"], r["ceiling_of"] = copy, copy_of
        pct = 100.0 * r["rate"] / r["ceiling"] if r["rate"] and not peaks.get("tiny") else None
        r["pct_ceiling"] = pct if pct is not None and pct <= 100.0 else None
        r["above_ceiling"] = bool(pct is not None and pct > 100.0)
        r["x_floor"] = med / case_res["floor_s"] if case_res["floor_s"] else None
        case_res["ceiling"], case_res["ceiling_of"] = r["ceiling"], r["ceiling_of"]


def _bytes_key(nbytes: float) -> str:
    return str(int(nbytes))


def _memory_bound(flops: float, nbytes: float, peaks: dict) -> bool:
    compute = peaks.get("compute_flops") or peaks["gemm_flops"]
    return bool(nbytes) and nbytes / peaks["copy_Bps"] > (flops / compute if flops else 0.0)


def settle_ceilings(doc: dict) -> None:
    """Ceilings that no row exceeds: a rate measured in this run above its ceiling is what the machine can do, so
    it becomes the ceiling -- the compute ceiling for every compute-bound row (the run's best FLOP rate), the memory
    ceiling of its own case (memory-bound) -- and every case's fractions are derived again."""
    peaks = doc.get("peaks")
    if not peaks or peaks.get("tiny"):
        return
    best = (0.0, None)
    for c in doc["cases"]:
        if c.get("bound") == "compute":
            for r in c["results"]:
                if r.get("flops_per_s") and r["flops_per_s"] > best[0]:
                    best = (r["flops_per_s"], f"{c['name']} ({r['variant']})")
        if c.get("results"):  # every case's: a raised compute ceiling can make a compute-bound case memory-bound
            c["best_Bps"] = max([r["bytes_per_s"] for r in c["results"] if r.get("bytes_per_s")], default=0.0)
    if best[0] > peaks["compute_flops"]:
        peaks.setdefault("compute_flops_probes", peaks["compute_flops"])
        peaks["compute_flops"], peaks["compute_flops_of"] = best[0], "the best row of this run: " + best[1]
    for c in doc["cases"]:
        if c.get("results") and "bound" in c:
            _derive(c, peaks)


def _run_case(case, variants: List[str], device, st: dict, smoke: bool, deadline: Optional[float],
              log, bar, baseline_out=None):
    """Runs ``variants`` of ``case``; returns (the case's record, the baseline's output for later checks).
    ``baseline_out``: the baseline's output from an earlier call, when the baseline is not among ``variants``."""
    import torch
    from .. import _impl
    from . import timing as T
    from .cases import BASELINE, CHECK_TOL, COMPILE_MODES, rel_err, variant_available

    res = case.to_dict()
    res["results"] = []
    nsets = _n_sets(case, device, st)
    res["sets"] = nsets
    res["rotation_bytes"] = nsets * case.set_bytes
    results: Dict[str, dict] = {}

    def record(v, **kw):
        r = results.setdefault(v, {"variant": v})
        r.update(kw)
        return r

    shared: list = []  # one list of input sets for every variant: same values and the same addresses, so that
    # the variants' caches and pages see the same layout (own sets per variant moved the 1 MiB head's forward by
    # up to 9% between two variants making the same F.linear call)

    def build(v):
        if not shared:
            shared.extend(case.make_inputs(device, nsets))
        t0 = time.perf_counter()
        runner = case.make(v, device, nsets, inputs=shared)
        t1 = time.perf_counter()
        out = runner.check()  # the first call: compiles, captures, allocates
        T.sync(device)
        record(v, setup_s=round(t1 - t0, 4), first_call_s=round(time.perf_counter() - t1, 4), sets=runner.sets)
        return runner, out

    plain = [v for v in variants if v not in COMPILE_MODES]
    compiled = [v for v in variants if v in COMPILE_MODES]
    out = None
    runners = []
    ordered = sorted(plain, key=lambda v: v != BASELINE)  # the baseline first: the others compare with it
    for v in ordered:
        why = variant_available(v, device)
        if why:
            record(v, status="skipped", reason=why)
            bar.update(1)
            continue
        try:
            r, out = build(v)
        except Exception as e:
            record(v, status="error", reason=_short_error(e))
            log(f"  {case.name} [{v}]: {_short_error(e)}")
            bar.update(1)
            continue
        if v == BASELINE:
            baseline_out = out
        elif baseline_out is not None and v != "bare":
            record(v, check_rel_err=rel_err(out, baseline_out))
        runners.append(r)
    del out

    def finish(rs, timing):
        for r in rs:
            rec = record(r.variant, status="ok", **timing[r.variant])
            mem, how = T.peak_memory(r, device)
            rec.update(peak_mem_bytes=mem, mem_method=how)
            if r.info:
                rec["info"] = {k: v for k, v in r.info.items() if k != "graph_pool_bytes"}
            tol = CHECK_TOL.get(device.type, 1e-4)
            if rec.get("check_rel_err") is not None and not rec["check_rel_err"] <= tol:
                rec["check_failed"] = True
                log(f"  WARNING {case.name} [{r.variant}]: differs from {BASELINE} by {rec['check_rel_err']:.3g} "
                    f"(relative, tolerance {tol:g})")
            bar.update(1)

    if runners:
        try:
            for r in runners:
                if not smoke:
                    T.warm_up(r, device, st["warm_iters"], st["warm_s"])
            if smoke:
                timing = {}
                for r in runners:
                    with _impl.use_impl(r.impl):
                        t = T.time_block(r.step, 1, device)
                    timing[r.variant] = dict(T.summarize([t]), iters_per_block=1)
            else:
                timing = T.time_interleaved(runners, device, st["repeats"], st["block_s"], deadline)
            finish(runners, timing)
        except Exception as e:
            for r in runners:
                if results[r.variant].get("status") != "ok":
                    record(r.variant, status="error", reason=_short_error(e))
                    bar.update(1)
            log(f"  {case.name}: {_short_error(e)}")
            if os.environ.get("FASTGAN_BENCH_DEBUG"):
                traceback.print_exc()
    del runners

    for v in compiled:
        if deadline is not None and time.perf_counter() > deadline:
            record(v, status="skipped", reason="time budget (--time-budget) used up")
            bar.update(1)
            continue
        try:
            torch.compiler.reset()
            r, out = build(v)
            if baseline_out is not None:
                record(v, check_rel_err=rel_err(out, baseline_out))
            del out
            if smoke:
                with _impl.use_impl(r.impl):
                    timing = {v: dict(T.summarize([T.time_block(r.step, 1, device)]), iters_per_block=1)}
            else:
                T.warm_up(r, device, st["warm_iters"], st["warm_s"])
                timing = T.time_interleaved([r], device, st["repeats"], st["block_s"], deadline)
            finish([r], timing)
            del r
        except Exception as e:
            record(v, status="error", reason=_short_error(e))
            log(f"  {case.name} [{v}]: {_short_error(e)}")
            bar.update(1)
        torch.compiler.reset()

    res["results"] = [results[v] for v in variants if v in results]
    return res, baseline_out


def run_suite(device: Optional[str] = None, quick: bool = False, cases: Optional[str] = None,
              variants: Optional[str] = None, out: Optional[str] = None, smoke: bool = False,
              time_budget: Optional[float] = None, sizes=None, plot: bool = True, progress: Optional[bool] = None,
              log=None) -> dict:
    """Runs the suite and returns the results (the JSON document). With ``out``, writes bench.json, bench.md
    and bench.png there, also after every case (so an interrupted run leaves what it measured).
    ``smoke``: every case once, one iteration per variant, no warm-up and no statistics (CI)."""
    import torch
    from . import timing as T
    from .cases import build_cases, default_variants, select_cases

    t_start = time.perf_counter()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is visible to torch")
        torch.backends.cudnn.benchmark = True  # as the trainer does on CUDA
    elif device.type != "cpu":
        raise ValueError(f"--device: expected cpu or cuda, got {device}")
    deadline = t_start + time_budget if time_budget else None

    level = "quick" if quick else "full"
    st = _SMOKE if smoke else _SETTINGS[(device.type, level)]
    if sizes is None:
        sizes = ("seed",) if (quick and device.type == "cpu") else ("seed", "large")
    all_cases = build_cases(device, sizes)
    chosen = select_cases(all_cases, cases)
    if not chosen:
        raise ValueError(f"--cases {cases!r} matches no case; `fastgan bench --list` lists them")
    want = None
    if variants:
        want = [v.strip() for v in variants.split(",") if v.strip()]
        from .cases import VARIANTS
        bad = [v for v in want if v not in VARIANTS]
        if bad:
            raise ValueError(f"--variants: unknown {bad}; expected some of {list(VARIANTS)}")

    notes = []
    if quick and device.type == "cpu":
        notes.append("--quick on CPU: torch.compile variants skipped (inductor's C++ compile of every case takes "
                     "minutes on 2 cores) and large shapes skipped; run without --quick for them")
    elif quick:
        notes.append("--quick: torch.compile variants only for the training step, not for the single ops")
    if smoke:
        notes.append("--smoke: one iteration per variant, no warm-up; the times are not measurements")

    load = _loadavg()
    if device.type == "cpu" and load and load[0] > 0.75 * (os.cpu_count() or 1):
        notes.append(f"the machine is busy (load average {load[0]:.1f} on {os.cpu_count()} cores): CPU timings are "
                     "unreliable, and with several torch threads on an oversubscribed machine each parallel op can "
                     "wait milliseconds in OpenMP barriers (try --threads 1, or measure when the machine is idle)")
    doc = {"schema": SCHEMA, "env": environment(device), "mode": "smoke" if smoke else level,
           "settings": st, "notes": notes, "variants_legend": _VARIANT_HELP, "cases": []}
    log(f"fastgan bench: {device} ({doc['env'].get('gpu') or doc['env']['cpu']}), torch {doc['env']['torch']}, "
        f"{len(chosen)} cases, mode {doc['mode']}" + (f", time budget {time_budget:.0f} s" if time_budget else ""))
    for n in notes:
        log("note: " + n)

    plan = []
    for c in chosen:
        vs = default_variants(c, device, quick or smoke) if want is None else [v for v in want if c.supports(v, device)]
        if smoke and want is None:
            vs = [v for v in vs if not v.startswith("compile")]
        if vs:
            plan.append((c, vs))
    if not plan:
        raise ValueError(f"--variants {variants!r}: no selected case supports them on {device.type} (`fastgan bench "
                         "--list` gives each case's variants)")

    t0 = time.perf_counter()
    peaks = T.measure_peaks(device, quick, tiny=smoke)
    doc["peaks"] = peaks
    if not smoke:  # each memory-bound case's footprint, copied: its ceiling where a cache holds it
        sizes = {c.bytes for c in chosen if _memory_bound(c.flops, c.bytes, peaks)}
        peaks["copy_at_bytes"] = {_bytes_key(n): T.copy_rate(device, n, quick) for n in sorted(sizes)}
    log(f"ceilings: copy {peaks['copy_Bps'] / 1e9:.3g} GB/s (read + write), {_compute_label(peaks)} "
        f"{peaks['compute_flops'] / 1e9:.4g} GFLOP/s (best of {', '.join(peaks['compute_rates'])}: "
        f"{peaks['compute_flops_of']}) [{time.perf_counter() - t0:.1f} s]")

    from tqdm.auto import tqdm
    bar = tqdm(total=sum(len(vs) for _, vs in plan), unit="variant", desc="bench", dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress, file=sys.stderr)
    say = (lambda s: bar.write(s, file=sys.stderr)) if not bar.disable else log

    old_term = None
    if out and hasattr(signal, "SIGTERM"):
        def _term(signum, frame):  # `timeout` sends SIGTERM: leave what was measured
            raise SystemExit(128 + signum)
        try:
            old_term = signal.signal(signal.SIGTERM, _term)
        except ValueError:  # not the main thread
            old_term = None
    # first every case without its torch.compile variants, then those (slow to compile; under a time budget
    # they are the ones left out): the baselines' outputs are kept for the compiled variants' checks
    from .cases import COMPILE_MODES
    deferred = []
    try:
        for case, vs in plan:
            plain = [v for v in vs if v not in COMPILE_MODES]
            comp = [v for v in vs if v in COMPILE_MODES]
            if deadline is not None and time.perf_counter() > deadline:
                doc["cases"].append({**case.to_dict(), "results": [
                    {"variant": v, "status": "skipped", "reason": "time budget (--time-budget) used up"} for v in vs]})
                bar.update(len(vs))
                continue
            bar.set_postfix_str(case.name, refresh=True)
            res, base = _run_case(case, plain, device, st, smoke, deadline, say, bar)
            _derive(res, peaks)
            doc["cases"].append(res)
            if comp:
                deferred.append((res, case, comp, base))
            else:
                say(_case_line(res))
            if out:
                write_outputs(doc, out, plot=False)
        for res, case, comp, base in deferred:
            bar.set_postfix_str(case.name + " (torch.compile)", refresh=True)
            more, _ = _run_case(case, comp, device, st, smoke, deadline, say, bar, baseline_out=base)
            res["results"] += more["results"]
            _derive(res, peaks)
            say(_case_line(res))
            if out:
                write_outputs(doc, out, plot=False)
        deferred.clear()
    finally:
        bar.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        doc["env"]["loadavg_end"] = _loadavg()
        doc["elapsed_s"] = round(time.perf_counter() - t_start, 2)
        settle_ceilings(doc)
        if out:
            write_outputs(doc, out, plot=plot)
    return doc


def _case_line(res: dict) -> str:
    parts = []
    for r in res["results"]:
        if r.get("median_s"):
            sp = f" {r['ratio_vs_stock']:.2f}x vs {r['baseline']}" if r.get("ratio_vs_stock") and \
                r["variant"] != r["baseline"] else ""
            parts.append(f"{r['variant']} {_fmt_time(r['median_s'])}{sp}")
        else:
            parts.append(f"{r['variant']} {r.get('status', '?')}")
    return f"{res['name']}: " + " | ".join(parts)


# -------------------------------------------------------------------------------------------------- output
_COLUMNS = ("case", "variant", "median", "IQR", "vs stock", "baseline", "rate", "% ceiling", "peak mem",
            "vs fastgan-ref")


def _rows(doc: dict) -> List[tuple]:
    rows = []
    for c in doc["cases"]:
        for r in c["results"]:
            if r.get("status") != "ok":
                rows.append((c["name"], r["variant"], r.get("status", "?"), "", "", "", "", "",
                             (r.get("reason") or "")[:60], ""))
                continue
            med = r["median_s"]
            iqr = f"{100 * (r['p75_s'] - r['p25_s']) / med:.0f}%" if med else "-"
            ss = f"{r['ratio_vs_stock']:.2f}x" if r.get("ratio_vs_stock") else "-"
            if r.get("check_failed"):
                ss += " (!)"
            pct = f"{r['pct_ceiling']:.1f}%" if r.get("pct_ceiling") is not None else \
                ("> ceiling *" if r.get("above_ceiling") else "-")
            ref = f"{r['ratio_vs_reference']:.2f}x" if r.get("ratio_vs_reference") else "-"
            rows.append((c["name"], r["variant"], _fmt_time(med), iqr, ss, r.get("baseline", "-"),
                         _fmt_rate(r.get("rate"), r.get("rate_unit", "")), pct,
                         _fmt_bytes(r.get("peak_mem_bytes")), ref))
    return rows


def format_table(doc: dict, markdown: bool = False) -> str:
    rows = _rows(doc)
    if markdown:
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(_COLUMNS) - 2)) + "|"]
        lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(_COLUMNS, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)  # noqa: E731
                                for i, (x, w) in enumerate(zip(row, widths)))
    out, prev = [fmt(_COLUMNS), fmt(["-" * w for w in widths])], None
    for row in rows:
        if prev is not None and row[0] != prev:
            out.append("")
        out.append(fmt(row if row[0] != prev else ("",) + tuple(row[1:])))
        prev = row[0]
    return "\n".join(out)


def _compute_label(peaks: dict) -> str:
    """What the compute ceiling is: float32 through the vendor libraries, with TF32 where the run allowed it (a
    convolution's rate counts a direct convolution's FLOPs: an algorithm doing fewer, as cuDNN may choose, shows
    an effective rate, which is still what the rows are bounded by)."""
    tf32 = [k for k, key in (("matmul", "gemm_tf32"), ("cuDNN", "conv_tf32")) if peaks.get(key)]
    return "float32 compute" + (f" (TF32 allowed: {', '.join(tf32)})" if tf32 else "")


def _header(doc: dict) -> List[str]:
    e, p = doc["env"], doc.get("peaks", {})
    dev = e.get("gpu") or f"{e['cpu']}, {e['cpu_cores']} cores ({e['torch_threads']} torch threads)"
    lines = [f"date {e['date']} · device {e['device']}: {dev}",
             f"torch {e['torch']} (CUDA {e['cuda'] or 'none'}, cuDNN {e['cudnn'] or 'none'}) · python {e['python']}"
             f" · fastgan {e['fastgan']}" + (f" ({e['git']})" if e.get("git") else ""),
             f"TF32: matmul {e['tf32_matmul']}, cuDNN {e['tf32_cudnn']}; float32 matmul precision "
             f"{e['float32_matmul_precision']} · mode {doc['mode']} · load average "
             f"{e.get('loadavg_start')} -> {e.get('loadavg_end')}",
             f"CPU allocator: {e.get('cpu_allocator', 'default')}"]
    if p:
        lines.append(f"measured ceilings: copy {p['copy_Bps'] / 1e9:.3g} GB/s (read + write, "
                     f"{_fmt_bytes(p.get('copy_bytes'))}; a memory-bound case's own: the copy of its byte count, "
                     f"in the Cases table), {_compute_label(p)} "
                     f"{p.get('compute_flops', p['gemm_flops']) / 1e9:.4g} GFLOP/s "
                     f"({p.get('compute_flops_of', 'GEMM')}; the probes: the best of the vendor GEMMs and "
                     f"convolutions measured" + (f", {p['compute_flops_probes'] / 1e9:.4g} GFLOP/s"
                                                 if p.get("compute_flops_probes") else "") + ")")
    return lines


def format_markdown(doc: dict) -> str:
    lines = ["# fastgan bench", ""] + [f"- {x}" for x in _header(doc)] + [f"- note: {n}" for n in doc["notes"]]
    lines += ["", "Median over interleaved blocks; IQR = (p75 - p25) / median; `vs stock` = the stock baseline's "
              "median / this median, at the same precision (`baseline`: `stock` = the idiomatic torch.nn.functional "
              "composition for the ops, `eager` = the stock torch.nn model for the training step, `eager+graph` = "
              "that model in a CUDA graph for the rows in a CUDA graph); rate and "
              "% ceiling against the measured ceilings (FLOP/s for compute-bound cases, GB/s for "
              "memory-bound ones: the header and the Cases table; no row exceeds its ceiling, a rate this run "
              "reached above the probes being the ceiling itself); peak mem = extra memory "
              "of one iteration; `vs fastgan-ref` (ops): against fastgan's own pure-PyTorch reference path, an "
              "extra, not a comparison with stock torch. `(!)`: the variant's result differs from the baseline "
              "beyond tolerance.", "", format_table(doc, markdown=True), "",
              "## Cases", "", "| case | what | FLOPs | min bytes | floor (FLOPs) | floor (bytes) | input sets | "
              "ceiling |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for c in doc["cases"]:
        ceil = f"{_fmt_rate(c['ceiling'], 'FLOP/s' if c.get('bound') == 'compute' else 'B/s')} " \
               f"({c['ceiling_of']})" if c.get("ceiling") else "-"
        floor_flop = _fmt_time(c.get('floor_flop_s')) if c['flops'] else '-'
        lines.append(f"| {c['name']} | {c['desc']} | {c['flops'] / 1e9:.4g} G | {_fmt_bytes(c['bytes'])} | "
                     f"{floor_flop} | {_fmt_time(c.get('floor_byte_s'))} | "
                     f"{c.get('sets', '-')} | {ceil} |")
    lines += ["", "## Variants", ""] + [f"- `{k}`: {v}" for k, v in doc["variants_legend"].items()]
    return "\n".join(lines) + "\n"


def plot_speedups(doc: dict, path) -> bool:
    """Horizontal bars: every variant's speed-up over the case's stock baseline (ops: the torch.nn.functional
    composition; step: the torch.nn model), per case (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def shown(c, r):  # not the baseline itself, nor fastgan's reference path (no stock comparison)
        return r.get("ratio_vs_stock") and r["variant"] != r.get("baseline") and \
            not (c["family"] != "step" and r["variant"] == "eager")

    cases = [c for c in doc["cases"] if any(shown(c, r) for r in c["results"])]
    if not cases:
        return False
    variants = []
    for c in cases:
        for r in c["results"]:
            if shown(c, r) and r["variant"] not in variants:
                variants.append(r["variant"])
    h = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(9, min(40.0, 1.2 + len(cases) * (0.1 + 0.1 * len(variants)))))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, v in enumerate(variants):
        ys, xs = [], []
        for i, c in enumerate(cases):
            r = next((r for r in c["results"] if r["variant"] == v and shown(c, r)), None)
            if r:
                ys.append(i + (j - (len(variants) - 1) / 2) * h)
                xs.append(r["ratio_vs_stock"])
        ax.barh(ys, xs, height=h, label=v, color=colors[j % len(colors)])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels([c["name"] for c in cases], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over stock PyTorch at equal precision (ops: torch.nn.functional; step: torch.nn "
                  "model; higher is better)", fontsize=8)
    e = doc["env"]
    ax.set_title(f"fastgan bench · {e.get('gpu') or e['cpu']} · torch {e['torch']} · {e['date'][:10]}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(doc: dict, out, plot: bool = True) -> None:
    """bench.json, bench.md (and bench.png), with the ceilings settled first: also a run cut short leaves files
    whose rows are all within their ceilings."""
    from ..train.outputs import json_safe
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settle_ceilings(doc)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(json_safe(doc), indent=1, default=str, allow_nan=False))
    tmp.replace(out / "bench.json")
    (out / "bench.md").write_text(format_markdown(doc))
    if plot:
        try:
            plot_speedups(doc, out / "bench.png")
        except Exception as e:  # the plot is a convenience; never lose the numbers over it
            print(f"fastgan bench: could not draw {out / 'bench.png'}: {_short_error(e)}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- CLI
_VARIANT_W = max(map(len, _VARIANT_HELP)) + 2  # the names column of --help's variant list


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark the fused ops and the training step against stock PyTorch",
        description=__doc__.split("\n\n")[0] + " Prints a table; writes bench.json, bench.md and bench.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="variants:\n" + "\n".join(f"  {k:<{_VARIANT_W}s}{v}" for k, v in _VARIANT_HELP.items()))
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions; no torch.compile for single ops (on CPU: none at all, and no large "
                        "shapes); under 2 minutes on 2 CPU cores")
    p.add_argument("--out", default="bench_out", help="output directory (default: %(default)s)")
    p.add_argument("--cases", default=None, metavar="PATTERN",
                   help="comma-separated globs or substrings of case names, e.g. 'step,dense/*/fwd'; cases run in "
                        "the order of the first pattern they match")
    p.add_argument("--variants", default=None, metavar="LIST",
                   help="comma-separated variants to run instead of the defaults (see below)")
    p.add_argument("--time-budget", type=_float_pos, default=None, metavar="S",
                   help="stop starting new cases / compile variants after S seconds (what was measured is kept)")
    p.add_argument("--threads", type=_int_ge(1, 1 << 16), default=None, help="torch.set_num_threads for the run")
    p.add_argument("--smoke", action="store_true", help="every case once, one iteration, no statistics (CI)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--no-plot", action="store_true", help="do not draw bench.png")
    p.add_argument("--cpu-allocator", choices=["default", "caching"], default="default",
                   help="caching: serve every CPU tensor of this run from fastgan's per-size cache (freed blocks "
                        "reused last in first out), so the C library's placement of fresh buffers -- which moves "
                        "small CPU ops by 10%% and more between runs, for every variant -- stays out of the numbers")
    p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
                   help="CUDA: allow TF32 tensor cores for matmuls and cuDNN convolutions (on) or not (off), for "
                        "stock and fastgan alike (fastgan's float32 GEMM and conv kernels take their TF32 tensor-core "
                        "tiles when allowed, full-precision FP32 tiles when not; products it routes to cuBLAS / "
                        "cuDNN follow the setting too); default: torch's settings as they are")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    import torch
    from .cases import build_cases, default_variants, select_cases
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _cmd_bench(args)
    finally:
        torch.set_num_threads(threads)


def _cmd_bench(args) -> int:
    import torch
    from .cases import build_cases, default_variants, select_cases
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if getattr(args, "tf32", "default") != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    if getattr(args, "cpu_allocator", "default") == "caching":
        try:
            from . import _allocator
        except ImportError as e:
            print(f"fastgan bench: --cpu-allocator caching needs the compiled fastgan.bench._allocator ({e}); "
                  "build fastgan with `pip install --no-build-isolation .`", file=sys.stderr)
            return 2
        _allocator.use_caching_cpu_allocator()  # process-wide, for the rest of this process
    if args.list:
        chosen = select_cases(build_cases(device), args.cases)
        if not chosen:
            print(f"fastgan bench: --cases {args.cases!r} matches no case; `fastgan bench --list` lists them",
                  file=sys.stderr)
            return 2
        for c in chosen:
            print(f"{c.name:28s} {c.desc}  [default variants: {', '.join(default_variants(c, device, args.quick))}]")
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():  # (before --out is made: nothing to leave behind)
        print("fastgan bench: --device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # before the measurements, not after them
    except OSError as e:
        print(f"fastgan bench: --out {args.out}: cannot write there ({e})", file=sys.stderr)
        return 2
    try:
        doc = run_suite(str(device), quick=args.quick, cases=args.cases, variants=args.variants, out=args.out,
                        smoke=args.smoke, time_budget=args.time_budget, plot=not args.no_plot)
    except (ValueError, RuntimeError) as e:
        print(f"fastgan bench: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the results
        print(f"fastgan bench: --out {args.out}: cannot write there ({e})", file=sys.stderr)
        return 2
    print("\n".join(_header(doc)))
    for n in doc["notes"]:
        print("note: " + n)
    print()
    print(format_table(doc))
    print("\nvs stock: the baseline's median / this row's (above 1: faster than stock at the same precision); "
          "the columns are explained in bench.md")
    print(f"{doc['elapsed_s']:.0f} s; results in {Path(args.out) / 'bench.json'}, {Path(args.out) / 'bench.md'}"
          + ("" if args.no_plot else f", {Path(args.out) / 'bench.png'}"))
    failed = [f"{c['name']} [{r['variant']}]" for c in doc["cases"] for r in c["results"] if r.get("status") == "error"]
    if failed:
        print(f"errors in {len(failed)} runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
