"""The op suite: every op x every available implementation against a float64 reference.

Forward and backward are compared by relative error (helpers.TOL); gradcheck / gradgradcheck run in float64;
every argument of every op is exercised so an implementation that ignores one fails.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys

import pytest
import torch

import fastgan
import fastgan.functional as FF
from fastgan import _activations, _ext
from helpers import TOL, TOL_TF32, assert_close, grad_mask, reference, rel_err, round_tf32, tf32

ACTS = list(_activations.ACTIVATIONS)  # every activation of the one table
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def rnd(*shape, dtype=torch.float32, device="cpu", scale=1.0, requires_grad=False):
    t = (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype).to(device)
    return t.requires_grad_(requires_grad)


def check_fwd_bwd(fn, inputs, dtype, what, factor=1.0, grad_factor=None, g_mask=None):
    """fn(*inputs) on the current impl vs the float64 reference: output and the gradients of every input
    (upstream gradient random, times ``g_mask`` where given: 0 where the derivative is not defined by the inputs at
    this precision)."""
    ins = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in inputs]
    out = fn(*ins)
    ref_ins = [t.detach().cpu().double().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
               for t in inputs]
    ref = reference(fn, *ref_ins)
    assert out.dtype == dtype and out.shape == ref.shape and out.device == inputs[0].device
    assert_close(out, ref, dtype, f"{what} forward", factor)
    diff_ins = [(a, b) for a, b in zip(ins, ref_ins) if isinstance(a, torch.Tensor) and a.requires_grad]
    if not diff_ins or out.numel() == 0:
        return
    g = torch.randn(out.shape, dtype=torch.float64)
    if g_mask is not None:
        g = g * g_mask.to(device=g.device, dtype=g.dtype)  # (a mask computed from the inputs' device)
    grads = torch.autograd.grad(out, [a for a, _ in diff_ins], g.to(dtype).to(out.device))
    ref_grads = torch.autograd.grad(ref, [b for _, b in diff_ins], g.to(dtype).double())
    for i, (gr, rg) in enumerate(zip(grads, ref_grads)):
        assert_close(gr, rg, dtype, f"{what} grad of input {i}", grad_factor or factor * 2)


# ----------------------------------------------------------------------------------------------------- bias_act
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_act_matches_reference(impl, act, dtype):
    _, dev = impl
    x = rnd(3, 5, 4, 2, dtype=dtype, device=dev, requires_grad=True)
    b = rnd(5, dtype=dtype, device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, b: FF.bias_act(x, b, act=act), [x, b], dtype, f"bias_act[{act}]")


@pytest.mark.parametrize("kwargs", [
    dict(dim=0), dict(dim=2), dict(dim=-1), dict(act="lrelu", alpha=0.0), dict(act="lrelu", alpha=0.37),
    dict(act="lrelu", gain=0.5), dict(act="sigmoid", gain=3.0), dict(act="tanh", clamp=0.4),
    dict(act="lrelu", clamp=0.3, gain=2.0), dict(act="relu", clamp=0.0), dict(act="linear", gain=1.7, clamp=1.0),
], ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()))
def test_bias_act_every_argument(impl, kwargs):
    _, dev = impl
    x = rnd(4, 3, 5, dtype=torch.float32, device=dev, scale=2.0, requires_grad=True)
    dim = kwargs.get("dim", 1)
    b = rnd(x.shape[dim], dtype=torch.float32, device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, b: FF.bias_act(x, b, **kwargs), [x, b], torch.float32, f"bias_act{kwargs}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced", "no_bias", "1d",
                                    "batch1", "empty", "one_channel", "large"])
def test_bias_act_layouts(impl, layout):
    _, dev = impl
    x = rnd(2, 3, 4, 5, device=dev)
    b = rnd(3, device=dev)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = rnd(2, 4, 3, 5, device=dev).transpose(1, 2)
    elif layout == "sliced":
        x = rnd(2, 6, 4, 9, device=dev)[:, ::2, :, 1:6]
    elif layout == "no_bias":
        b = None
    elif layout == "1d":
        x, b = rnd(7, device=dev), rnd(7, device=dev)
        check_fwd_bwd(lambda x, b: FF.bias_act(x, b, dim=0, act="lrelu"), [x.requires_grad_(), b.requires_grad_()],
                      torch.float32, layout)
        return
    elif layout == "batch1":
        x = rnd(1, 3, 4, 5, device=dev)
    elif layout == "empty":
        x = rnd(0, 3, 4, 5, device=dev)
    elif layout == "one_channel":
        x, b = rnd(2, 1, 4, 5, device=dev), rnd(1, device=dev)
    elif layout == "large":
        x, b = rnd(3, 37, 65, 33, device=dev), rnd(37, device=dev)  # > grid-stride / odd sizes
    x.requires_grad_()
    if b is not None:
        b.requires_grad_()
    inputs = [x, b] if b is not None else [x]
    fn = (lambda x, b: FF.bias_act(x, b, act="lrelu", gain=math.sqrt(2))) if b is not None else \
        (lambda x: FF.bias_act(x, None, act="lrelu", gain=math.sqrt(2)))
    check_fwd_bwd(fn, inputs, torch.float32, layout)
    if layout == "empty" and b is not None:  # the bias gradient of an empty batch is zero, not garbage
        y = FF.bias_act(x, b, act="lrelu")
        (gb,) = torch.autograd.grad(y.sum(), [b])
        assert torch.equal(gb, torch.zeros_like(gb))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_bias_act_misaligned_views(impl, dtype):
    """Tensors that start one element into their storage (not 16-byte aligned): the CUDA kernels take their scalar
    path (a 16-byte vector access there faults on a GPU, and the emulation fails the launch on one). Forward with a
    bias; backward through the elementwise kernel (no bias) with a misaligned upstream gradient."""
    _, dev = impl
    shape = (2, 3, 4, 5)

    def offset_view():
        return rnd(math.prod(shape) + 1, dtype=dtype, device=dev)[1:].view(shape)

    x, g, b = offset_view(), offset_view(), rnd(3, dtype=dtype, device=dev)
    assert x.data_ptr() % 16 != 0 and g.data_ptr() % 16 != 0
    for bias in (b, None):
        xr = x.detach().requires_grad_()
        y = FF.bias_act(xr, bias, act="lrelu", gain=1.5)
        (gx,) = torch.autograd.grad(y, [xr], g)
        x64 = x.detach().cpu().double().requires_grad_()
        ref = reference(lambda t: FF.bias_act(t, None if bias is None else bias.cpu().double(), act="lrelu",
                                              gain=1.5), x64)
        (gref,) = torch.autograd.grad(ref, [x64], g.cpu().double())
        assert_close(y, ref, dtype, "misaligned forward")
        assert_close(gx, gref, dtype, "misaligned backward", 2.0)


@pytest.mark.parametrize("act", ACTS)
def test_bias_act_gradcheck(impl, act):
    _, dev = impl
    x = rnd(2, 3, 4, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(3, dtype=torch.float64, device=dev, requires_grad=True)
    x.data[x.data.abs() < 1e-3] = 0.5  # keep away from the kink of relu/lrelu for finite differences
    fn = lambda x, b: FF.bias_act(x, b, act=act, gain=1.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_clamp_gradgradcheck(impl):
    _, dev = impl
    x = rnd(3, 4, dtype=torch.float64, device=dev, scale=2, requires_grad=True)
    b = rnd(4, dtype=torch.float64, device=dev, requires_grad=True)
    fn = lambda x, b: FF.bias_act(x, b, act="tanh", gain=2.0, clamp=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("op", ["bias_act", "linear", "conv2d"])
@pytest.mark.parametrize("dtype,clamp", [(torch.bfloat16, 0.7), (torch.float16, 0.1)], ids=["bfloat16", "float16"])
def test_half_clamp_rounded_down_still_stops_the_gradient(impl, op, dtype, clamp):
    """A clamp that the half type rounds down (bfloat16(0.7) = 0.6992, float16(0.1) = 0.09998): the clamped
    outputs hold the rounded value, and the backward tests |y| against that value, so every clamped output passes no
    gradient, as with stock's clamp (testing against 0.7 itself passed them all)."""
    _, dev = impl
    assert float(torch.tensor(clamp, dtype=dtype)) < clamp
    if op == "bias_act":
        fn = lambda x, b, **kw: FF.bias_act(x, b, dim=1, act="lrelu", gain=2.0, **kw)  # noqa: E731
        inputs = [rnd(4, 6, 5, dtype=dtype, device=dev, scale=clamp, requires_grad=True)]
    elif op == "linear":
        fn = lambda x, w, b, **kw: FF.linear(x, w, b, act="lrelu", gain=2.0, **kw)  # noqa: E731
        inputs = [rnd(6, 8, dtype=dtype, device=dev, scale=clamp, requires_grad=True),
                  rnd(6, 8, dtype=dtype, device=dev, scale=8 ** -0.5, requires_grad=True)]
    else:
        fn = lambda x, w, b, **kw: FF.conv2d(x, w, b, padding=1, act="lrelu", gain=2.0, **kw)  # noqa: E731
        inputs = [rnd(2, 3, 5, 5, dtype=dtype, device=dev, scale=clamp, requires_grad=True),
                  rnd(6, 3, 3, 3, dtype=dtype, device=dev, scale=27 ** -0.5, requires_grad=True)]
    inputs.append(rnd(6, dtype=dtype, device=dev, scale=clamp, requires_grad=True))
    v = reference(fn, *[t.detach().cpu().double() for t in inputs])  # the unclamped output
    clamped = v.abs() > clamp
    assert 0 < int(clamped.sum()) < v.numel()
    # (outputs within 5% of the clamp: whether they are clamped depends on the rounding of the inputs)
    check_fwd_bwd(lambda *a: fn(*a, clamp=clamp), inputs, dtype, f"{op}[clamp={clamp}]",
                  g_mask=(v.abs() - clamp).abs() > 0.05 * clamp)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_conv2d_half_adds_the_bias_before_rounding(impl, dtype):
    """A half-precision convolution's bias is added to the float32 product before it is rounded, as stock's is on
    the CPU (oneDNN): rounding the product first would lose what the bias cancels (bfloat16: 1 + 2^-9 - 1)."""
    _, dev = impl
    eps = 2.0 ** -9 if dtype == torch.bfloat16 else 2.0 ** -12
    x = torch.tensor([1.0, eps], dtype=dtype, device=dev).reshape(1, 2, 1, 1)
    w, b = torch.ones(1, 2, 1, 1, dtype=dtype, device=dev), torch.tensor([-1.0], dtype=dtype, device=dev)
    for act in ("linear", "relu"):
        assert FF.conv2d(x, w, b, act=act).item() == eps, act


def test_leaky_relu_matches_torch(impl):
    _, dev = impl
    x = rnd(4, 6, device=dev, requires_grad=True)
    for slope in (0.01, 0.2, 0.0):
        y = FF.leaky_relu(x, slope)
        assert_close(y, torch.nn.functional.leaky_relu(x.double(), slope), torch.float32, f"leaky_relu({slope})")
    # negative slopes and inplace take the stock op (same result as torch, never a different one)
    assert torch.equal(FF.leaky_relu(x, -0.5), torch.nn.functional.leaky_relu(x, -0.5))
    for slope in (math.nan, math.inf):  # and non-finite ones: NaN / -inf where x < 0, as torch
        torch.testing.assert_close(FF.leaky_relu(x, slope), torch.nn.functional.leaky_relu(x, slope), equal_nan=True)
    z = x.detach().clone()
    FF.leaky_relu(z, 0.1, inplace=True)
    assert torch.equal(z, torch.nn.functional.leaky_relu(x.detach(), 0.1))


# ------------------------------------------------------------------------------------------------------- dense
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_matches_reference(impl, act, dtype):
    _, dev = impl
    x = rnd(6, 33, dtype=dtype, device=dev, requires_grad=True)
    w = rnd(17, 33, dtype=dtype, device=dev, scale=0.2, requires_grad=True)
    b = rnd(17, dtype=dtype, device=dev, requires_grad=True)
    factor = 1.0 if dtype in (torch.float32, torch.float64) else 2.0
    check_fwd_bwd(lambda x, w, b: FF.linear(x, w, b, act=act), [x, w, b], dtype, f"linear[{act}]", factor)


@pytest.mark.parametrize("shape", [(5, 8, 1), (1, 8, 4), (0, 8, 4), (7, 1, 3), (2, 3, 4, 8, 6), (8, 16, 128)],
                         ids=["out_features=1", "batch1", "empty", "K=1", "leading_dims", "wide"])
def test_linear_shapes(impl, shape):
    _, dev = impl
    *lead, k, n = shape
    x = rnd(*lead, k, device=dev, requires_grad=True)
    w = rnd(n, k, device=dev, requires_grad=True)
    b = rnd(n, device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, w, b: FF.linear(x, w, b, act="lrelu", alpha=0.2), [x, w, b], torch.float32, str(shape))


# One output feature (a discriminator's logit head): the CPU backward computes dx and dw in one pass over x, the
# columns split between threads (csrc/ops/dense.cpp, rank1_backward_cpu). The shapes reach its row remainder (7
# rows: one sweep of four + three) and column remainder (70), several column tasks (600 x 1000), a row pitch wider
# than the row, and the unfused paths: x with a non-unit inner stride, fewer than 64 columns; and leading dims.
@pytest.mark.parametrize("case", ["rows7", "wide", "row_pitch", "inner_stride", "narrow", "leading"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_linear_one_output_feature(impl, case, dtype):
    _, dev = impl
    if case == "rows7":
        x = rnd(7, 70, dtype=dtype, device=dev)
    elif case == "wide":
        x = rnd(600, 1000, dtype=dtype, device=dev)
    elif case == "row_pitch":
        x = rnd(9, 90, dtype=dtype, device=dev)[:, 3:83]  # rows 90 apart, unit inner stride
    elif case == "inner_stride":
        x = rnd(80, 9, dtype=dtype, device=dev).t()
    elif case == "narrow":
        x = rnd(9, 33, dtype=dtype, device=dev)
    else:
        x = rnd(2, 3, 5, 70, dtype=dtype, device=dev)
    K = x.shape[-1]
    w = rnd(1, K, dtype=dtype, device=dev, scale=K ** -0.5, requires_grad=True)
    b = rnd(1, dtype=dtype, device=dev, requires_grad=True)
    # bfloat16: the bias gradient is a single sum (of bfloat16 products in the reference too), whose relative error
    # can pass the suite's usual 2x for one element
    factor = 1.0 if dtype in (torch.float32, torch.float64) else 3.0
    for act, kw in (("linear", {}), ("lrelu", dict(alpha=0.2, gain=1.4))):
        check_fwd_bwd(lambda x, w, b: FF.linear(x, w, b, act=act, **kw), [x.requires_grad_(), w, b], dtype,
                      f"linear[{case},{act}]", factor)


def test_linear_one_output_feature_threads(impl):
    """The blocked dw of a one-feature layer does not depend on the number of threads: bitwise equal results."""
    name, dev = impl
    if (name, dev.type) != ("native", "cpu"):
        pytest.skip("a property of the C++ CPU backward")
    x = rnd(600, 1000, device=dev, requires_grad=True)
    w = rnd(1, 1000, device=dev, scale=0.03, requires_grad=True)
    g = rnd(600, 1, device=dev)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(torch.autograd.grad(FF.linear(x, w, None), [x, w], g))
    finally:
        torch.set_num_threads(before)
    for dx, dw in outs[1:]:
        assert torch.equal(dx, outs[0][0]) and torch.equal(dw, outs[0][1])
    # (float64 products and sums; autograd rounds the gradients of the float32 leaves to float32)
    ref = torch.autograd.grad(torch.nn.functional.linear(x.double(), w.double()), [x, w], g.double())
    torch.testing.assert_close(outs[0][0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0][1], ref[1], rtol=1e-5, atol=1e-4)


def test_linear_one_output_feature_expanded_grad(impl):
    """y.sum().backward() hands the head's backward an expanded (stride 0) upstream gradient."""
    _, dev = impl
    x = rnd(9, 70, device=dev, requires_grad=True)
    w = rnd(1, 70, device=dev, scale=0.1, requires_grad=True)
    b = rnd(1, device=dev, requires_grad=True)
    for act in ("linear", "lrelu"):
        got = torch.autograd.grad(FF.linear(x, w, b, act=act).sum(), [x, w, b])
        xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
        want = torch.autograd.grad(reference(lambda x, w, b: FF.linear(x, w, b, act=act), xd, wd, bd).sum(),
                                   [xd, wd, bd])
        for g, r in zip(got, want):
            assert_close(g, r, torch.float32, f"linear[{act}] with y.sum() upstream")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_linear_one_output_feature_half_rounds_once(dtype):
    """A half-precision head without activation rounds its output once, as F.linear: bitwise equal."""
    x = rnd(64, 300, dtype=dtype)
    w = rnd(1, 300, dtype=dtype, scale=0.05)
    b = rnd(1, dtype=dtype)
    with fastgan.use_impl("native" if "native" in fastgan.available_impls() else "torch"):
        y = FF.linear(x, w, b)
    assert torch.equal(y, torch.nn.functional.linear(x, w, b))


def test_linear_one_output_feature_gradgrad(impl):
    _, dev = impl
    x = rnd(6, 70, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(1, 70, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(1, dtype=torch.float64, device=dev, requires_grad=True)
    for act in ("linear", "lrelu"):
        fn = lambda x, w, b: FF.linear(x, w, b, act=act)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("kwargs", [dict(), dict(act="lrelu", alpha=0.1, gain=2.0), dict(act="tanh", clamp=0.5),
                                    dict(act="sigmoid", bias=False)], ids=str)
def test_linear_every_argument(impl, kwargs):
    _, dev = impl
    kwargs = dict(kwargs)
    has_b = kwargs.pop("bias", True)
    x = rnd(3, 4, 10, device=dev, requires_grad=True).transpose(0, 1)  # non-contiguous
    w = rnd(6, 10, device=dev, requires_grad=True)
    if has_b:
        b = rnd(6, device=dev, requires_grad=True)
        check_fwd_bwd(lambda x, w, b: FF.linear(x, w, b, **kwargs), [x, w, b], torch.float32, str(kwargs))
    else:
        check_fwd_bwd(lambda x, w: FF.linear(x, w, None, **kwargs), [x, w], torch.float32, str(kwargs))


def test_linear_gradcheck(impl):
    _, dev = impl
    x = rnd(3, 5, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(4, 5, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(4, dtype=torch.float64, device=dev, requires_grad=True)
    for act in ("sigmoid", "tanh", "linear"):
        fn = lambda x, w, b: FF.linear(x, w, b, act=act, gain=1.5)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


# ------------------------------------------------------------------------------------------------------ conv2d
CONV_CASES = {
    "seed_gan": dict(x=(4, 1, 28, 28), w=(32, 1, 3, 3), stride=2, padding=1),
    "stride1_pad0": dict(x=(2, 3, 9, 7), w=(5, 3, 3, 3)),
    "dilation": dict(x=(2, 4, 11, 10), w=(6, 4, 3, 2), dilation=(2, 1), padding=(2, 1)),
    "groups": dict(x=(2, 6, 8, 8), w=(9, 2, 3, 3), groups=3, padding=1),
    "depthwise": dict(x=(2, 5, 7, 7), w=(5, 1, 3, 3), groups=5, padding=1),
    "odd_channels": dict(x=(3, 7, 6, 5), w=(13, 7, 1, 1)),
    "batch1": dict(x=(1, 3, 8, 8), w=(4, 3, 3, 3), stride=(2, 1), padding=(1, 0)),
    "empty_batch": dict(x=(0, 3, 8, 8), w=(4, 3, 3, 3), padding=1),
    "same": dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), padding="same"),
    "same_asymmetric": dict(x=(2, 3, 8, 8), w=(4, 3, 4, 4), padding="same"),
    "valid": dict(x=(2, 3, 8, 8), w=(4, 3, 3, 3), padding="valid"),
    # the input gradient of a strided convolution runs one GEMM per stride phase (csrc/ops/conv2d.cpp):
    # a 1x1 kernel with stride 2 leaves 3 of 4 phases without taps (their gradient is exactly 0); stride 3 with
    # dilation 2 (coprime: the aligned taps step by 3) and stride 2 with dilation 2 (all taps or none per phase);
    # input sizes that the stride does not divide, so the phases differ in size
    "stride_gt_kernel": dict(x=(2, 3, 7, 8), w=(4, 3, 1, 1), stride=2),
    "stride3_dilation2": dict(x=(2, 3, 13, 11), w=(5, 3, 3, 3), stride=3, dilation=2, padding=2),
    "stride2_dilation2": dict(x=(2, 3, 10, 9), w=(5, 3, 3, 2), stride=2, dilation=2, padding=(1, 2)),
    "stride_asym_groups": dict(x=(2, 4, 9, 12), w=(6, 2, 4, 3), stride=(3, 2), padding=(1, 1), groups=2),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_cases(impl, case):
    _, dev = impl
    c = dict(CONV_CASES[case])
    x = rnd(*c.pop("x"), device=dev, requires_grad=True)
    w = rnd(*c.pop("w"), device=dev, scale=0.3, requires_grad=True)
    b = rnd(w.shape[0], device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, w, b: FF.conv2d(x, w, b, **c, act="lrelu", alpha=0.2), [x, w, b], torch.float32, case)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv2d_matches_reference(impl, act, dtype):
    _, dev = impl
    x = rnd(2, 3, 10, 10, dtype=dtype, device=dev, requires_grad=True)
    w = rnd(8, 3, 3, 3, dtype=dtype, device=dev, scale=0.3, requires_grad=True)
    b = rnd(8, dtype=dtype, device=dev, requires_grad=True)
    half = dtype in (torch.bfloat16, torch.float16)
    g_mask = None
    if half and act in ("relu", "lrelu"):
        # the derivative jumps at z = 0, and a half-precision output rounds a pre-activation within ~1% of the
        # largest one to either side of it: no upstream gradient at those
        z = torch.nn.functional.conv2d(x.detach().double(), w.detach().double(), b.detach().double(), stride=2,
                                       padding=1)
        g_mask = grad_mask(z, act, {}, kink=2e-2)
    check_fwd_bwd(lambda x, w, b: FF.conv2d(x, w, b, stride=2, padding=1, act=act, gain=1.2), [x, w, b], dtype,
                  f"conv2d[{act}]", g_mask=g_mask)


@pytest.mark.parametrize("variant", ["channels_last", "unbatched", "no_bias", "clamp", "noncontiguous"])
def test_conv2d_variants(impl, variant):
    _, dev = impl
    x = rnd(2, 4, 9, 9, device=dev)
    w = rnd(6, 4, 3, 3, device=dev, scale=0.3)
    b = rnd(6, device=dev)
    kw = dict(padding=1, act="lrelu")
    if variant == "channels_last":
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    elif variant == "unbatched":
        x = x[0]
    elif variant == "no_bias":
        b = None
    elif variant == "clamp":
        kw.update(act="tanh", gain=2.0, clamp=0.8)
    elif variant == "noncontiguous":
        x = rnd(2, 9, 4, 9, device=dev).transpose(1, 2)
    x.requires_grad_()
    w.requires_grad_()
    if b is None:
        check_fwd_bwd(lambda x, w: FF.conv2d(x, w, None, **kw), [x, w], torch.float32, variant)
    else:
        check_fwd_bwd(lambda x, w, b: FF.conv2d(x, w, b.requires_grad_(), **kw), [x, w, b], torch.float32, variant)
    if variant == "channels_last":
        y = FF.conv2d(x, w, b, **kw)
        assert y.is_contiguous(memory_format=torch.channels_last), "channels_last in, channels_last out"


def test_conv2d_gradcheck(impl):
    _, dev = impl
    x = rnd(2, 2, 5, 5, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(3, 2, 3, 3, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(3, dtype=torch.float64, device=dev, requires_grad=True)
    for act in ("sigmoid", "lrelu"):
        fn = lambda x, w, b: FF.conv2d(x, w, b, stride=2, padding=1, act=act)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


# Short reductions (Cin/groups * kH * kW <= 72, 36 if channels_last; >= 8 output channels per group): on native CPU their input
# gradient comes from the direct loops of csrc/cpu/conv2d.cpp; elsewhere they are ordinary conv cases. The
# shapes cover the loops' edges: the row tiles of every register width (8/4/1 with 64-byte vectors, 6/3/1 below:
# K = 9 = 8 + 1 = 6 + 3, 12 = 8 + 4, 13 = 8 + 4 + 1 = 6 + 6 + 1, 25, 27), output pixel counts that are not a multiple
# of the vector width, padding wider than a tap reaches, stride, dilation, groups, batch 1, a strided x.
SHORT_K_CASES = {
    "seed_gan_layer1": dict(x=(3, 1, 28, 28), w=(32, 1, 3, 3), stride=2, padding=1),
    "rows_8_4": dict(x=(2, 1, 9, 11), w=(12, 1, 3, 4), padding=1),
    "rows_8_1": dict(x=(1, 1, 7, 5), w=(9, 1, 5, 5), stride=(2, 1), padding=(2, 0)),
    "rows_8_4_1": dict(x=(2, 1, 5, 17), w=(8, 1, 1, 13)),
    "kernel_5x3_dilated": dict(x=(2, 1, 13, 12), w=(8, 1, 5, 3), dilation=(2, 3), padding=(3, 2)),
    "wide_padding": dict(x=(2, 1, 3, 4), w=(16, 1, 3, 3), stride=3, padding=2),
    "groups": dict(x=(2, 2, 10, 9), w=(20, 1, 3, 3), groups=2, padding=1),
    "three_channels": dict(x=(2, 3, 12, 12), w=(16, 3, 3, 3), stride=2, padding=1),
    "noncontiguous_x": dict(x=(2, 1, 10, 10), w=(8, 1, 3, 3), padding=1, transpose=True),
    "channels_last": dict(x=(2, 3, 12, 11), w=(16, 3, 3, 3), stride=2, padding=1, channels_last="xw"),
    "channels_last_one_channel": dict(x=(3, 1, 28, 28), w=(32, 1, 3, 3), stride=2, padding=1, channels_last="xw"),
    "channels_last_groups_dilated": dict(x=(2, 4, 11, 10), w=(16, 2, 3, 3), groups=2, dilation=2, padding=2,
                                         channels_last="xw"),
    "channels_last_weight_only": dict(x=(2, 3, 9, 9), w=(8, 3, 3, 3), padding=1, channels_last="w"),
}


def _short_k_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t in channels_last when asked, as ATen reads strides: with one channel, .contiguous(channels_last) keeps the
    NCHW strides (size-1 dims are ignored), so those get the channels_last strides written out."""
    if not channels_last:
        return t
    n, c, h, w = t.shape
    return t.contiguous(memory_format=torch.channels_last).as_strided(t.shape, (h * w * c, 1, w * c, c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", list(SHORT_K_CASES))
def test_conv2d_short_reduction(impl, case, dtype):
    _, dev = impl
    c = dict(SHORT_K_CASES[case])
    x = rnd(*c.pop("x"), dtype=dtype, device=dev)
    if c.pop("transpose", False):
        x = x.transpose(2, 3).contiguous().transpose(2, 3)  # H and W strides swapped
    cl = c.pop("channels_last", "")
    x = _short_k_layout(x, "x" in cl).requires_grad_()
    w = _short_k_layout(rnd(*c.pop("w"), dtype=dtype, device=dev, scale=0.3), "w" in cl).requires_grad_()
    b = rnd(w.shape[0], dtype=dtype, device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, w, b: FF.conv2d(x, w, b, **c, act="lrelu", alpha=0.2), [x, w, b], dtype, case)
    if impl[0] != "torch":  # fastgan's input gradient is in x's layout, as its fake kernel promises (stock's is
        dx, = torch.autograd.grad(FF.conv2d(x, w, b, **c).sum(), [x])  # channels_last when w alone is)
        fmt = torch.channels_last if "x" in cl else torch.contiguous_format
        assert dx.stride() == torch.empty(x.shape, memory_format=fmt).stride()


@pytest.mark.parametrize("width", [16, 32, 64])
def test_conv2d_short_reduction_every_vector_width(width):
    """The direct loops are compiled once per register width (csrc/cpu/cpu_math.h) and a process runs the CPU's
    widest, so the others run only where FASTGAN_CPU_VECTOR_BYTES sets them: the native short-reduction tests above at
    every width, each in a process of its own. A width above the CPU's runs that loop's portable copy: its tiles,
    remainders and indexing are tested on any CPU, its ISA-specific code generation only on a CPU that has it."""
    if _ext.C is None:
        pytest.skip("fastgan._C is not built")
    if not hasattr(_ext.C, "cpu_widest_vector_bytes"):
        pytest.skip("fastgan._C predates cpu_widest_vector_bytes: rebuild it")
    code = (f"import sys, pytest, fastgan._ext as e; assert e.C.cpu_vector_bytes() == {width}; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', {__file__!r}, "
            "'-k', 'test_conv2d_short_reduction and native-cpu']))")
    env = dict(os.environ, FASTGAN_CPU_VECTOR_BYTES=str(width), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout, r.stdout[-2000:]
    if width > _ext.C.cpu_widest_vector_bytes():  # said, once, wherever the warning is shown
        assert "wider than this CPU's" in r.stdout + r.stderr, r.stdout[-2000:]


def test_conv2d_short_reduction_gradgradcheck(impl):
    _, dev = impl
    x = rnd(2, 1, 6, 5, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(9, 1, 3, 3, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(9, dtype=torch.float64, device=dev, requires_grad=True)
    fn = lambda x, w, b: FF.conv2d(x, w, b, stride=2, padding=1, act="sigmoid")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_conv2d_short_reduction_same_bits_any_thread_count(impl):
    """The direct loops never split an image across threads, so the input gradient does not depend on the thread
    count (the weight gradient is oneDNN's, which does not promise that)."""
    name, dev = impl
    if (name, dev.type) != ("native", "cpu"):
        pytest.skip("the direct CPU loops run on native CPU tensors only")
    x = rnd(16, 1, 28, 28, device=dev, requires_grad=True)
    w = rnd(32, 1, 3, 3, device=dev, scale=0.3)
    g = rnd(16, 32, 14, 14, device=dev)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = FF.conv2d(x, w, None, stride=2, padding=1)
            outs.append(torch.autograd.grad(y, [x], g))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("w_layout", ["contiguous", "channels_last"])
def test_conv2d_padding_only_taps_have_zero_weight_grad(request, impl, dtype, w_layout):
    """Kernel columns that read only padding (1-wide input, kernel 3, padding 1, stride 2: columns 0 and 2 never
    touch the input) have an exactly-zero weight gradient. torch 2.14.1's own bfloat16 CPU backward (oneDNN)
    leaves them uninitialised for a channels_last weight; fastgan must not."""
    name, dev = impl
    if name == "torch" and dev.type == "cpu" and dtype == torch.bfloat16 and w_layout == "channels_last":
        # runs, and shows as XPASS when a torch release no longer has the bug (or the memory was zero by chance)
        request.applymarker(pytest.mark.xfail(reason="upstream torch bug (seen in 2.14.1): the reference path is "
                                              "stock F.conv2d (see docs/usage.md)", strict=False))
    for _ in range(5):  # uninitialised memory is sometimes zero by chance: several fresh allocations
        x = rnd(1, 2, 1, 1, dtype=dtype, device=dev, requires_grad=True)
        w = rnd(3, 2, 1, 3, dtype=dtype, device=dev)
        if w_layout == "channels_last":
            w = w.contiguous(memory_format=torch.channels_last)
        w.requires_grad_()
        y = FF.conv2d(x, w, None, stride=(1, 2), padding=(0, 1))
        (gw,) = torch.autograd.grad(y, [w], torch.ones_like(y))
        assert torch.equal(gw[..., 0::2], torch.zeros_like(gw[..., 0::2])), gw
        assert (gw[..., 1] != 0).any()


@pytest.mark.parametrize("case", [
    dict(x=(2, 4, 5, 6), w=(4, 3, 4, 4), stride=2, padding=1),  # DCGAN up-sampling layer
    dict(x=(2, 4, 5, 6), w=(4, 3, 3, 2), stride=(2, 2), padding=(1, 1), output_padding=(1, 0), dilation=(1, 2)),
    dict(x=(2, 4, 3, 4), w=(4, 2, 3, 3), stride=(3, 2), padding=(2, 0), output_padding=(2, 1), groups=2),
    dict(x=(4, 5, 6), w=(4, 3, 3, 3), stride=2, padding=1, channels_last=False),  # unbatched
    dict(x=(2, 4, 5, 6), w=(4, 3, 3, 3), stride=1, padding=0, output_padding=1, dilation=2),  # op >= stride
], ids=["dcgan", "outpad_dilation", "groups", "unbatched", "outpad_ge_stride"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv_transpose2d_matches_reference(impl, case, layout):
    """Forward and gradients against stock F.conv_transpose2d in float64; on native / emu the forward runs the
    conv kernels' data-gradient path (conv2d_backward), its input gradient conv2d, its weight gradient the
    weight-gradient path. channels_last in, channels_last out."""
    _, dev = impl
    c = dict(case)
    x = rnd(*c.pop("x"), device=dev, requires_grad=True)
    if layout == "channels_last" and x.ndim == 4:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    w = rnd(*c.pop("w"), device=dev, scale=0.3, requires_grad=True)
    c.pop("channels_last", None)
    b = rnd(w.shape[1] * c.get("groups", 1), device=dev, requires_grad=True)
    fn = lambda x, w, b: FF.conv_transpose2d(x, w, b, act="lrelu", alpha=0.2, **c)  # noqa: E731
    check_fwd_bwd(fn, [x, w, b], torch.float32, "conv_transpose2d")
    if layout == "channels_last" and x.ndim == 4:
        assert fn(x, w, b).is_contiguous(memory_format=torch.channels_last)


def test_conv_transpose2d_keeps_no_output_sized_stand_in(impl):
    """conv_transpose2d runs as conv2d_backward with a stand-in for the convolution's input that carries only its
    shape and layout (channels_last needs real strides, so an output-sized allocation): autograd keeps no
    output-sized tensor alive until backward (only the input and the weight; no bias, no activation to save)."""
    _, dev = impl
    x = rnd(2, 4, 5, 6, device=dev, requires_grad=True).contiguous(memory_format=torch.channels_last)
    w = rnd(4, 3, 4, 4, device=dev, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        y = FF.conv_transpose2d(x, w, stride=2, padding=1)
    assert y.shape == (2, 3, 10, 12) and y.is_contiguous(memory_format=torch.channels_last)
    assert y.shape not in saved, saved
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y), create_graph=True)
    torch.autograd.grad((gx * gx).sum() + (gw * gw).sum(), (x, w))  # the double backward without it


@pytest.mark.parametrize("layer", ["linear", "conv2d", "bias_act", "conv_transpose2d"])
def test_identity_layer_saves_no_output(impl, layer):
    """A layer with nothing to apply after its bias (act 'linear', gain 1, no clamp) saves no output for backward, as
    torch's linear / conv2d / add: the output may be modified in place (a residual `out += x`) and the gradients
    stay those of the stock composition, also in the double backward."""
    _, dev = impl
    F = torch.nn.functional
    x = rnd(2, 4, 5, 4, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(4, dtype=torch.float64, device=dev, requires_grad=True)
    w, fn, stock = {
        "linear": (rnd(4, 4), FF.linear, F.linear),
        "conv2d": (rnd(4, 4, 3, 3), lambda x, w, b: FF.conv2d(x, w, b, padding=1),
                   lambda x, w, b: F.conv2d(x, w, b, padding=1)),
        "conv_transpose2d": (rnd(4, 4, 3, 3), lambda x, w, b: FF.conv_transpose2d(x, w, b, padding=1),
                             lambda x, w, b: F.conv_transpose2d(x, w, b, padding=1)),
        "bias_act": (rnd(4), lambda x, w, b: FF.bias_act(x, b * w), lambda x, w, b: x + (b * w).view(1, -1, 1, 1)),
    }[layer]
    w = w.to(device=dev, dtype=torch.float64).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
        y = fn(x, w, b)
    assert y.data_ptr() not in saved
    got = []
    for f in (fn, stock):
        out = f(x, w, b)
        out += x  # in place, on the output
        g = torch.autograd.grad(out.square().sum(), (x, w, b), create_graph=True)
        got.append(g + torch.autograd.grad(sum(t.square().sum() for t in g), (x, w, b)))
    for a, s in zip(*got):
        torch.testing.assert_close(a, s, rtol=1e-9, atol=1e-9)
    if layer == "bias_act":  # a 1-D input: the bias gradient is the upstream gradient itself
        v = rnd(4, dtype=torch.float64, device=dev, requires_grad=True)
        gv, gb = torch.autograd.grad((FF.bias_act(v, b, dim=0) * v).sum(), (v, b))
        torch.testing.assert_close(gb, v.detach())


@pytest.mark.parametrize("route", ["auto", "aten"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("act", ["tanh", "lrelu"])
def test_half_linear_adds_the_bias_before_rounding(impl, dtype, act, route):
    """A half-type linear with an activation rounds x w^T + b once, as F.linear does, before the activation: where
    the product and the bias nearly cancel, a product rounded to the half type first would be off by half an ulp of
    the product, many ulps of the result. On CUDA also on the cuBLAS route (the kernels take this shape)."""
    _, dev = impl
    if route == "aten" and dev.type != "cuda":
        pytest.skip("the route of CUDA products")
    torch.manual_seed(0)
    x, w = rnd(6, 32, dtype=dtype, device=dev, scale=2), rnd(5, 32, dtype=dtype, device=dev)
    p = x[0].double() @ w.double().T  # row 0 of the product (magnitude ~10), cancelled by the bias to ~0.06-0.2
    b = (-p + torch.linspace(0.06, 0.2, 5, dtype=torch.float64, device=dev)).to(dtype)
    with fastgan.cuda_gemm_route(route) if route != "auto" else contextlib.nullcontext():
        y = FF.linear(x, w, b, act=act)
    want = reference(lambda: FF.linear(x.double(), w.double(), b.double(), act=act))
    stock = reference(lambda: FF.linear(x, w, b, act=act))  # F.linear then the activation, in dtype, on dev
    eps = torch.finfo(dtype).eps

    def err(t):
        return ((t.double() - want).abs() / want.abs().clamp_min(0.01)).max().item()
    # (2 ulp: one rounding of x w^T + b, one of the activation; or no worse than stock's composition plus one ulp,
    # should a library sum the product in the half type)
    assert err(y) <= max(2 * eps, err(stock) + eps), f"{dtype} {act}: relative error {err(y):.3g}, stock's " \
        f"{err(stock):.3g}"


def test_conv_transpose2d_gradgradcheck(impl):
    _, dev = impl
    x = rnd(1, 2, 3, 3, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(2, 2, 3, 3, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(2, dtype=torch.float64, device=dev, requires_grad=True)
    fn = lambda x, w, b: FF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, act="sigmoid")  # noqa
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


# ------------------------------------------------------------------------------------ TF32 tensor cores (float32)
# With torch's TF32 flags on (torch.backends.cudnn.allow_tf32 is on by default, cuda.matmul.allow_tf32 off), the
# CUDA kernels multiply float32 on TF32 tensor cores. The forward must equal the float64 product of the inputs
# rounded to TF32 (cvt.rna) to float32 accuracy, and sit clearly closer to it than to the exact product (so the
# rounding, i.e. the tensor-core path, is proven); gradients must pass the TF32 tolerance. The CPU paths ignore
# the flags, as torch does on the CPU. (Half types always take the tensor-core tiles: every bf16/fp16 test above.)
TF32_FACTOR = TOL_TF32 / TOL[torch.float32]
TF32_DENSE = {"tile64": (37, 70, 45), "split_k": (50, 1100, 60), "tile128": (1536, 24, 1408)}  # M, K, N


def needs_tensor_cores(impl):
    name, dev = impl
    if dev.type == "cpu" and name != "emu":
        pytest.skip("TF32 is a CUDA-kernel path; on the CPU float32 stays exact (as in torch)")


def check_tf32(f, inputs, what, grads=True):
    """f(x, w[, b]) with TF32 on, against the float64 model of TF32 products: x and w rounded to TF32 (the bias is
    added in float32, unrounded). The gradients are compared with the model's too, so that an activation's
    derivative is taken at the same side of zero (the exact product can differ in sign near zero)."""
    ins = [t.detach().clone().requires_grad_() for t in inputs]
    with tf32(True):
        y = f(*ins)
    exact = reference(f, *[t.detach().double() for t in inputs])
    model_ins = [(round_tf32(t) if i < 2 else t.detach()).double().requires_grad_() for i, t in enumerate(inputs)]
    model = reference(f, *model_ins)
    if y.numel():
        e_model, e_exact = rel_err(y, model), rel_err(y, exact)
        assert e_model <= 4 * TOL[torch.float32], f"{what}: {e_model:.3g} from the TF32 model"
        assert e_exact > 10 * e_model, f"{what}: as close to the exact product ({e_exact:.3g}): inputs not rounded"
    if grads:
        g = torch.randn(y.shape, dtype=torch.float64)
        with tf32(True):
            got = torch.autograd.grad(y, ins, g.float().to(y.device))
        want = torch.autograd.grad(model, model_ins, g.to(model.device))
        for i, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, torch.float32, f"{what} grad of input {i}", TF32_FACTOR)
    with tf32(False):  # and the flag off is exact float32 again
        assert_close(f(*inputs), exact, torch.float32, f"{what} with TF32 off")


@pytest.mark.parametrize("case", list(TF32_DENSE))
def test_linear_tf32(impl, case):
    needs_tensor_cores(impl)
    _, dev = impl
    M, K, N = TF32_DENSE[case]
    x, w, b = rnd(M, K, device=dev), rnd(N, K, device=dev, scale=0.2), rnd(N, device=dev)
    # tile128's backward products are the other cases' tiles (and slow to emulate at this size)
    check_tf32(lambda x, w, b: FF.linear(x, w, b, act="lrelu", alpha=0.2), [x, w, b], f"linear {case}",
               grads=case != "tile128")


# (same_asymmetric is computed by stock F.conv2d + bias_act, see fastgan.functional.conv2d: not our GEMM)
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c != "same_asymmetric"])
def test_conv2d_tf32(impl, case):
    needs_tensor_cores(impl)
    _, dev = impl
    c = dict(CONV_CASES[case])
    x = rnd(*c.pop("x"), device=dev)
    w = rnd(*c.pop("w"), device=dev, scale=0.3)
    b = rnd(w.shape[0], device=dev)
    check_tf32(lambda x, w, b: FF.conv2d(x, w, b, **c, act="lrelu", alpha=0.2), [x, w, b], f"conv2d {case}")


def test_conv_transpose2d_tf32(impl):
    needs_tensor_cores(impl)
    _, dev = impl
    x, w = rnd(2, 6, 5, 5, device=dev), rnd(6, 4, 3, 3, device=dev, scale=0.3)
    check_tf32(lambda x, w: FF.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), [x, w],
               "conv_transpose2d")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_linear_half_128_tile(impl, dtype):
    """The 128 x 128 tensor-core tile of the 16-bit types (chosen when the output fills the device)."""
    _, dev = impl
    x = rnd(1536, 40, dtype=dtype, device=dev)
    w = rnd(1408, 40, dtype=dtype, device=dev, scale=0.2)
    ref = reference(lambda x, w: FF.linear(x, w, act="lrelu"), x.double().cpu(), w.double().cpu())
    with fastgan.cuda_gemm_route("kernels") if dev.type == "cuda" else contextlib.nullcontext():  # (auto: cuBLAS)
        out = FF.linear(x, w, act="lrelu")
    assert_close(out, ref, dtype, "linear 128 tile")


def test_tf32_follows_torch_fp32_precision_api():
    """The newer torch.backends.*.fp32_precision settings are honoured too (fresh interpreter: torch refuses the
    legacy allow_tf32 getters in a process that used them)."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    code = """
import torch, fastgan, fastgan.functional as FF
def tf32_used(f, *a):
    with fastgan.use_impl("emu"):
        y = f(*a)
    return (y.double() - f(*[t.double() for t in a])).abs().max().item() > 1e-4 * y.abs().max().item()
torch.manual_seed(0)
x, w = torch.randn(40, 60), torch.randn(30, 60)
xc, wc = torch.randn(2, 8, 6, 6), torch.randn(16, 8, 3, 3)
out = [tf32_used(FF.linear, x, w), tf32_used(FF.conv2d, xc, wc)]  # torch's defaults: matmul ieee, conv tf32
torch.backends.cuda.matmul.fp32_precision = "tf32"
torch.backends.cudnn.conv.fp32_precision = "ieee"
out += [tf32_used(FF.linear, x, w), tf32_used(FF.conv2d, xc, wc)]
print(out)
"""
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[False, True, True, False]", r.stdout


# ------------------------------------------------------------------------ the layers' backward ops (act' folded)
def _layer_y(z, act, alpha, gain, clamp):
    """A layer's output for pre-activations z (float64), as the forward computes it."""
    y = _activations.get(act).ref(z, alpha) * gain
    return y.clamp(-clamp, clamp) if clamp >= 0 else y


def _layer_dz(dy, y, act, alpha, gain, clamp):
    dz = dy * gain * _activations.get(act).dy_from_y(y / gain, alpha)
    return dz * (y.abs() < clamp).to(dz.dtype) if clamp >= 0 else dz


LAYER_CASES = [  # (act, alpha, gain, clamp)
    ("lrelu", 0.2, 1.4, -1.0), ("sigmoid", 0.0, 1.0, -1.0), ("tanh", 0.0, 2.0, 0.8), ("relu", 0.0, 1.0, -1.0),
    ("linear", 0.0, 1.7, -1.0), ("linear", 0.0, 1.0, -1.0),
]
LAYER_LAYOUTS = ["same", "transposed", "y_other"]  # dy and y layouts: equal (folded), both transposed, differing


@pytest.mark.parametrize("layout", LAYER_LAYOUTS)
@pytest.mark.parametrize("shape", [(37, 20, 24), (1100, 16, 8), (1100, 70, 40)], ids=["tile", "dot", "split_k"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_dense_backward_op(impl, shape, dtype, layout):
    """dense_backward(dy, x, w, mask, y, act...) -- the layer's whole backward in one op: dz = act_grad(dy, y)
    inside the products' operand loads, db as the weight-gradient GEMM's row sums (dot kernel, 64 tile, split-K
    row partials) -- against float64 formulas, for every activation case; y in dy's layout, both transposed (the
    other load mapping), and y in another layout than dy (dz materialised)."""
    name, dev = impl
    if name == "torch":
        pytest.skip("the backward ops are fastgan._C's (the reference has none)")
    M, K, N = shape
    for act, alpha, gain, clamp in LAYER_CASES:
        x, w = rnd(M, K, dtype=dtype, device=dev), rnd(N, K, dtype=dtype, device=dev, scale=0.3)
        dy = rnd(M, N, dtype=dtype, device=dev)
        y = _layer_y(torch.randn(M, N, dtype=torch.float64), act, alpha, gain, clamp).to(dtype).to(dev)
        if layout == "transposed":
            dy, y = dy.t().contiguous().t(), y.t().contiguous().t()
        elif layout == "y_other":
            y = y.t().contiguous().t()
        dx, dw, db = torch.ops.fastgan.dense_backward(dy, x, w, [True, True, True], y, act, alpha, gain, clamp)
        dz = _layer_dz(dy.double().cpu(), y.double().cpu(), act, alpha, gain, clamp)
        xd, wd = x.double().cpu(), w.double().cpu()
        what = f"dense_backward[{act},gain={gain},clamp={clamp}]"
        assert_close(dx, dz @ wd, dtype, what + " dx", 2, scale=dz.abs() @ wd.abs())
        assert_close(dw, dz.T @ xd, dtype, what + " dw", 2, scale=dz.abs().T @ xd.abs())
        assert_close(db, dz.sum(0), dtype, what + " db", 2, scale=dz.abs().sum(0))
        # subsets: the weight gradient's row sums without dx (same bits); db without dw (materialised: another
        # summation order)
        for mask in ([False, True, True], [True, False, True], [False, False, True]):
            ox, ow, ob = torch.ops.fastgan.dense_backward(dy, x, w, mask, y, act, alpha, gain, clamp)
            assert torch.equal(ox, dx) if mask[0] else ox.numel() == 0, (what, mask)
            assert torch.equal(ow, dw) if mask[1] else ow.numel() == 0, (what, mask)
            if mask[1]:
                assert torch.equal(ob, db), (what, mask)
            else:
                assert_close(ob, dz.sum(0), dtype, what + " db alone", 2, scale=dz.abs().sum(0))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "y_other"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_conv2d_backward_op(impl, dtype, layout):
    """conv2d_backward(dy, x, w, ..., mask, y, act...) against float64 formulas: act' folded into the input
    gradient's stride phases (the im2col operand over dy) and the weight gradient, db as the weight gradient's row
    sums (split-K: K = N * OH * OW = 2048), groups; y in dy's layout or another (dz materialised)."""
    name, dev = impl
    if name == "torch":
        pytest.skip("the backward ops are fastgan._C's (the reference has none)")
    for (N, C, H, Co, k, s, p, gr), (act, alpha, gain, clamp) in zip(
            [(8, 3, 16, 8, 3, 1, 1, 1), (3, 4, 9, 6, 3, 2, 1, 2), (2, 5, 8, 4, 2, 2, 0, 1)], LAYER_CASES):
        x = rnd(N, C, H, H, dtype=dtype, device=dev)
        w = rnd(Co, C // gr, k, k, dtype=dtype, device=dev, scale=0.3)
        OH = (H + 2 * p - k) // s + 1
        dy = rnd(N, Co, OH, OH, dtype=dtype, device=dev)
        y = _layer_y(torch.randn(N, Co, OH, OH, dtype=torch.float64), act, alpha, gain, clamp).to(dtype).to(dev)
        if layout != "nchw":
            x = x.contiguous(memory_format=torch.channels_last)
            y = y.contiguous(memory_format=torch.channels_last)
            if layout == "channels_last":
                dy = dy.contiguous(memory_format=torch.channels_last)
        dx, dw, db = torch.ops.fastgan.conv2d_backward(dy, x, w, [s, s], [p, p], [1, 1], gr, [True, True, True], y,
                                                       act, alpha, gain, clamp)
        dz = _layer_dz(dy.double().cpu(), y.double().cpu(), act, alpha, gain, clamp)
        xd, wd = x.double().cpu(), w.double().cpu()
        rx, rw, _ = torch.ops.aten.convolution_backward(dz, xd, wd, None, [s, s], [p, p], [1, 1], False, [0, 0], gr,
                                                        [True, True, False])
        sx, sw, _ = torch.ops.aten.convolution_backward(dz.abs(), xd.abs(), wd.abs(), None, [s, s], [p, p], [1, 1],
                                                        False, [0, 0], gr, [True, True, False])
        what = f"conv2d_backward[{N},{C},{H},{Co},k{k},s{s},g{gr},{act}]"
        assert_close(dx, rx, dtype, what + " dx", 2, scale=sx)
        assert_close(dw, rw, dtype, what + " dw", 2, scale=sw)
        assert_close(db, dz.sum((0, 2, 3)), dtype, what + " db", 2, scale=dz.abs().sum((0, 2, 3)))
        _, dw2, db2 = torch.ops.fastgan.conv2d_backward(dy, x, w, [s, s], [p, p], [1, 1], gr, [False, True, True], y,
                                                        act, alpha, gain, clamp)
        assert torch.equal(dw2, dw) and torch.equal(db2, db), what


def test_layer_backward_op_errors():
    """A layer whose activation gradient needs y, called without it: a clear error naming y."""
    x, w, dy = torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 5)
    with pytest.raises(ValueError, match="y: the layer's saved output is required for act='lrelu'"):
        torch.ops.fastgan.dense_backward(dy, x, w, [True, True, True], None, "lrelu", 0.2, 1.0, -1.0)
    with pytest.raises(ValueError, match="y: expected shape"):
        torch.ops.fastgan.dense_backward(dy, x, w, [True, True, True], dy[:2], "lrelu", 0.2, 1.0, -1.0)


# ----------------------------------------------------------------------------------------- split-K in the kernel
def test_split_k_same_bits_whichever_split_finishes_last():
    """Split-K products, split bias gradients and the BCE sum finish in the kernel: the last block to arrive sums
    all partials in a fixed order. Whatever order the splits run and interleave in (emulator schedules, several resident blocks),
    the bits are the same, and repeated calls agree (every launch leaves its counter slots at zero)."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    import hashlib, os, subprocess, sys
    code = """
import hashlib, torch, fastgan, fastgan.functional as FF
torch.manual_seed(0)
x, w = torch.randn(50, 1100), torch.randn(60, 1100)             # dense, split-K over K = 1100
xc, wc = torch.randn(4, 3, 16, 16), torch.randn(8, 3, 3, 3)     # conv weight gradient, K = 4 * 16 * 16
h = hashlib.sha256()
with fastgan.use_impl("emu"):
    for _ in range(2):
        h.update(FF.linear(x, w, act="lrelu").numpy().tobytes())
        xg, wg, bg = xc.clone().requires_grad_(), wc.clone().requires_grad_(), torch.randn(8, requires_grad=True)
        y = FF.conv2d(xg, wg, bg, padding=1, act="lrelu")            # + the bias gradient as split row sums,
        for g in torch.autograd.grad(y, (xg, wg, bg), torch.ones_like(y)):  # dx in the same launch
            h.update(g.numpy().tobytes())
        for shape in ((64, 32, 14, 14), (300, 1000)):                # bias gradients in 4 / 5 splits
            yb, dyb = torch.randn(shape), torch.randn(shape)
            h.update(torch.ops.fastgan.bias_act_backward(dyb, yb, True, 1, "lrelu", 0.2, 1.0, -1.0)[1].numpy().tobytes())
        h.update(FF.binary_cross_entropy_with_logits(torch.randn(5000), 1.0).numpy().tobytes())  # 5 blocks
        xh, wh, bh = torch.randn(300, 700, requires_grad=True), torch.randn(1, 700, requires_grad=True), \
            torch.randn(1, requires_grad=True)                      # head + loss: 38 / 10 row blocks
        lh, _ = FF.linear_bce_with_logits(xh, wh, bh, 1.0)
        for g in (lh, *torch.autograd.grad(lh, (xh, wh, bh))):
            h.update(g.detach().numpy().tobytes())
print(h.hexdigest())
"""
    digests = set()
    for env in ({}, {"FGEMU_SCHEDULE": "random:5", "FGEMU_BLOCKS": "4"},
                {"FGEMU_SCHEDULE": "reverse", "FGEMU_BLOCKS": "3"}):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env})
        assert r.returncode == 0, r.stderr[-2000:]
        digests.add(r.stdout.split()[-1])
    assert len(digests) == 1, digests
    with fastgan.use_impl("emu"):  # and the result is the product
        torch.manual_seed(0)
        x, w = torch.randn(50, 1100), torch.randn(60, 1100)
        assert_close(FF.linear(x, w), x.double() @ w.double().T, torch.float32, "split-K linear")


def test_layer_backward_one_launch():
    """A layer's weight gradient (split-K, with the bias gradient's row sums) and its input gradient (a convolution's
    four stride phases) are parts of one launch, with the same bits as when each is asked for alone."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    from fastgan import _ext
    torch.manual_seed(0)
    cases = [("conv2d", "conv2d_backward_gemm (weight + data)", torch.randn(16, 32, 14, 14),
              torch.randn(64, 32, 3, 3) * 0.1, torch.randn(16, 64, 7, 7)),   # D's conv2 at batch 16
             ("dense", "dense_gemm", torch.randn(128, 256), torch.randn(512, 256) * 0.1,
              torch.randn(128, 512))]                                          # G's fc2: dX split-K, dW
    with fastgan.use_impl("emu"):
        for op, launch, x, w, dy in cases:
            y = torch.nn.functional.leaky_relu(dy, 0.2)  # a saved output: act' folds into the loads
            if op == "conv2d":
                run = lambda m: torch.ops.fastgan.conv2d_backward(dy, x, w, [2, 2], [1, 1], [1, 1], 1, m, y, "lrelu",
                                                                  0.2, 1.0, -1.0)
            else:
                run = lambda m: torch.ops.fastgan.dense_backward(dy, x, w, m, y, "lrelu", 0.2, 1.0, -1.0)
            _ext.C.emu_launch_log(True)
            dx, dw, db = run([True, True, True])
            assert _ext.C.emu_launch_log(False) == [launch], op
            dx1 = run([True, False, False])[0]
            _, dw1, db1 = run([False, True, True])
            assert torch.equal(dx, dx1) and torch.equal(dw, dw1) and torch.equal(db, db1), op
            dz = (dy * torch.where(y > 0, 1.0, 0.2)).double()
            if op == "conv2d":
                rx, rw, _ = torch.ops.aten.convolution_backward(dz, x.double(), w.double(), None, [2, 2], [1, 1],
                                                                [1, 1], False, [0, 0], 1, [True, True, False])
                rb = dz.sum((0, 2, 3))
            else:
                rx, rw, rb = dz @ w.double(), dz.T @ x.double(), dz.sum(0)
            for got, want in ((dx, rx), (dw, rw), (db, rb)):
                torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- dact_y: the double backward's product epilogue
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act", ["lrelu", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("op", ["dense", "conv2d"])
def test_dact_y_epilogue(impl, op, act, layout):
    """dense / conv2d with dact_y write act_grad(product, dact_y) (dL/dz of a layer whose dL/dy is the product):
    equal to the product followed by bias_act_backward, in float32 and float64."""
    name, dev = impl
    if name == "torch":
        pytest.skip("an op-level argument (fastgan.functional does not expose it)")
    ns = torch.ops.fastgan
    torch.manual_seed(0)
    conv = ([2, 2], [1, 1], [1, 1], 1)
    for dtype in (torch.float32, torch.float64):
        if op == "dense":
            x, w = torch.randn(9, 5, dtype=dtype, device=dev), torch.randn(4, 5, dtype=dtype, device=dev)
            run = lambda x, w, *dact: ns.dense(x, w, None, *dact)  # noqa: E731
        else:
            x, w = torch.randn(2, 3, 7, 7, dtype=dtype, device=dev), torch.randn(4, 3, 3, 3, dtype=dtype, device=dev)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            run = lambda x, w, *dact: ns.conv2d(x, w, None, *conv, *dact)  # noqa: E731
        z = run(x, w, "linear", 0.0, 1.0, -1.0, None)
        y = ns.bias_act(torch.randn(z.shape, dtype=dtype, device=dev), None, 1, act, 0.2, 1.3, -1.0)
        expect = ns.bias_act_backward(z, y, False, 1, act, 0.2, 1.3, -1.0)[0]
        got = run(x, w, act, 0.2, 1.3, -1.0, y)
        assert got.shape == expect.shape
        torch.testing.assert_close(got, expect, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("act", ["lrelu", "sigmoid"])
@pytest.mark.parametrize("op", ["dense", "conv2d"])
def test_dact_y_gradients(impl, op, act):
    """Gradients of a dact_y call w.r.t. x, w and (smooth activations) dact_y: gradcheck and gradgradcheck."""
    name, dev = impl
    if name == "torch":
        pytest.skip("an op-level argument (fastgan.functional does not expose it)")
    ns = torch.ops.fastgan
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64, device=dev)
    if op == "dense":
        x, w = torch.randn(3, 4, **f64), torch.randn(2, 4, **f64)
        run = lambda x, w, *a: ns.dense(x, w, None, *a)  # noqa: E731
    else:
        x, w = torch.randn(1, 2, 5, 5, **f64), torch.randn(3, 2, 3, 3, **f64)
        run = lambda x, w, *a: ns.conv2d(x, w, None, [2, 2], [1, 1], [1, 1], 1, *a)  # noqa: E731
    z = run(x, w, "linear", 0.0, 1.0, -1.0, None)
    y = ns.bias_act(torch.randn(z.shape, **f64), None, 1, act, 0.2, 1.3, -1.0)
    x, w, y = (t.detach().requires_grad_() for t in (x, w, y))
    y.requires_grad_(_activations.get(act).d2 is not None)
    fn = lambda x, w, y: run(x, w, act, 0.2, 1.3, -1.0, y)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, y))
    assert torch.autograd.gradgradcheck(fn, (x, w, y))


def test_dact_y_errors():
    if not _ext_loaded():
        pytest.skip("needs fastgan._C")
    ns = torch.ops.fastgan
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="dact_y: expected the output's shape"):
        ns.dense(x, w, None, "lrelu", 0.2, 1.0, -1.0, torch.rand(3, 5))
    with pytest.raises(ValueError, match="b: must be None with dact_y"):
        ns.dense(x, w, torch.randn(4), "lrelu", 0.2, 1.0, -1.0, torch.rand(3, 4))
    with pytest.raises(TypeError, match="dact_y"):
        ns.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), None, [1, 1], [1, 1], [1, 1], 1, "relu", 0.0,
                  1.0, -1.0, torch.rand(1, 3, 5, 5, dtype=torch.float64))


# --------------------------------------------------------------------------------------------- sigmoid + BCE
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bce_matches_reference(impl, reduction, dtype):
    _, dev = impl
    x = rnd(37, 3, dtype=dtype, device=dev, scale=3, requires_grad=True)
    t = torch.rand(37, 3).to(dtype).to(dev)
    check_fwd_bwd(lambda x, t: FF.binary_cross_entropy_with_logits(x, t, reduction=reduction), [x, t], dtype,
                  f"bce[{reduction}]")


@pytest.mark.parametrize("variant", ["label1", "label0", "label_smooth", "weight", "pos_weight", "both",
                                     "target_grad", "empty_sum", "large"])
def test_bce_variants(impl, variant):
    _, dev = impl
    x = rnd(16, 5, device=dev, scale=4, requires_grad=True)
    t = torch.rand(16, 5, device=dev)
    kw = {}
    if variant.startswith("label"):
        label = {"label1": 1.0, "label0": 0.0, "label_smooth": 0.9}[variant]
        for red in ("none", "mean", "sum"):
            check_fwd_bwd(lambda x: FF.binary_cross_entropy_with_logits(x, label, reduction=red), [x],
                          torch.float32, f"{variant}/{red}")
        return
    if variant in ("weight", "both"):
        kw["weight"] = (torch.rand(5, device=dev) + 0.5).requires_grad_()
    if variant in ("pos_weight", "both"):
        kw["pos_weight"] = (torch.rand(5, device=dev) + 0.5).requires_grad_()
    if variant == "target_grad":
        t.requires_grad_()
    if variant == "empty_sum":
        x = rnd(0, 5, device=dev, requires_grad=True)
        t = torch.rand(0, 5, device=dev)
        kw["reduction"] = "sum"
    if variant == "large":
        x = rnd(70000, device=dev, scale=3, requires_grad=True)  # several reduction blocks
        t = torch.rand(70000, device=dev)
    names = sorted(kw)
    tens = [kw[k] for k in names if isinstance(kw[k], torch.Tensor)]
    fixed = {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}

    def fn(x, t, *ws):
        return FF.binary_cross_entropy_with_logits(x, t, **dict(zip([k for k in names if k not in fixed], ws)),
                                                   **fixed)
    check_fwd_bwd(fn, [x, t, *tens], torch.float32, variant)


def test_bce_extreme_logits_finite(impl):
    _, dev = impl
    x = torch.tensor([1e4, -1e4, 50.0, -50.0, 0.0], device=dev, requires_grad=True)
    for target in (1.0, 0.0, torch.tensor([0.0, 1.0, 0.3, 0.7, 0.5], device=dev)):
        loss = FF.binary_cross_entropy_with_logits(x, target, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), [x])
        assert torch.isfinite(loss).all() and torch.isfinite(g).all()
        ref = torch.nn.functional.binary_cross_entropy_with_logits(
            x.detach().double().cpu(), target.double().cpu() if isinstance(target, torch.Tensor)
            else torch.full((5,), target, dtype=torch.float64), reduction="none")
        assert_close(loss, ref, torch.float32, "extreme logits")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bce_confident_logits_keep_relative_precision(impl, dtype):
    """Well-classified samples (t = 1, x >> 0 or t = 0, x << 0) have tiny losses and gradients; every element must
    still be right to the dtype's relative precision (the textbook forms sigmoid(x) - t and (1 - t) x + softplus(-x)
    cancel there: float32 gives 0 or rounding noise instead of ~1e-9)."""
    _, dev = impl
    mags = torch.tensor([0.5, 3.0, 12.0, 20.0, 40.0, 80.0], dtype=torch.float64)
    for target, sign in ((1.0, 1.0), (0.0, -1.0)):
        x = (sign * mags).to(dtype).to(dev).requires_grad_()
        loss = FF.binary_cross_entropy_with_logits(x, target, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), [x])
        xr = x.detach().double().cpu().requires_grad_()
        ref = torch.nn.functional.softplus(-sign * xr)  # the exact loss for a hard target
        (gref,) = torch.autograd.grad(ref.sum(), [xr])
        for got, want, what in ((loss, ref, "loss"), (g, gref, "dloss/dx")):
            rel = ((got.detach().double().cpu() - want.detach()).abs() / want.detach().abs()).max().item()
            assert rel <= 2 * TOL[dtype], f"{what}, target {target}: elementwise relative error {rel:.3g}"


def test_bce_gradcheck(impl):
    _, dev = impl
    x = rnd(6, dtype=torch.float64, device=dev, requires_grad=True)
    t = torch.rand(6, dtype=torch.float64, device=dev, requires_grad=True)
    w = (torch.rand(6, dtype=torch.float64, device=dev) + 0.5).requires_grad_()
    p = (torch.rand(6, dtype=torch.float64, device=dev) + 0.5).requires_grad_()
    for red in ("none", "mean", "sum"):
        fn = lambda x, t, w, p: FF.binary_cross_entropy_with_logits(x, t, w, reduction=red, pos_weight=p)  # noqa
        assert torch.autograd.gradcheck(fn, (x, t, w, p))
        assert torch.autograd.gradgradcheck(fn, (x, t, w, p))
        fn1 = lambda x: FF.binary_cross_entropy_with_logits(x, 1.0, reduction=red)  # noqa: E731
        assert torch.autograd.gradgradcheck(fn1, (x,))


@pytest.mark.parametrize("shape, layout", [
    ((64, 32, 14, 14), "contiguous"),     # rows of 196: per-channel runs
    ((64, 64, 7, 7), "contiguous"),       # short rows: whole planes
    ((64, 32, 14, 14), "channels_last"),  # channels fastest
    ((300, 1000), "contiguous"),          # dense layer
], ids=["rows", "planes", "channels_last", "dense"])
def test_bias_grad_same_bits_for_any_thread_count(impl, shape, layout):
    """The bias gradient (a reduction) is split by size only and added in a fixed order: bitwise identical for 1
    and 2 threads (and between runs)."""
    name, dev = impl
    if name == "torch":
        pytest.skip("the pure-PyTorch path has no fused reduction of its own")
    y = rnd(*shape, device=dev)
    dy = rnd(*shape, device=dev)
    if layout == "channels_last":
        y, dy = (t.contiguous(memory_format=torch.channels_last) for t in (y, dy))
    ops = torch.ops.fastgan  # (the fixture's use_impl picks the C++ or the emulated kernels)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            outs.append(ops.bias_act_backward(dy, y, True, 1, "lrelu", 0.2, 1.0, -1.0))
    finally:
        torch.set_num_threads(threads)
    for dz, db in outs[1:]:
        assert torch.equal(dz, outs[0][0]) and torch.equal(db, outs[0][1])
    ref = torch.where(y > 0, dy, 0.2 * dy).double().sum([d for d in range(y.ndim) if d != 1])
    assert_close(outs[0][1], ref, torch.float32, "bias gradient")


def test_bce_deterministic(impl):
    _, dev = impl
    x = rnd(50001, device=dev, scale=3)
    a = FF.binary_cross_entropy_with_logits(x, 1.0)
    b = FF.binary_cross_entropy_with_logits(x, 1.0)
    assert torch.equal(a, b)


def test_bce_legacy_reduction_args(impl):
    _, dev = impl
    x, t = rnd(4, 3, device=dev), torch.rand(4, 3, device=dev)
    out = FF.binary_cross_entropy_with_logits(x, t, size_average=False)
    assert_close(out, torch.nn.functional.binary_cross_entropy_with_logits(x.double(), t.double(), reduction="sum"),
                 torch.float32, "size_average=False")


# ------------------------------------------------------------------------------ linear head + BCE in one op
HEAD_SHAPES = [(256, 2048), (37, 5), (1, 300), (300, 700)]  # (300, 700): 10 row blocks (split dw / db partials)


@pytest.mark.parametrize("shape", HEAD_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_bce_matches_reference(impl, shape, dtype):
    """linear_bce_with_logits (head + loss in one op) against the float64 composition F.linear + BCE: the loss,
    the logits, and the gradients of x, w, b through both outputs (the loss, and the logits used elsewhere: the
    g_logits path); label or target tensor, per-sample weights, no bias, sum and mean."""
    _, dev = impl
    n, K = shape
    x = rnd(n, K, dtype=dtype, device=dev, requires_grad=True)
    w = rnd(1, K, dtype=dtype, device=dev, scale=K ** -0.5, requires_grad=True)
    b = rnd(1, dtype=dtype, device=dev, requires_grad=True)
    t = torch.rand(n, dtype=torch.float64).to(dtype).to(dev)
    lw = torch.rand(n, dtype=torch.float64).to(dtype).to(dev)
    c = rnd(n, dtype=dtype, device=dev)
    for target, kw, red, bias in ((1.0, {}, "mean", True), (t, {"loss_weight": lw}, "sum", True),
                                  (0.0, {"loss_weight": lw[:1]}, "mean", False), (t, {}, "sum", False)):
        def like(v, x):  # the closure's tensors on the call's device and dtype (the reference: CPU, float64)
            return v.to(device=x.device, dtype=x.dtype) if isinstance(v, torch.Tensor) else v

        def fn(x, w, b):
            loss, logits = FF.linear_bce_with_logits(x, w, b if bias else None, like(target, x), reduction=red,
                                                     **{k: like(v, x) for k, v in kw.items()})
            return loss + (logits * like(c, x)).sum()

        def logits_only(x, w, b):
            return FF.linear_bce_with_logits(x, w, b if bias else None, like(target, x), reduction=red,
                                             **{k: like(v, x) for k, v in kw.items()})[1]
        what = f"linear_bce[{n}x{K},{red},bias={bias}]"
        # (half types: the test's own sum of the rounded products logits * c cancels, and so does b's gradient, the
        # sum of c plus the loss terms over the rows: both are judged against their small result, hence 4x (8x for
        # the gradients); the logits alone are held to the standard tolerance below)
        check_fwd_bwd(fn, [x, w, b] if bias else [x, w, b.detach()], dtype, what,
                      factor=4 if dtype in (torch.bfloat16, torch.float16) else 1)
        check_fwd_bwd(logits_only, [x.detach(), w.detach(), b.detach()], dtype, what + " logits")


@pytest.mark.parametrize("variant", ["mean_bias_logits", "sum_no_bias", "loss_only"])
def test_linear_bce_gradgradcheck(impl, variant):
    """Double backward of the head + loss op (the R1 / gradient-penalty path through a loss), float64: with the
    logits used too (g_logits), with the sum and no bias, and the loss alone."""
    _, dev = impl
    x = rnd(6, 5, dtype=torch.float64, device=dev, requires_grad=True)
    w = rnd(1, 5, dtype=torch.float64, device=dev, requires_grad=True)
    b = rnd(1, dtype=torch.float64, device=dev, requires_grad=True)
    t = torch.rand(6, dtype=torch.float64, device=dev)
    lw = torch.rand(6, dtype=torch.float64, device=dev)
    c = rnd(6, dtype=torch.float64, device=dev)

    def fn(x, w, b):
        if variant == "mean_bias_logits":
            loss, logits = FF.linear_bce_with_logits(x, w, b, t, loss_weight=lw)
            return loss + (logits * c).sum()
        if variant == "sum_no_bias":
            return FF.linear_bce_with_logits(x, w, None, t, reduction="sum")[0] + 0 * b.sum()
        return FF.linear_bce_with_logits(x, w, b, 1.0)[0]
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_linear_bce_edges(impl):
    """No rows (mean: NaN as torch, sum: 0, zero gradients), no features (logits = bias), x with a non-unit column
    stride, 33,000 rows (the kernels' grid-stride loops over rows), and the backward op's outputs one at a time
    (the same bits as all three)."""
    name, dev = impl
    for n, K in ((0, 4), (5, 0), (33000, 2)):
        x = rnd(n, K, device=dev, requires_grad=True)
        w = rnd(1, K, device=dev, requires_grad=True)
        b = rnd(1, device=dev, requires_grad=True)
        for red in ("mean", "sum"):
            loss, logits = FF.linear_bce_with_logits(x, w, b, 1.0, reduction=red)
            with fastgan.use_impl("torch"):
                rl, rlog = FF.linear_bce_with_logits(x.double(), w.double(), b.double(), 1.0, reduction=red)
            assert_close(logits, rlog, torch.float32, f"edge {n}x{K} logits")
            if n == 0 and red == "mean":
                assert torch.isnan(loss)
                continue
            assert_close(loss, rl, torch.float32, f"edge {n}x{K} {red} loss")
            grads = torch.autograd.grad(loss, (x, w, b))
            rgrads = torch.autograd.grad(rl, (x, w, b))
            for g, r in zip(grads, rgrads):
                assert_close(g, r, torch.float32, f"edge {n}x{K} {red} grad")
    xt = rnd(7, 9, device=dev).t().contiguous().t().requires_grad_()  # column stride 7
    w = rnd(1, 9, device=dev, requires_grad=True)
    check_fwd_bwd(lambda x, w: FF.linear_bce_with_logits(x, w, None, 0.0)[0], [xt, w], torch.float32, "strided x")
    if name == "torch":
        return
    ns = torch.ops.fastgan
    x, w, lg = rnd(40, 300, device=dev), rnd(1, 300, device=dev), rnd(40, device=dev)
    g, gl, t = torch.tensor(1.3, device=dev), rnd(40, device=dev), torch.rand(40, device=dev)
    full = ns.linear_bce_backward(g, gl, x, w, lg, t, 0.0, None, 1, [True, True, True])
    for i in range(3):
        mask = [j == i for j in range(3)]
        part = ns.linear_bce_backward(g, gl, x, w, lg, t, 0.0, None, 1, mask)
        assert torch.equal(part[i], full[i]) and all(part[j].numel() == 0 for j in range(3) if j != i)


def test_linear_bce_errors():
    x, w = torch.randn(4, 3), torch.randn(1, 3)
    with pytest.raises(ValueError, match=r"weight: expected shape \(1, 3\)"):
        FF.linear_bce_with_logits(x, torch.randn(2, 3))
    with pytest.raises(ValueError, match="reduction: expected 'mean' or 'sum'"):
        FF.linear_bce_with_logits(x, w, reduction="none")
    with pytest.raises(ValueError, match="input: expected a 2-D tensor"):
        FF.linear_bce_with_logits(x[0], w)
    with pytest.raises(ValueError, match="target: expected the input's shape"):
        FF.linear_bce_with_logits(x, w, None, torch.ones(5))
    if _ext_loaded():
        with pytest.raises(ValueError, match="w: expected shape"):
            torch.ops.fastgan.linear_bce(x, torch.randn(2, 3), None, None, 1.0, None, 1)


def test_linear_bce_target_gradients_take_the_composition():
    """Gradients w.r.t. target / loss_weight: the op does not compute them, the function routes to the unfused
    ops, which do."""
    x, w = torch.randn(5, 3), torch.randn(1, 3)
    t = torch.rand(5, dtype=torch.float64, requires_grad=True)
    loss, _ = FF.linear_bce_with_logits(x.double(), w.double(), None, t)
    (gt,) = torch.autograd.grad(loss, t)
    with fastgan.use_impl("torch"):
        (rt,) = torch.autograd.grad(FF.linear_bce_with_logits(x.double(), w.double(), None, t)[0], t)
    assert_close(gt, rt, torch.float64, "target gradient")


def _ext_loaded():
    from fastgan import _ext
    return _ext.C is not None


# ----------------------------------------------------------------------- sum of squares (a penalty's squared norm)
@pytest.mark.parametrize("shape", [(37, 3), (3, 1, 28, 28), (70000,), (0, 5)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sum_squares_matches_reference(impl, dtype, shape):
    _, dev = impl
    x = rnd(*shape, dtype=dtype, device=dev, scale=2, requires_grad=True)
    scale = 0.37 / max(x.numel(), 1)  # (a mean's size: float16 holds the result)
    check_fwd_bwd(lambda x: FF.sum_squares(x, scale), [x], dtype, f"sum_squares{shape}")


def test_sum_squares_gradgradcheck_and_layouts(impl):
    """Gradients of every order in float64; a transposed or channels_last input gives the bits of its contiguous
    copy (the kernels read memory order of the contiguous layout), value and gradient."""
    name, dev = impl
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: FF.sum_squares(x, 0.5), (x,))
    assert torch.autograd.gradgradcheck(lambda x: FF.sum_squares(x, 0.5), (x,))
    for t in (x.detach().transpose(1, 3), x.detach().contiguous(memory_format=torch.channels_last)):
        a, b = t.clone().requires_grad_(), t.contiguous().requires_grad_()
        va, vb = FF.sum_squares(a, 2.0), FF.sum_squares(b, 2.0)
        ga, gb = torch.autograd.grad(va, a)[0], torch.autograd.grad(vb, b)[0]
        if name == "torch":  # (ATen's sum follows the input's own order)
            torch.testing.assert_close(va, vb)
            torch.testing.assert_close(ga, gb)
        else:
            assert torch.equal(va, vb) and torch.equal(ga, gb)


def test_sum_squares_errors():
    with pytest.raises(ValueError, match="scale"):
        FF.sum_squares(torch.randn(3), float("nan"))
    with pytest.raises(ValueError, match="scale"):
        FF.sum_squares(torch.randn(3), "2")
    with pytest.raises(TypeError, match="input"):
        FF.sum_squares(torch.ones(3, dtype=torch.int64))
    if _ext_loaded():
        with pytest.raises(ValueError, match="g: expected one element"):
            torch.ops.fastgan.sum_squares_backward(torch.ones(2), torch.randn(3), 1.0)
        with pytest.raises(ValueError, match="scale"):
            torch.ops.fastgan.sum_squares(torch.randn(3), float("inf"))


# --------------------------------------------------------------------------------------- R1 through the layers
def test_r1_penalty_through_fused_model(impl):
    """Gradient penalty (double backward) through conv, dense and BCE equals the reference's."""
    _, dev = impl
    torch.manual_seed(0)
    D = torch.nn.Sequential(
        fastgan.nn.FusedConv2d(1, 4, 3, 2, 1, act="lrelu"),
        fastgan.nn.FusedConv2d(4, 8, 3, 2, 1, act="lrelu"),
        torch.nn.Flatten(),
        fastgan.nn.FusedLinear(8 * 4 * 4, 1),
    ).double().to(dev)
    x = torch.rand(3, 1, 14, 14, dtype=torch.float64, device=dev)

    def penalty():
        xr = x.clone().requires_grad_()
        loss = FF.binary_cross_entropy_with_logits(D(xr), 1.0)
        (g,) = torch.autograd.grad(loss, [xr], create_graph=True)
        r1 = g.square().sum()
        return torch.autograd.grad(r1, list(D.parameters()))

    got = penalty()
    ref = reference(penalty)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert_close(a, b, torch.float64, f"R1 grad of parameter {i}")
        assert b.abs().sum() > 0


def test_no_weight_gradients(impl):
    """Inside fastgan.no_weight_gradients() the fused layers' backward computes input gradients only: a penalty's
    first-order gradient and its parameter gradients are the same bits as without the context; a weight's gradient
    asked for inside is an error, not a silent zero; the context restores the mode on an exception."""
    name, dev = impl
    torch.manual_seed(0)
    D = torch.nn.Sequential(
        fastgan.nn.FusedConv2d(1, 4, 3, 2, 1, act="lrelu"),
        torch.nn.Flatten(),
        fastgan.nn.FusedLinear(4 * 7 * 7, 3, act="sigmoid"),
        fastgan.nn.FusedLinear(3, 1),
    ).to(dev)
    x = torch.rand(5, 1, 14, 14, device=dev)

    def penalty(off: bool):
        xr = x.clone().requires_grad_()
        loss, _ = FF.linear_bce_with_logits(D[:3](xr), D[3].weight, D[3].bias, 1.0)
        with fastgan.no_weight_gradients() if off else contextlib.nullcontext():
            (g,) = torch.autograd.grad(loss, [xr], create_graph=True)
        return (g, *torch.autograd.grad(g.square().sum(), list(D.parameters())))

    for a, b in zip(penalty(False), penalty(True)):
        assert torch.equal(a, b)
    if name != "torch":  # (the reference path is ATen's ops, which compute what a grad call asks for)
        with fastgan.no_weight_gradients():
            with pytest.raises(RuntimeError, match="not have been used"):
                torch.autograd.grad(D(x).sum(), [D[0].weight])
    with pytest.raises(ZeroDivisionError):
        with fastgan.no_weight_gradients():
            1 / 0
    D(x).sum().backward()
    assert all(p.grad is not None for p in D.parameters())
    # a weight / bias computed from the input (a modulated layer) keeps its gradient: it reaches the input
    xs = torch.randn(4, 6, device=dev, requires_grad=True)
    w, b = torch.randn(5, 6, device=dev), torch.randn(5, device=dev)
    out = lambda: FF.linear(xs, w * xs.mean(), b * xs.sum(), act="lrelu").square().sum()  # noqa: E731
    want = torch.autograd.grad(out(), xs)[0]
    with fastgan.no_weight_gradients():
        got = torch.autograd.grad(out(), xs)[0]
    torch.testing.assert_close(got, want)


def test_no_weight_gradients_launches():
    """The first-order gradient inside the context launches the input-gradient GEMMs only (no weight-gradient parts,
    no head weight-gradient launch)."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    from fastgan import _ext
    torch.manual_seed(0)
    conv, fc = fastgan.nn.FusedConv2d(8, 16, 3, 2, 1, act="lrelu"), fastgan.nn.FusedLinear(16 * 4 * 4, 8)
    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    with fastgan.use_impl("emu"):
        out = fc(conv(x).flatten(1)).sum()
        _ext.C.emu_launch_log(True)
        with fastgan.no_weight_gradients():
            torch.autograd.grad(out, [x], create_graph=True)
        assert _ext.C.emu_launch_log(False) == ["dense_gemm", "conv2d_gemm (forward / backward data)"]


def test_bce_reference_equals_torch():
    """The oracle itself: fastgan.reference.sigmoid_bce equals torch's op for every argument combination."""
    from fastgan import reference
    x, t = rnd(9, 4, dtype=torch.float64, scale=5), torch.rand(9, 4, dtype=torch.float64)
    w, p = torch.rand(4, dtype=torch.float64) + 0.5, torch.rand(4, dtype=torch.float64) + 0.5
    for red in ("none", "mean", "sum"):
        for kw in ({}, {"weight": w}, {"pos_weight": p}, {"weight": w, "pos_weight": p}):
            ref = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction=red, **kw)
            got = reference.sigmoid_bce(x, t, 0.0, kw.get("weight"), kw.get("pos_weight"), red)
            assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_transcendental_forward_elementwise_accuracy(impl, act):
    """float32 sigmoid and tanh to within 4 units of 2^-24 relative error at every point (not just against the
    tensor's largest value) over [-20, 20], tiny magnitudes down to 1e-30 and the branch points (results in the
    subnormal range: within 8 subnormal steps); exact special values. The CPU loops use their own vectorised exp and
    tanh (csrc/cpu/cpu_math.h, bias_act.cpp). On a GPU the kernels call CUDA's expf / tanhf, documented to within
    2 ulp (<= 4 units of 2^-24): sigmoid's e / (1 + e) adds 1 + e's and the division's roundings, <= 6 units."""
    _, dev = impl
    bound = 6 if dev.type == "cuda" else 4
    x = torch.cat([torch.linspace(-20, 20, 400001), torch.logspace(-30, 0, 2001), -torch.logspace(-30, 0, 2001),
                   torch.tensor([0.625, -0.625, 0.62499994, -0.62499994, 88.5, -88.5, -103.0])]).float().to(dev)
    y = FF.bias_act(x, None, act=act)
    ref = getattr(torch, act)(x.double().cpu())
    err = (y.double().cpu() - ref).abs()
    normal = ref.abs() >= 2.0 ** -126  # below: float32 subnormals, judged by absolute error
    rel = (err / ref.abs())[normal]
    assert rel.max().item() <= bound * 2.0 ** -24, (act, rel.max().item(), x.cpu()[normal][rel.argmax()].item())
    assert err[~normal].max().item() <= 2.0 ** -146 if (~normal).any() else True
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")], device=dev)
    got = FF.bias_act(special, None, act=act).cpu()
    want = getattr(torch, act)(special.cpu())
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    ok = ~torch.isnan(want)
    assert torch.equal(got[ok], want[ok]) and torch.equal(torch.signbit(got[ok]), torch.signbit(want[ok])), got


# ------------------------------------------------------------------------------------------------------ Adam
def _adam_params(dtype, device, channels_last=False):
    shapes = [(7, 5), (3,), (0,), (4, 3, 3, 3), (1000,)]
    ps = [torch.randn(s, dtype=torch.float64).to(dtype).to(device) for s in shapes]
    if channels_last:
        ps[3] = ps[3].contiguous(memory_format=torch.channels_last)
    return [p.requires_grad_() for p in ps]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_torch(impl, dtype, wd):
    """fastgan.optim.Adam against torch.optim.Adam, five steps with growing gradients, every implementation: the
    one-launch kernel (emu, CUDA) to rounding, torch's own step where the kernel does not apply (the CPU, the
    reference) bit for bit; the step counters advance on the parameters' device, empty tensors included."""
    from fastgan.optim import Adam
    name, dev = impl
    kernel = name == "emu" or dev.type == "cuda"
    half = dtype in (torch.float16, torch.bfloat16)
    ours = _adam_params(dtype, dev, channels_last=True)
    ref = [p.detach().clone().requires_grad_() for p in ours]
    kw = dict(lr=1e-2, betas=(0.5, 0.99), eps=1e-6, weight_decay=wd)
    o_ours, o_ref = Adam(ours, **kw), torch.optim.Adam(ref, **kw)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ref]
    for s in range(5):
        for p, q in zip(ours, ref):
            p.grad = torch.randn_like(p) * (s + 1)
            q.grad = p.grad.clone()
        o_ours.step()
        if kernel and half:  # the kernel's algorithm: float arithmetic, state stored in the parameters' dtype
            with torch.no_grad():
                for q, (m, v) in zip(ref, moments):
                    b1, b2 = kw["betas"]
                    P, G = q.float(), q.grad.float() + kw["weight_decay"] * q.float()
                    M, V = b1 * m.float() + (1 - b1) * G, b2 * v.float() + (1 - b2) * G * G
                    bc1, bc2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
                    q.copy_(P - kw["lr"] / bc1 * M / (V.sqrt() / math.sqrt(bc2) + kw["eps"]))
                    m.copy_(M)
                    v.copy_(V)
        else:
            o_ref.step()
    tol = {torch.float32: 1e-6, torch.float64: 1e-13, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    for p, q in zip(ours, ref):
        if kernel:
            torch.testing.assert_close(p.detach().double(), q.detach().double(), rtol=tol, atol=tol)
        else:
            assert torch.equal(p, q)
        st = o_ours.state[p]
        assert st["step"].item() == 5 and (not kernel or st["step"].device == p.device)
        assert st["exp_avg"].stride() == p.stride()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adam_ema_in_the_update(impl, dtype):
    """fastgan.optim.Adam's ``ema``: after each step every updated parameter's average moves toward it,
    ema = lerp(ema, p, 1 - beta_t), beta_t = min(ema_beta, (1 + t) / (10 + t)), t that parameter's own step count
    (ema_beta 0.3: the ramp at t = 1, 2, ema_beta at t = 3: three different weights); in the update's launch on the
    kernel path (to rounding), torch._foreach_lerp_ after torch's step otherwise (bit for bit). A parameter without
    a gradient keeps its average and its count (parameter 1 skips the second step, so its third is its t = 2)."""
    from fastgan.optim import Adam
    name, dev = impl
    kernel = name == "emu" or dev.type == "cuda"
    ps = _adam_params(dtype, dev, channels_last=True)
    emas = [torch.randn_like(p, dtype=torch.float64).to(dtype).detach() for p in ps]
    want = [e.clone() for e in emas]
    count = [0] * len(ps)
    opt = Adam(ps, lr=1e-2, ema=emas, ema_beta=0.3)
    for s in range(3):
        for i, p in enumerate(ps):
            p.grad = None if i == 1 and s == 1 else torch.randn_like(p)
        opt.step()
        with torch.no_grad():
            for i, p in enumerate(ps):
                if p.grad is not None:
                    count[i] += 1
                    t = count[i]
                    torch._foreach_lerp_([want[i]], [p.detach()], 1 - min(0.3, (1 + t) / (10 + t)))
    tol = {torch.float32: 1e-6, torch.float64: 1e-13, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    for e, w_ in zip(emas, want):
        if kernel:
            torch.testing.assert_close(e.double(), w_.double(), rtol=tol, atol=tol, equal_nan=True)
        else:  # (torch's half Adam on the CPU can step a parameter to inf: its average is then NaN in both)
            torch.testing.assert_close(e, w_, rtol=0, atol=0, equal_nan=True)
    assert [opt.state[p]["step"].item() for p in ps] == count == [3, 2, 3, 3, 3]


def test_adam_ema_errors():
    """Bad ``ema`` arguments: clear errors naming the argument, from the optimiser and from the op."""
    from fastgan.optim import Adam
    ps = [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"ema: expected one tensor per parameter \(2\), got 1"):
        Adam(ps, ema=[torch.zeros(3)])
    with pytest.raises(ValueError, match=r"ema\[1\]: expected a tensor of parameter 1's shape \(2, 2\)"):
        Adam(ps, ema=[torch.zeros(3), torch.zeros(4)])
    with pytest.raises(ValueError, match=r"ema\[0\]: expected a tensor of its own, got the memory of parameter 0"):
        Adam(ps, ema=[ps[0], torch.zeros(2, 2)])
    other = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"ema\[0\]: expected a tensor of its own, got the memory of parameter 2"):
        Adam([{"params": ps}, {"params": [other]}], ema=[other.detach(), torch.zeros(2, 2), torch.zeros(3)])
    shared = torch.zeros(3)
    with pytest.raises(ValueError, match=r"ema\[1\]: expected a tensor of its own, got the memory of ema\[0\]"):
        Adam([ps[0], other], ema=[shared, shared])
    with pytest.raises(ValueError, match=r"ema_beta: expected a number in \[0, 1\)"):
        Adam(ps, ema=[torch.zeros(3), torch.zeros(2, 2)], ema_beta=1.0)
    p, g, m, v, s = torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(())
    with pytest.raises(ValueError, match=r"ema: expected one tensor per parameter \(1\), got 0"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0, [], 0.9)
    with pytest.raises(ValueError, match=r"ema_beta: expected a number in \[0, 1\)"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0, [torch.zeros(3)], -0.5)
    with pytest.raises(ValueError, match=r"ema\[0\]: expected the shape"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0, [torch.zeros(4)], 0.9)
    with pytest.raises(ValueError, match=r"ema\[0\]: a tensor written twice"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0, [p], 0.9)
    with pytest.raises(ValueError, match=r"grads\[0\]: shares memory with a tensor the op writes"):
        torch.ops.fastgan.adam_([p], [m], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert s.item() == 0.0  # nothing ran


def test_adam_op_cpu_kernel_and_errors():
    """torch.ops.fastgan.adam_ directly: the C++ CPU kernel and the emulated CUDA kernel agree, across launches of
    up to 32 tensors and of two dtypes; bad arguments are clear errors naming the argument."""
    torch.manual_seed(0)
    shapes = [(i % 5 + 1, 3) for i in range(40)]
    dtypes = [torch.float32 if i < 35 else torch.float64 for i in range(40)]

    def state():
        ps = [torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)]
        return ps, [torch.randn_like(p) for p in ps], [torch.rand_like(p) for p in ps], \
            [torch.rand_like(p) for p in ps], [torch.full((), 3.0) for _ in ps], [torch.randn_like(p) for p in ps]
    a, b = state(), None
    torch.manual_seed(0)
    b = state()
    ema0 = [e.clone() for e in a[5]]
    torch.ops.fastgan.adam_(*a[:5], 1e-3, 0.9, 0.999, 1e-8, 0.01, a[5], 0.5)
    for e0, e, p in zip(ema0, a[5], a[0]):  # t = 4: beta = min(0.5, 5 / 14)
        torch.testing.assert_close(e, torch.lerp(e0, p, 1 - 5 / 14), rtol=1e-6, atol=1e-7)
    if "emu" in fastgan.available_impls():
        with fastgan.use_impl("emu"):
            torch.ops.fastgan.adam_(*b[:5], 1e-3, 0.9, 0.999, 1e-8, 0.01, b[5], 0.5)
        for xs, ys in zip(a, b):
            for x, y in zip(xs, ys):
                torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert all(s.item() == 4.0 for s in a[4])
    p, g = torch.zeros(3), torch.zeros(3)
    m, v, s = torch.zeros(3), torch.zeros(3), torch.zeros(())
    with pytest.raises(ValueError, match="grads, exp_avgs, exp_avg_sqs and steps: expected lists of one length"):
        torch.ops.fastgan.adam_([p], [], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"grads\[0\]: expected the shape"):
        torch.ops.fastgan.adam_([p], [torch.zeros(4)], [m], [v], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"steps\[0\]: expected one float32 element"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [torch.zeros((), dtype=torch.float64)], 1e-3, 0.9, 0.999, 1e-8,
                                0.0)
    with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], -1.0, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"beta1: expected a number in \[0, 1\)"):
        torch.ops.fastgan.adam_([p], [g], [m], [v], [s], 1e-3, 1.0, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"params\[0\]: expected a dense tensor"):
        torch.ops.fastgan.adam_([torch.zeros(3, 2)[:, 0]], [torch.zeros(3, 2)[:, 0]], [torch.zeros(3, 2)[:, 0]],
                                [torch.zeros(3, 2)[:, 0]], [s], 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert s.item() == 0.0  # nothing ran


def test_adam_state_dict_and_versions():
    """fastgan.optim.Adam keeps torch's state format: a torch.optim.Adam state loads into it (step counters moved to
    the kernel's layout) and training continues as torch's would; an updated parameter's version advances, so a
    graph that saved it fails in backward instead of using the new values."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    from fastgan.optim import Adam
    ps = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    t1, t2 = torch.optim.Adam(ps, lr=0.1), torch.optim.Adam(qs, lr=0.1)
    for p, q in zip(ps, qs):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    t1.step()
    t2.step()
    ours = Adam(qs, lr=0.1)
    ours.load_state_dict(t2.state_dict())
    with fastgan.use_impl("emu"):
        for _ in range(3):
            for p, q in zip(ps, qs):
                p.grad = torch.randn_like(p)
                q.grad = p.grad.clone()
            t1.step()
            ours.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
    assert ours.state[qs[0]]["step"].item() == 4
    assert torch.optim.Adam(ps, lr=0.1).load_state_dict(ours.state_dict()) is None  # and back
    w = torch.randn(3, requires_grad=True)
    y = (w * w).sum()  # saves w
    opt = Adam([w], lr=0.1)
    w.grad = torch.ones(3)
    with fastgan.use_impl("emu"):
        opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_adam_ema_skips_the_steps_gradscaler_skips(device):
    """GradScaler with fused=True hands found_inf to the step: on an inf step torch's fused step leaves the
    parameters (and step counters) as they were, and the EMA copies do not move either; the next step moves both."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from fastgan.optim import Adam
    p = torch.nn.Parameter(torch.randn(3, device=device))
    e = p.detach() + 1
    opt = Adam([p], lr=0.1, fused=True, ema=[e], ema_beta=0.5)
    p.grad = torch.ones(3, device=device)
    opt.grad_scale = torch.ones((), device=device)
    for inf in (1.0, 0.0):
        opt.found_inf = torch.full((), inf, device=device)
        p0, e0 = p.detach().clone(), e.clone()
        opt.step()
        assert torch.equal(p, p0) == torch.equal(e, e0) == bool(inf), inf


def test_adam_falls_back_and_guards():
    """fastgan.optim.Adam's edges: the closure runs before the applicability checks; a GradScaler driving a fused
    optimiser (grad_scale / found_inf handed to the step) gets torch's fused step, which honours them; weight decay 0
    adds no 0 x inf; step hooks run once on torch's path; a repeated step counter is refused."""
    if "emu" not in fastgan.available_impls():
        pytest.skip("needs the emulated CUDA kernels")
    from fastgan.optim import Adam
    p = torch.tensor([float("inf"), 1.0, -2.0], requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, ref = Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)
    calls = []
    ours.register_step_pre_hook(lambda *a: calls.append(1))

    def closure():
        p.grad = torch.tensor([1.0, -1.0, 0.5])
        return torch.tensor(3.0)
    with fastgan.use_impl("emu"):
        assert ours.step(closure).item() == 3.0  # the kernel path, with the closure's gradient
    q.grad = torch.tensor([1.0, -1.0, 0.5])
    ref.step()
    assert torch.isfinite(ours.state[p]["exp_avg"]).all() and torch.isfinite(ours.state[p]["exp_avg_sq"]).all()
    torch.testing.assert_close(p.detach(), q.detach())
    ours.step()  # the CPU without emu: torch's step, hooks once
    assert len(calls) == 2
    # GradScaler with fused=True: torch's fused step unscales and skips inf steps; ours hands it over
    for inf_grad in (False, True):
        a = torch.randn(5, requires_grad=True)
        b = a.detach().clone().requires_grad_()
        oa, ob = Adam([a], lr=0.1, fused=True), torch.optim.Adam([b], lr=0.1, fused=True)
        for x, opt in ((a, oa), (b, ob)):
            scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
            scaler.scale(x.detach().sum())  # (makes the scale)
            x.grad = torch.full((5,), float("inf") if inf_grad else 1024.0)
            with fastgan.use_impl("emu"):
                scaler.step(opt)
        assert torch.equal(a, b)
    s = torch.zeros(())
    with pytest.raises(ValueError, match=r"steps\[1\]: the same step counter appears twice"):
        torch.ops.fastgan.adam_([torch.zeros(2), torch.zeros(2)], [torch.zeros(2)] * 2,
                                [torch.zeros(2), torch.zeros(2)], [torch.zeros(2), torch.zeros(2)], [s, s], 1e-3,
                                0.9, 0.999, 1e-8, 0.0)
    m = torch.zeros(2)
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\]: a tensor written twice"):
        torch.ops.fastgan.adam_([torch.zeros(2)], [torch.zeros(2)], [m], [m], [torch.zeros(())], 1e-3, 0.9, 0.999,
                                1e-8, 0.0)


# ------------------------------------------------------------------------------------ CUDA: the ATen route
ATEN_ROUTE_CASES = {
    "linear": (lambda x, w, b: FF.linear(x, w, b, act="lrelu", alpha=0.2), (5, 7), (4, 7)),
    "conv2d_strided": (lambda x, w, b: FF.conv2d(x, w, b, stride=2, padding=1, act="sigmoid"), (2, 3, 7, 6),
                       (4, 3, 3, 3)),
    "conv2d_one_channel": (lambda x, w, b: FF.conv2d(x, w, b, padding=1, act="lrelu"), (2, 1, 6, 6), (5, 1, 3, 3)),
    "conv_transpose2d": (lambda x, w, b: FF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                                             act="tanh"), (1, 2, 4, 4), (2, 3, 3, 3)),
}


@pytest.mark.skipif(not torch.cuda.is_available() or not _ext.has_cuda(), reason="needs CUDA and fastgan's kernels")
@pytest.mark.parametrize("case", list(ATEN_ROUTE_CASES))
def test_cuda_aten_route_matches_reference(case):
    """fastgan.cuda_gemm_route("aten"): cuBLAS / cuDNN products + fastgan's epilogue passes (what "auto" takes for
    large or badly tiled products, and what no other test reaches at its small shapes): float32 forward + backward
    against the float64 reference, and gradcheck / gradgradcheck in float64 (the R1 path's double backward)."""
    fn, xs, ws = ATEN_ROUTE_CASES[case]
    dev = torch.device("cuda")
    with fastgan.use_impl("native"), fastgan.cuda_gemm_route("aten"):
        x, w = rnd(*xs, device=dev, requires_grad=True), rnd(*ws, device=dev, scale=0.3, requires_grad=True)
        b = rnd(w.shape[1] if case == "conv_transpose2d" else w.shape[0], device=dev, requires_grad=True)
        check_fwd_bwd(fn, [x, w, b], torch.float32, f"aten route {case}")
        x, w, b = (t.detach().double().requires_grad_() for t in (x, w, b))
        # (cuDNN deterministic: gradcheck compares two backward runs exactly)
        with torch.backends.cudnn.flags(enabled=True, deterministic=True, benchmark=False):
            assert torch.autograd.gradcheck(fn, (x, w, b))
            assert torch.autograd.gradgradcheck(fn, (x, w, b))


# ------------------------------------------------------------------------------------ programmatic dependent launch
@pytest.mark.skipif(not torch.cuda.is_available() or not fastgan._ext.has_cuda()
                    or torch.cuda.get_device_capability() < (9, 0),
                    reason="needs an sm_90+ CUDA device and fastgan's CUDA kernels")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_cuda_pdl_same_bits(graph):
    """fastgan.cuda_pdl(True) only overlaps the launches (every kernel waits for its predecessor before touching
    memory): a chain of dependent fused ops (convolutions, linear layers, the head + loss op, their backward, the
    Adam step), replayed many times eagerly or in a CUDA graph, gives the same bits as without it, and its launches
    did carry the attribute (the graph case is where kernels overlap: eager launches are host-bound)."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    lrelu = dict(act="lrelu", alpha=0.2)
    model = torch.nn.Sequential(
        fastgan.nn.FusedConv2d(1, 16, 3, 2, 1, **lrelu), fastgan.nn.FusedConv2d(16, 32, 3, 2, 1, **lrelu),
        torch.nn.Flatten(), fastgan.nn.FusedLinear(32 * 7 * 7, 64, **lrelu)).to(dev)
    head = torch.nn.Linear(64, 1).to(dev)
    params = [*model.parameters(), *head.parameters()]
    start = [p.detach().clone() for p in params]
    x = torch.randn(32, 1, 28, 28, device=dev)
    C = fastgan._ext.C

    def run(pdl):
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0)
        opt = fastgan.optim.Adam(params, lr=1e-3, fused=True, capturable=True)

        def step():
            opt.zero_grad(set_to_none=False)
            # the first convolution right after a copy (a memcpy node, not a kernel, in the graph: a programmatic
            # edge is defined between kernels only, so the capture must fall back to a full dependency there)
            FF.linear_bce_with_logits(model(x.clone()), head.weight, head.bias, 1.0)[0].backward()
            opt.step()
        launches = C.cuda_pdl_launches()
        with fastgan.cuda_pdl(pdl), fastgan.cuda_gemm_route("kernels"):
            step()  # warm-up / allocations
            if graph:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    step()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    step()
                for _ in range(50):
                    g.replay()
            else:
                for _ in range(20):
                    step()
        torch.cuda.synchronize()
        assert (C.cuda_pdl_launches() > launches) == pdl
        return [p.detach().clone() for p in params]

    off, on = run(False), run(True)
    for i, (a, b) in enumerate(zip(off, on)):
        assert torch.equal(a, b), i
