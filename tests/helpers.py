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


# Smallest local derivative kept in gradient checks: backward derives act' from the rounded output y (saved
# instead of x): d = 1 - y^2 (tanh) or y (1 - y) (sigmoid) carries an absolute error ~2 eps(dtype), so relative to
# the tolerance (2 x TOL) it is only meaningful above 2 eps / (2 TOL): float32 6e-8 / 4e-5 ~ 3e-3, bfloat16
# 4e-3 / 4e-2 = 0.1, float16 1e-3 / 8e-3 = 0.125. Matters when the saturated elements are the largest gradients
# (outputs of one or two elements).
DERIV_FLOOR = {torch.float64: 0.0, torch.float32: 1e-2, torch.bfloat16: 0.15, torch.float16: 0.15}


def grad_mask(z, act, kw, dtype=torch.float64, kink=1e-3):
    """1 where the derivative is stable under rounding, 0 within ``kink`` x max |z| of a relu / lrelu kink, in
    saturation or at the clamp (upstream gradients are multiplied by it; test_properties.py's docstring)."""
    scale = z.abs().max().item() if z.numel() else 1.0
    eps = kink * max(scale, 1e-30)
    keep = torch.ones_like(z, dtype=torch.bool)
    if act in ("relu", "lrelu"):
        keep &= z.abs() > eps
    if act == "sigmoid":
        s = torch.sigmoid(z)
        keep &= s * (1 - s) > DERIV_FLOOR[dtype]
    if act == "tanh":
        keep &= 1 - torch.tanh(z) ** 2 > DERIV_FLOOR[dtype]
    clamp = kw.get("clamp")
    if clamp is not None:
        import fastgan.functional as FF
        alpha = kw.get("alpha", 0.2)
        y = reference(lambda t: FF.bias_act(t, None, act=act, alpha=alpha if act == "lrelu" else None,
                                            gain=kw.get("gain", 1.0)), z)
        keep &= (y.abs() - clamp).abs() > 1e-3 * max(clamp, 1e-3)
    return keep.to(z.dtype)
