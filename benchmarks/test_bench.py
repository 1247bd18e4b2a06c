"""pytest-benchmark suite: the cases of ``fastgan bench`` (:mod:`fastgan.bench.cases`, the one definition)
through pytest-benchmark's timer.

    python -m pytest benchmarks                          # time every case (CPU, seed shapes)
    python -m pytest benchmarks --benchmark-disable      # each case once, a smoke test (what CI runs)
    FASTGAN_BENCH_DEVICE=cuda FASTGAN_BENCH_SIZES=seed,large FASTGAN_BENCH_COMPILE=1 python -m pytest benchmarks

Environment: ``FASTGAN_BENCH_DEVICE`` (cpu | cuda; default cpu), ``FASTGAN_BENCH_SIZES`` (seed, large; default
seed), ``FASTGAN_BENCH_COMPILE=1`` adds the torch.compile variant (slow to compile on a CPU).

pytest-benchmark times with a wall clock, so on CUDA every call is followed by a synchronisation (which adds
the launch latency to each call); ``fastgan bench`` times CUDA work with events over blocks of calls and also
reports rates, fractions of the machine's ceilings and peak memory. Baselines are the same as there: the
stock composition of :mod:`fastgan.reference` (``use_impl("torch")``), the code the op tests use.
"""
from __future__ import annotations

import os

import pytest
import torch

import fastgan
from fastgan.bench.cases import BASELINE, CHECK_TOL, build_cases, rel_err, variant_available

DEVICE = torch.device(os.environ.get("FASTGAN_BENCH_DEVICE", "cpu"))
SIZES = tuple(s.strip() for s in os.environ.get("FASTGAN_BENCH_SIZES", "seed").split(",") if s.strip())
VARIANTS = ["fastgan", BASELINE] + (["compile"] if os.environ.get("FASTGAN_BENCH_COMPILE") == "1" else [])

if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("FASTGAN_BENCH_DEVICE=cuda but no CUDA device is visible", allow_module_level=True)

CASES = build_cases(DEVICE, SIZES)
PARAMS = [pytest.param(c, v, id=f"{c.name}[{v}]") for c in CASES for v in VARIANTS if c.supports(v, DEVICE)]


@pytest.fixture(autouse=True)
def _no_poison():
    """Poisoned outputs (the op tests' NaN fill) would add a pass to every fused op; the benchmark runs without."""
    if fastgan._ext.C is not None:
        fastgan._ext.C.set_poison(False)


@pytest.mark.parametrize("case, variant", PARAMS)
def test_bench(benchmark, case, variant):
    why = variant_available(variant, DEVICE)
    if why:
        pytest.skip(why)
    runner = case.make(variant, DEVICE, sets=8 if case.set_bytes < (8 << 20) else 1)
    out = runner.check()  # first call (compiles / allocates) outside the timing, and a correctness guard
    if variant == "fastgan":
        ref = case.make(BASELINE, DEVICE, sets=1).check()
        err = rel_err(out, ref)
        assert err <= CHECK_TOL[DEVICE.type], f"{case.name}: fastgan differs from {BASELINE} by {err:.3g}"
    benchmark.group = case.name
    benchmark.extra_info.update(variant=variant, flops=case.flops, bytes=case.bytes, desc=case.desc)
    if DEVICE.type == "cuda":
        def call():
            runner.step()
            torch.cuda.synchronize()
    else:
        call = runner.step
    with fastgan.use_impl(runner.impl):
        benchmark(call)
