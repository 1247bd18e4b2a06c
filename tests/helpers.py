"""Test helpers shared by the op suite and the benchmarks (which import their baselines from here)."""
from __future__ import annotations

import contextlib

import torch

import fastgan

# Relative error allowed against a float64 reference, per dtype (GUIDE §3).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
# float32 products on TF32 tensor cores: inputs keep 10 mantissa bits (as float16), sums stay float32.
TOL_TF32 = 4e-3


@contextlib.contextmanager
def tf32(enabled: bool):
    """torch's TF32 flags for matmuls and convolutions, which fastgan's CUDA kernels follow (legacy setters, as
    the bench uses: torch refuses to read the legacy flags once the new fp32_precision API has set them)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded as cvt.rna.tf32.f32 does (10 mantissa bits, ties away from zero; finite inputs)."""
    u = t.detach().float().contiguous().view(torch.int32)
    return ((u + 0x1000) & ~0x1FFF).view(torch.float32)


def rel_err(out: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """max |out - ref| / max |ref| in float64; NaN or inf anywhere in ``out`` gives inf (never passes).

    ``scale`` (same shape, >= |ref|) replaces |ref| in the denominator: for a reduction it is the sum of the
    magnitudes of the terms, the quantity a rounded summation's error is proportional to. Without it, a sum that
    cancels (random-sign gradients summed over a few elements) is judged against its small result and fails for
    half precision even when every term is rounded correctly."""
    out = out.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if out.numel() == 0:
        return 0.0
    if not torch.isfinite(out).all() and not torch.equal(torch.isfinite(out), torch.isfinite(ref)):
        return float("inf")
    fin = torch.isfinite(ref)
    if not torch.equal(out[~fin], ref[~fin]):
        return float("inf")
    diff = (out[fin] - ref[fin]).abs().max().item() if fin.any() else 0.0
    mag = ref.abs() if scale is None else torch.maximum(scale.detach().to(torch.float64).cpu().abs(), ref.abs())
    scale = mag[fin].max().item() if fin.any() else 0.0
    # Floor the scale at 1e-6: a reference that is all but zero (e.g. a BCE loss of 1e-13 after float32
    # cancellation, as torch's own float32 op gives too) is judged by absolute error at that scale.
    return diff / max(scale, 1e-6)


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "", factor: float = 1.0,
                 scale: torch.Tensor | None = None):
    err = rel_err(out, ref, scale)
    assert err <= TOL[dtype] * factor, f"{what}: relative error {err:.3g} > {TOL[dtype] * factor:.3g} ({dtype})"


def reference(fn, *args, **kwargs):
    """Run ``fn`` on the pure-PyTorch reference path."""
    with fastgan.use_impl("torch"):
        return fn(*args, **kwargs)
