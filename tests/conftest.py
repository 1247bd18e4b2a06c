"""Shared fixtures: the implementation matrix every op test runs over.

``impl`` is one of ``torch`` (the pure-PyTorch reference itself, checked against float64), ``native`` on CPU
tensors (C++), ``emu`` (the CUDA kernel sources under CPU emulation) and ``native`` on CUDA tensors (skipped
without a GPU). Unavailable ones are skipped with the reason, never silently dropped.
"""
from __future__ import annotations

import os

import pytest
import torch

import fastgan
from fastgan import _ext, _impl

# Under pytest-xdist (the README's `-n auto`) each worker is a process with torch's default of one thread per core:
# share the cores out instead of oversubscribing them, unless the caller chose (OMP_NUM_THREADS).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

IMPLS = [("torch", "cpu"), ("native", "cpu"), ("emu", "cpu"), ("native", "cuda")]


def pytest_report_header(config):
    """What is under test: the loaded _C (and whether the tree's sources are the ones it was built from)."""
    if _ext.C is None:
        return f"fastgan._C: not loaded ({_ext.load_error}); only the torch implementation runs"
    info = _ext.build_info()
    stale = _ext.stale_reason()
    return (f"fastgan._C: {_ext.C.__file__} (torch {info['torch_version']}, cuda {info['with_cuda']}, "
            f"emu {info['with_emu']}, sources {info.get('source_digest') or '?'})"
            + (f"\nWARNING: {stale}" if stale else ""))


def impl_id(p):
    name, dev = p
    return f"{name}-{dev}" if name == "native" else name


@pytest.fixture(params=IMPLS, ids=impl_id)
def impl(request):
    name, dev = request.param
    if name not in fastgan.available_impls():
        pytest.skip(f"impl {name!r} unavailable: {_impl.unavailable_reason(name)}")
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if dev == "cuda" and not _ext.has_cuda():
        pytest.skip("fastgan._C built without CUDA kernels")
    with fastgan.use_impl(name):
        yield name, torch.device(dev)


@pytest.fixture(autouse=True)
def _seed(request):
    """Fresh random inputs per test, but reproducible: the seed is derived from the test's id, so a failure
    seen in CI can be rerun exactly (FASTGAN_TEST_SEED shifts every seed to explore other inputs)."""
    import zlib
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()) + int(__import__("os").environ.get("FASTGAN_TEST_SEED", 0)))


@pytest.fixture(autouse=True)
def _fp32_exact():
    """float32 tests are exact float32 unless they ask for TF32 (helpers.tf32): torch's default lets convolutions
    use TF32, which the CUDA kernels follow (tests of that path: test_ops.py, TF32 section)."""
    from helpers import tf32
    with tf32(False):
        yield


@pytest.fixture(autouse=True)
def _cudnn_settings():
    """cuDNN's algorithm choice as each test left it (the trainer turns on cudnn.benchmark for its process): tests
    that take stock cuDNN as their oracle do not depend on which tests ran before them on the worker."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


@pytest.fixture(autouse=True)
def _poison_outputs():
    """Outputs allocated by the compiled ops are filled with NaN before the kernels run, so an element a
    kernel forgets to write fails the comparison."""
    if _ext.C is not None:
        _ext.C.set_poison(True)
        yield
        _ext.C.set_poison(False)
    else:
        yield
