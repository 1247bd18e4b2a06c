"""Smoke test of the benchmark suite, for CI (timing disabled): every case of ``fastgan bench`` at the seed
shapes runs once through the command line and once through the pytest-benchmark suite in ``benchmarks/``,
each variant's result is compared with the stock baseline, and the outputs (JSON, Markdown, PNG) are written.
Kept well under a minute on 2 cores: no torch.compile (minutes of C++ compilation on a CPU) and no large shapes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastgan
from fastgan.bench import cases as bench_cases
from fastgan.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
NATIVE = "native" in fastgan.available_impls()
THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    torch.set_num_threads(THREADS)


def test_counted_flops_match_torch_flop_counter():
    """The FLOPs each dense/conv case reports are what torch's FlopCounterMode counts for the baseline."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.set_num_threads(1)  # restored by the fixture below; the counts do not depend on it
    cases = [c for c in bench_cases.build_cases(CPU, ("seed",)) if c.family in ("dense", "conv2d", "step")]
    assert {c.family for c in cases} == {"dense", "conv2d", "step"}
    steps = {c.mode: c for c in cases if c.family == "step"}
    assert set(steps) == {"train", "train-r1"}
    assert 4e9 < steps["train"].flops < 6e9, steps["train"].flops  # GUIDE §5: about 5 GFLOP per step
    # R1 adds D's input gradient (its graph kept) and that graph's backward: more work, less than double
    assert steps["train"].flops < steps["train-r1"].flops < 2 * steps["train"].flops, steps["train-r1"].flops
    assert steps["train-r1"].bytes > steps["train"].bytes > 0
    for case in cases:
        if case.family == "step":
            continue
        runner = case.make("eager", CPU)
        with FlopCounterMode(display=False) as fc, fastgan.use_impl(runner.impl):
            runner.step()
        assert fc.get_total_flops() == case.flops, case.name


def test_case_selection_and_variants():
    cases = bench_cases.build_cases(CPU, ("seed", "large"))
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    assert names[:2] == ["step/gan-b128/train", "step/gan-b128/train-r1"]
    assert {c.name for c in bench_cases.select_cases(cases, "conv2d/*/fwd")} == {
        n for n in names if n.startswith("conv2d/") and n.endswith("/fwd")}
    assert [c.name for c in bench_cases.select_cases(cases, "step")] == names[:2]
    assert [c.name for c in bench_cases.select_cases(cases, "step/*/train")] == names[:1]
    # in the order of the first pattern each case matches (a time budget then cuts the last ones), each case once
    large = [n for n in names if "/large/" in n]
    ordered = [c.name for c in bench_cases.select_cases(cases, "step,*/large/*,*")]
    assert ordered == names[:2] + large + [n for n in names[2:] if n not in large]
    for c in cases:
        v = bench_cases.default_variants(c, CPU, quick=True)
        assert v[:2] == ["fastgan", "eager"] and not any(x.startswith("compile") or "graph" in x for x in v)
        assert ("stock" in v) == (c.family != "step")
        # torch.compile does not take double backward through a compiled module: no compile variant for R1
        assert ("compile" in bench_cases.default_variants(c, CPU, quick=False)) == (c.mode != "train-r1")
        # the forced-routing variants are CUDA-only and only for the products
        cuda = bench_cases.default_variants(c, torch.device("cuda"), quick=True)
        assert ("fastgan-kernels" in cuda and "fastgan-aten" in cuda) == (c.family in ("dense", "conv2d"))
        assert "fastgan-kernels" not in v


@pytest.mark.skipif(not NATIVE, reason="needs fastgan._C")
def test_routed_variants_force_the_cuda_route_per_call():
    """fastgan-kernels / fastgan-aten set the CUDA routing for the duration of each call (the backward included:
    the setting is process-wide, so autograd's device thread sees it) and restore it, also after an error."""
    before = fastgan._ext.C.cuda_gemm_route()  # FASTGAN_CUDA_GEMM may set it
    seen = []
    f = bench_cases._routed(lambda: seen.append(fastgan._ext.C.cuda_gemm_route()), "kernels")
    with fastgan.cuda_gemm_route("aten"):
        f()
        assert seen == ["kernels"] and fastgan._ext.C.cuda_gemm_route() == "aten"

        def boom():
            raise RuntimeError("boom")
        with pytest.raises(RuntimeError, match="boom"):
            bench_cases._routed(boom, "kernels")()
        assert fastgan._ext.C.cuda_gemm_route() == "aten"
    assert fastgan._ext.C.cuda_gemm_route() == before
    # and a routed variant runs the same case on the same inputs as the plain one (on the CPU the route itself has
    # no effect, so this checks the variant's wiring; on CUDA `fastgan bench` compares every variant with stock)
    case = bench_cases.select_cases(bench_cases.build_cases(CPU, ("seed",), step=False), "dense/G.fc1/fwdbwd")[0]
    plain, routed = (bench_cases.make_runner(case, v, CPU) for v in ("fastgan", "fastgan-kernels"))
    with fastgan.use_impl("native"):
        for a, b in zip(plain.check(), routed.check()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fastgan_bench_smoke_every_case(tmp_path, capsys):
    """`fastgan bench --smoke`: every seed-shape case once in every CPU variant but torch.compile."""
    # one thread: a smoke test need not exercise the thread pool, and 2 threads on a loaded 2-core CI machine
    # spend milliseconds per op in OpenMP barriers
    rc = cli_main(["bench", "--device", "cpu", "--quick", "--smoke", "--threads", "1", "--out", str(tmp_path)])
    assert torch.get_num_threads() == THREADS  # restored
    printed = capsys.readouterr().out
    assert rc == 0, printed
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.md").read_text().startswith("# fastgan bench")
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert doc["mode"] == "smoke" and doc["env"]["torch"] == torch.__version__
    want = {c.name for c in bench_cases.build_cases(CPU, ("seed",))}
    assert {c["name"] for c in doc["cases"]} == want
    for c in doc["cases"]:
        by = {r["variant"]: r for r in c["results"]}
        assert by["eager"]["status"] == "ok", (c["name"], by["eager"])
        if NATIVE:
            r = by["fastgan"]
            assert r["status"] == "ok", (c["name"], r)
            assert r["check_rel_err"] <= bench_cases.CHECK_TOL["cpu"], (c["name"], r["check_rel_err"])
            assert r["ratio_vs_stock"] > 0 and r["median_s"] > 0
            assert r["baseline"] == ("eager" if c["family"] == "step" else "stock")
        for r in c["results"]:  # a fraction of a ceiling is never above 100% (smoke runs give none at all)
            assert r.get("pct_ceiling") is None or 0 < r["pct_ceiling"] <= 100
        assert c["floor_s"] > 0 and c["bound"] in ("compute", "memory")
        assert c["name"] in printed


def test_no_row_exceeds_its_ceiling():
    """A rate measured above the probes' ceilings (a memory-bound case served from cache, a convolution faster than
    the probe shapes) becomes the ceiling: every fraction is at most 100% and says which row set it."""
    from fastgan.bench.cli import _derive, settle_ceilings
    peaks = {"tiny": False, "copy_Bps": 20e9, "compute_flops": 100e9, "compute_flops_of": "gemm 2048",
             "gemm_flops": 100e9, "copy_at_bytes": {"1000000": 40e9}}

    def case(name, flops, nbytes, times):
        return {"name": name, "family": "conv2d", "flops": flops, "bytes": nbytes,
                "results": [{"variant": v, "median_s": t} for v, t in times.items()]}
    conv = case("conv", 1e9, 1e6, {"stock": 1e-2, "fastgan": 8e-3})   # 100 / 125 GFLOP/s
    mem = case("bias_act", 0.0, 1e6, {"stock": 2e-5, "fastgan": 2.5e-5})  # 50 / 40 GB/s, a 1 MB footprint
    small = case("other", 0.0, 1e9, {"stock": 0.1, "fastgan": 0.08})     # 10 / 12.5 GB/s: under the copy
    doc = {"peaks": peaks, "cases": [conv, mem, small]}
    for c in doc["cases"]:
        _derive(c, peaks)
    assert any(r["above_ceiling"] for r in conv["results"] + mem["results"])
    settle_ceilings(doc)
    for c in doc["cases"]:
        for r in c["results"]:
            assert not r["above_ceiling"] and 0 < r["pct_ceiling"] <= 100, (c["name"], r)
    assert peaks["compute_flops"] == pytest.approx(125e9) and "conv (fastgan)" in peaks["compute_flops_of"]
    assert mem["ceiling"] == pytest.approx(50e9) and "best row" in mem["ceiling_of"]
    assert small["ceiling"] == pytest.approx(20e9) and small["ceiling_of"] == "copy bandwidth"
    assert {r["variant"]: round(r["pct_ceiling"]) for r in small["results"]} == {"stock": 50, "fastgan": 62}


@pytest.mark.skipif(importlib.util.find_spec("pytest_benchmark") is None, reason="pytest-benchmark not installed")
@pytest.mark.skipif(not (ROOT / "benchmarks" / "test_bench.py").exists(), reason="no source tree (benchmarks/)")
def test_pytest_benchmark_suite_runs_with_timing_disabled():
    """`python -m pytest benchmarks --benchmark-disable`: the pytest-benchmark suite, each case once."""
    env = dict(os.environ, FASTGAN_BENCH_DEVICE="cpu", FASTGAN_BENCH_SIZES="seed", OMP_NUM_THREADS="1")
    env.pop("FASTGAN_BENCH_COMPILE", None)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                        str(ROOT / "benchmarks")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and " failed" not in p.stdout


@pytest.mark.skipif(not NATIVE, reason="needs fastgan._C")
def test_caching_cpu_allocator_option(tmp_path):
    """`--cpu-allocator caching` (own processes: it is installed process-wide for good): freed blocks come back
    last in first out per size, the values are unaffected, and the run records which allocator it measured with."""
    code = (
        "import sys, torch, fastgan; assert 'fastgan.bench._allocator' not in sys.modules  # opt-in only\n"
        "from fastgan.bench import _allocator as C\n"
        "assert not C.caching_cpu_allocator_active()\n"
        "C.use_caching_cpu_allocator(); C.use_caching_cpu_allocator()  # idempotent\n"
        "assert C.caching_cpu_allocator_active()\n"
        "ts = [torch.full((65536,), float(i)) for i in range(3)]\n"
        "ptrs = [t.data_ptr() for t in ts]\n"
        "for i in range(3): ts[i] = None  # freed in the order 0, 1, 2\n"
        "again = [torch.empty(65536) for _ in range(3)]\n"
        "assert [t.data_ptr() for t in again] == ptrs[::-1], 'not last in first out'\n"
        "x = torch.randn(300, 70, dtype=torch.float64); torch.testing.assert_close(x @ x.T, torch.einsum('ik,jk->ij', x, x))\n"
        "y = torch.arange(10.0).reshape(2, 5).t().contiguous(); assert y[3, 1].item() == 8.0\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    out = tmp_path / "b"
    r = subprocess.run([sys.executable, "-m", "fastgan", "bench", "--device", "cpu", "--smoke", "--cases",
                        "dense/D.fc,bce", "--cpu-allocator", "caching", "--no-plot", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((out / "bench.json").read_text())
    assert doc["env"]["cpu_allocator"].startswith("caching")
    assert "CPU allocator: caching" in r.stdout
    assert all(res.get("status") == "ok" for c in doc["cases"] for res in c["results"])


@pytest.mark.skipif(not (ROOT / "benchmarks" / "latency_probe.py").exists(), reason="no source tree (benchmarks/)")
def test_latency_probe_plumbing(tmp_path, capsys):
    """benchmarks/latency_probe.py (the GPU check's probe stage) on the CPU: its line fit, every measurement it
    prints and the JSON it writes (the numbers are the CPU's: only their presence and sanity are checked)."""
    spec = importlib.util.spec_from_file_location("latency_probe", ROOT / "benchmarks" / "latency_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    a, b = probe.fit_line([1, 2, 4, 8], [1.5 + 0.25 * n for n in (1, 2, 4, 8)])
    assert a == pytest.approx(1.5) and b == pytest.approx(0.25)
    assert probe.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "latency_probe.json").read_text())
    chains = res["chains"]
    assert set(chains["graph_us"]) == set(chains["eager_us"]) == {"fastgan bias_act", "ATen add"}
    assert all(0 < v < 1e6 for v in [*chains["graph_us"].values(), *chains["eager_us"].values()])
    assert set(res["ktile"]) == {f"{p}, {w}" for p in ("float32", "tf32", "bfloat16")
                                 for w in ("one tile", "full wave")}
    for key, r in res["ktile"].items():
        assert [n for n, _ in r["points_us"]] == list(probe.KTILES[:3]) and all(t > 0 for _, t in r["points_us"])
        assert f"== GEMM k-loop, {key} " in out
    assert "predicted" not in out  # the GPU's predictions are not printed beside CPU numbers


def test_settling_the_ceilings_is_idempotent():
    """One settle leaves nothing for a second to change, also where raising the compute ceiling turns a
    compute-bound case memory-bound (each per-case write settles once; a run cut short keeps that write)."""
    from fastgan.bench.cli import _derive, settle_ceilings
    peaks = {"tiny": False, "copy_Bps": 20e9, "compute_flops": 100e9, "compute_flops_of": "gemm 2048",
             "gemm_flops": 100e9}
    fast = {"name": "fast", "family": "dense", "flops": 1e10, "bytes": 1e3,
            "results": [{"variant": "fastgan", "median_s": 1e-2}]}                    # 1 TFLOP/s: the new ceiling
    flip = {"name": "flip", "family": "dense", "flops": 1e9, "bytes": 1e8,
            "results": [{"variant": "fastgan", "median_s": 2e-3}]}                    # then memory-bound, 50 GB/s
    doc = {"peaks": peaks, "cases": [fast, flip]}
    for c in doc["cases"]:
        _derive(c, peaks)
    assert flip["bound"] == "compute"
    settle_ceilings(doc)
    once = json.dumps(doc, sort_keys=True)
    settle_ceilings(doc)
    assert json.dumps(doc, sort_keys=True) == once
    assert flip["bound"] == "memory" and not flip["results"][0]["above_ceiling"]


def test_graph_rows_are_measured_against_stock_in_a_graph(tmp_path):
    """A step in a CUDA graph is compared with stock's step in a CUDA graph (the graph's own gain is not fastgan's);
    bench.json stays strict JSON when a check's error is infinite (a non-finite output)."""
    from fastgan.bench.cli import _derive, environment, write_outputs
    peaks = {"tiny": False, "copy_Bps": 20e9, "compute_flops": 100e9, "gemm_flops": 100e9}
    times = {"fastgan": 4e-4, "eager": 8e-4, "fastgan+graph": 1e-4, "eager+graph": 3e-4}
    case = {"name": "step/seed", "family": "step", "desc": "a training step", "flops": 1e9, "bytes": 1e6,
            "results": [{"variant": v, "median_s": t} for v, t in times.items()]}
    _derive(case, peaks)
    by = {r["variant"]: r for r in case["results"]}
    assert by["fastgan"]["baseline"] == "eager" and by["fastgan"]["ratio_vs_stock"] == pytest.approx(2.0)
    assert by["fastgan+graph"]["baseline"] == "eager+graph"
    assert by["fastgan+graph"]["ratio_vs_stock"] == pytest.approx(3.0)
    by["fastgan"]["check_rel_err"] = float("inf")
    write_outputs({"peaks": peaks, "cases": [case], "env": environment(CPU), "mode": "quick", "notes": [],
                   "variants_legend": {}}, tmp_path, plot=False)
    text = (tmp_path / "bench.json").read_text()
    assert "Infinity" not in text and json.loads(text)["cases"][0]["results"][0]["check_rel_err"] is None


def test_bench_arguments_are_checked_before_measuring(tmp_path, capsys):
    for argv in (["--threads", "-1"], ["--time-budget", "nan"], ["--time-budget", "-5"]):
        with pytest.raises(SystemExit) as e:
            cli_main(["bench", *argv])
        assert e.value.code == 2 and argv[0] in capsys.readouterr().err
    assert cli_main(["bench", "--device", "cpu", "--list", "--cases", "zzz"]) == 2
    assert "--cases 'zzz' matches no case" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli_main(["bench", "--device", "cpu", "--smoke", "--out", str(tmp_path / "file"), "--cases", "step"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "file").read_text() == "x"
    # variants that no selected case has: an error, not an empty table
    assert cli_main(["bench", "--device", "cpu", "--smoke", "--cases", "step", "--variants", "stock",
                     "--out", str(tmp_path / "none")]) == 2
    assert "no selected case supports them" in capsys.readouterr().err
    assert not (tmp_path / "none" / "bench.json").exists()
    if not torch.cuda.is_available():  # --device cuda without a GPU: refused before --out is made
        assert cli_main(["bench", "--device", "cuda", "--out", str(tmp_path / "cuda")]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err and not (tmp_path / "cuda").exists()
