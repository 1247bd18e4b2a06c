"""Property tests (hypothesis): random shapes, strides, dtypes, activations and arguments; every compiled
implementation (``emu`` = the CUDA kernel sources under CPU emulation, ``native`` = C++/ATen on CPU, and
``native`` on CUDA when a GPU is present) against the float64 reference, forward and gradients.

Shapes deliberately include the edge cases of the GEMM kernels: M, N or K equal to 1, sizes that are not
multiples of the tiles (64, 128, k-tile 16), empty batches, the skinny products served by the dot kernel
(min(M, N) <= 8 with K >= 128), split-K (few output tiles, K >= 256), the 128-wide tile (>= 132 output tiles),
non-contiguous and channels_last operands, and misaligned (not 16-byte aligned) bias_act inputs.

Upstream gradients are zeroed where the reference pre-activation sits within a hair of a kink (relu / lrelu at
0, the clamp bound): there a rounding difference legitimately flips the derivative, which is not a bug.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgan
import fastgan.functional as FF
from fastgan import _ext
from helpers import TOL, assert_close, reference

ACTS = ["linear", "relu", "lrelu", "sigmoid", "tanh"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _impls():
    out = []
    for name, dev in (("emu", "cpu"), ("native", "cpu"), ("native", "cuda")):
        marks = []
        if name not in fastgan.available_impls():
            marks.append(pytest.mark.skip(reason=f"impl {name} unavailable"))
        elif dev == "cuda" and not (torch.cuda.is_available() and _ext.has_cuda()):
            marks.append(pytest.mark.skip(reason="no CUDA device or no CUDA kernels"))
        out.append(pytest.param((name, dev), id=f"{name}-{dev}", marks=marks))
    return out


IMPLS = _impls()

sizes = st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 31, 33, 63, 64, 65, 127, 129]))
ksizes = st.one_of(st.integers(1, 40), st.sampled_from([16, 17, 128, 130, 255, 256, 300, 520]))


def _tol_factor(dtype):
    return 1.0 if dtype in (torch.float32, torch.float64) else 2.0


def _act_kwargs(draw, dtype, act):
    kw = {"act": act}
    if act == "lrelu":
        kw["alpha"] = draw(st.sampled_from([0.0, 0.2, 0.37]))
    kw["gain"] = draw(st.sampled_from([1.0, math.sqrt(2), 0.5]))
    if dtype in (torch.float32, torch.float64) and draw(st.booleans()):
        kw["clamp"] = draw(st.sampled_from([0.3, 1.0, 2.5]))
    return kw


def _grad_mask(z, act, kw):
    """1 where the derivative is stable under rounding, 0 within a hair of a kink (see module docstring)."""
    scale = z.abs().max().item() if z.numel() else 1.0
    eps = 1e-3 * max(scale, 1e-30)
    keep = torch.ones_like(z, dtype=torch.bool)
    if act in ("relu", "lrelu"):
        keep &= z.abs() > eps
    clamp = kw.get("clamp")
    if clamp is not None:
        alpha = kw.get("alpha", 0.2)
        y = reference(lambda t: FF.bias_act(t, None, act=act, alpha=alpha if act == "lrelu" else None,
                                            gain=kw.get("gain", 1.0)), z)
        keep &= (y.abs() - clamp).abs() > 1e-3 * max(clamp, 1e-3)
    return keep.to(z.dtype)


def _layout(t: torch.Tensor, kind: str):
    """t's values in a layout: contiguous, transposed storage, a strided slice, or channels_last (4-D)."""
    if kind == "contiguous":
        return t.contiguous()
    if kind == "channels_last" and t.ndim == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "transposed" and t.ndim >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    # strided slice: every other element along the last dim of a bigger buffer
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype, device=t.device)
    big[..., 1::2] = t
    return big[..., 1::2]


def _check_grads(out, ref, ins, ref_ins, g, dtype, what):
    diff = [(a, b) for a, b in zip(ins, ref_ins) if isinstance(a, torch.Tensor) and a.requires_grad]
    if not diff or out.numel() == 0:
        return
    grads = torch.autograd.grad(out, [a for a, _ in diff], g.to(dtype).to(out.device), allow_unused=True)
    ref_grads = torch.autograd.grad(ref, [b for _, b in diff], g.to(dtype).double(), allow_unused=True)
    for i, (gr, rg) in enumerate(zip(grads, ref_grads)):
        if rg is None:
            continue
        assert gr is not None, f"{what}: no gradient for input {i}"
        assert_close(gr, rg, dtype, f"{what} grad of input {i}", 2 * _tol_factor(dtype))


def _rnd(shape, dtype, dev, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype).to(dev)


# --------------------------------------------------------------------------------------------------- dense
@st.composite
def dense_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    act = draw(st.sampled_from(ACTS))
    M = draw(st.one_of(st.just(0), sizes))
    N = draw(st.one_of(st.just(1), sizes))
    K = draw(ksizes)
    lead = [M] if draw(st.booleans()) or M == 0 else [draw(st.integers(1, 3)), M]
    return dict(dtype=dtype, act=act, lead=lead, N=N, K=K, kw=_act_kwargs(draw, dtype, act),
                x_layout=draw(st.sampled_from(["contiguous", "transposed", "sliced"])),
                w_layout=draw(st.sampled_from(["contiguous", "transposed", "sliced"])),
                bias=draw(st.booleans()), need=draw(st.sampled_from([(True, True), (True, False), (False, True)])))


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=dense_cases())
def test_dense_property(impl, case):
    name, dev = impl
    dtype, N, K = case["dtype"], case["N"], case["K"]
    x = _layout(_rnd((*case["lead"], K), dtype, dev), case["x_layout"])
    w = _layout(_rnd((N, K), dtype, dev, scale=1 / math.sqrt(K)), case["w_layout"])
    b = _rnd((N,), dtype, dev) if case["bias"] else None
    x.requires_grad_(case["need"][0])
    w.requires_grad_(case["need"][1])
    if b is not None:
        b.requires_grad_()
    kw = case["kw"]
    ins = [x, w, b]
    ref_ins = [t.detach().cpu().double().requires_grad_(t.requires_grad) if t is not None else None for t in ins]
    with fastgan.use_impl(name):
        out = FF.linear(x, w, b, **kw)
    ref = reference(lambda x, w, b: FF.linear(x, w, b, **kw), *ref_ins)
    what = f"dense {case}"
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, what, _tol_factor(dtype))
    z = ref_ins[0].detach() @ ref_ins[1].detach().T + (ref_ins[2].detach() if b is not None else 0)
    g = torch.randn(out.shape, dtype=torch.float64) * _grad_mask(z, case["act"], kw)
    _check_grads(out, ref, ins, ref_ins, g, dtype, what)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("M, N, K", [
    (128, 1, 2048),   # GAN head: dot kernel
    (1, 784, 256),    # batch 1: dot kernel
    (64, 64, 4096),   # 1 output tile, long K: split-K (32 splits of 128)
    (130, 70, 600),   # split-K (4 splits) with ragged tiles and a ragged last split
    (1536, 1408, 8),  # 12 x 11 = 132 tiles of 128: the 128 tile
    (1537, 1409, 19),  # the 128 tile with ragged edges and k tail
], ids=["head", "batch1", "splitk", "splitk_ragged", "tile128", "tile128_ragged"])
def test_dense_kernel_paths(impl, M, N, K):
    """Shapes chosen to land on each kernel path of the dense plan (csrc/kernels/dense.cu)."""
    name, dev = impl
    x = _rnd((M, K), torch.float32, dev)
    w = _rnd((N, K), torch.float32, dev, scale=1 / math.sqrt(K))
    b = _rnd((N,), torch.float32, dev)
    for t in (x, w, b):
        t.requires_grad_()
    with fastgan.use_impl(name):
        out = FF.linear(x, w, b, act="lrelu", alpha=0.2, gain=math.sqrt(2))
    ref_ins = [t.detach().double().cpu().requires_grad_() for t in (x, w, b)]
    ref = reference(lambda x, w, b: FF.linear(x, w, b, act="lrelu", alpha=0.2, gain=math.sqrt(2)), *ref_ins)
    assert_close(out, ref, torch.float32, "dense forward")
    z = ref_ins[0].detach() @ ref_ins[1].detach().T + ref_ins[2].detach()
    g = torch.randn(out.shape, dtype=torch.float64) * _grad_mask(z, "lrelu", {})
    _check_grads(out, ref, [x, w, b], ref_ins, g, torch.float32, f"dense {M}x{N}x{K}")


# -------------------------------------------------------------------------------------------------- conv2d
@st.composite
def conv_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    act = draw(st.sampled_from(ACTS))
    groups = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    kh, kw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - 2 * pad[0]), 11))
    W = draw(st.integers(max(1, dil[1] * (kw_ - 1) + 1 - 2 * pad[1]), 11))
    n = draw(st.sampled_from([0, 1, 2, 3]))
    return dict(dtype=dtype, act=act, groups=groups, x=(n, cin_g * groups, H, W), w=(cout_g * groups, cin_g, kh, kw_),
                stride=stride, padding=pad, dilation=dil, kw=_act_kwargs(draw, dtype, act),
                x_layout=draw(st.sampled_from(["contiguous", "channels_last", "sliced"])),
                w_layout=draw(st.sampled_from(["contiguous", "channels_last"])),
                bias=draw(st.booleans()), need=draw(st.sampled_from([(True, True), (True, False), (False, True)])))


def _run_conv(impl, case):
    name, dev = impl
    dtype = case["dtype"]
    x = _layout(_rnd(case["x"], dtype, dev), case["x_layout"])
    fan_in = case["w"][1] * case["w"][2] * case["w"][3]
    w = _layout(_rnd(case["w"], dtype, dev, scale=1 / math.sqrt(fan_in)), case["w_layout"])
    b = _rnd((case["w"][0],), dtype, dev) if case["bias"] else None
    x.requires_grad_(case["need"][0])
    w.requires_grad_(case["need"][1])
    if b is not None:
        b.requires_grad_()
    kw = dict(case["kw"])
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    ins = [x, w, b]
    ref_ins = [t.detach().cpu().double().requires_grad_(t.requires_grad) if t is not None else None for t in ins]
    with fastgan.use_impl(name):
        out = FF.conv2d(x, w, b, **conv, **kw)
    ref = reference(lambda x, w, b: FF.conv2d(x, w, b, **conv, **kw), *ref_ins)
    what = f"conv2d {case}"
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, what, _tol_factor(dtype))
    z = torch.nn.functional.conv2d(ref_ins[0].detach(), ref_ins[1].detach(),
                                   ref_ins[2].detach() if b is not None else None, **conv)
    g = torch.randn(out.shape, dtype=torch.float64) * _grad_mask(z, case["act"], kw)
    _check_grads(out, ref, ins, ref_ins, g, dtype, what)


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=conv_cases())
def test_conv2d_property(impl, case):
    _run_conv(impl, case)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [
    # seed GAN discriminator layers at batch 8 (split-K: conv1's weight gradient, conv3's forward)
    dict(x=(8, 1, 28, 28), w=(32, 1, 3, 3), stride=(2, 2), padding=(1, 1)),
    dict(x=(8, 32, 14, 14), w=(64, 32, 3, 3), stride=(2, 2), padding=(1, 1)),
    dict(x=(8, 64, 7, 7), w=(128, 64, 3, 3), stride=(2, 2), padding=(1, 1)),
    # 132 groups: 132 output tiles of 128, the 128 tile for forward, dgrad and wgrad
    dict(x=(2, 264, 5, 5), w=(264, 2, 3, 3), stride=(1, 1), padding=(1, 1), groups=132),
    # strided backward data with dilation and an input edge that no output reads (output_padding case)
    dict(x=(2, 3, 12, 11), w=(4, 3, 3, 2), stride=(3, 2), padding=(0, 1), dilation=(2, 3)),
], ids=["seed1", "seed2", "seed3", "groups132", "strided_dgrad"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_kernel_paths(impl, case, layout):
    c = {"dilation": (1, 1), "groups": 1, **case}
    _run_conv(impl, dict(dtype=torch.float32, act="lrelu", kw={"act": "lrelu", "alpha": 0.2, "gain": math.sqrt(2)},
                         x_layout=layout, w_layout=layout, bias=True, need=(True, True), **c))


# ------------------------------------------------------------------------------------------------ bias_act
@st.composite
def bias_act_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    act = draw(st.sampled_from(ACTS))
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.one_of(st.integers(1, 7), st.sampled_from([0, 16, 33]))) for _ in range(ndim)]
    if draw(st.booleans()):  # a larger tensor: vector body + scalar tail, several blocks
        shape[-1] = draw(st.integers(100, 3000))
    return dict(dtype=dtype, act=act, shape=shape, dim=draw(st.integers(0, ndim - 1)),
                kw=_act_kwargs(draw, dtype, act), bias=draw(st.booleans()),
                layout=draw(st.sampled_from(["contiguous", "channels_last", "transposed", "sliced", "misaligned"])))


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=bias_act_cases())
def test_bias_act_property(impl, case):
    name, dev = impl
    dtype, shape, dim = case["dtype"], case["shape"], case["dim"]
    x = _rnd(shape, dtype, dev, scale=2.0)
    if case["layout"] == "misaligned":  # storage offset of one element: not 16-byte aligned
        buf = torch.empty(x.numel() + 1, dtype=dtype, device=dev)
        buf[1:] = x.reshape(-1)
        x = buf[1:].view(shape)
    else:
        x = _layout(x, case["layout"])
    b = _rnd((shape[dim],), dtype, dev) if case["bias"] else None
    x.requires_grad_()
    if b is not None:
        b.requires_grad_()
    kw = case["kw"]
    ins = [x, b]
    ref_ins = [t.detach().cpu().double().requires_grad_() if t is not None else None for t in ins]
    with fastgan.use_impl(name):
        out = FF.bias_act(x, b, dim=dim, **kw)
    ref = reference(lambda x, b: FF.bias_act(x, b, dim=dim, **kw), *ref_ins)
    what = f"bias_act {case}"
    assert_close(out, ref, dtype, what, _tol_factor(dtype))
    z = ref_ins[0].detach()
    if b is not None:
        shp = [1] * len(shape)
        shp[dim] = -1
        z = z + ref_ins[1].detach().reshape(shp)
    g = torch.randn(out.shape, dtype=torch.float64) * _grad_mask(z, case["act"], kw)
    _check_grads(out, ref, ins, ref_ins, g, dtype, what)


# ------------------------------------------------------------------------------------------ sigmoid + BCE
@st.composite
def bce_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = [draw(st.one_of(st.integers(1, 9), st.just(0))) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):  # one large dimension (several reduction blocks), the others small
        shape = [min(d, 2) for d in shape]
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from([257, 1500, 70001]))
    return dict(dtype=dtype, shape=shape, reduction=draw(st.sampled_from(["none", "mean", "sum"])),
                target=draw(st.sampled_from(["tensor", 1.0, 0.0, 0.9])), weight=draw(st.booleans()),
                pos_weight=draw(st.booleans()),
                # float64: |logits| < ~20, where the oracle's F.softplus (threshold=20 linearisation, error
                # e^-20 ~ 2e-9) is exact to the float64 tolerance; the kernels are exact beyond it too
                scale=draw(st.sampled_from([1.0, 3.0] if dtype == torch.float64 else [1.0, 4.0, 30.0])),
                layout=draw(st.sampled_from(["contiguous", "transposed", "sliced"])))


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=bce_cases())
def test_bce_property(impl, case):
    name, dev = impl
    dtype, shape = case["dtype"], case["shape"]
    x = _layout(_rnd(shape, dtype, dev, scale=case["scale"]), case["layout"]).requires_grad_()
    t = torch.rand(shape, dtype=torch.float64).to(dtype).to(dev) if case["target"] == "tensor" else case["target"]
    kw = {"reduction": case["reduction"]}
    if case["weight"]:
        kw["weight"] = (torch.rand(shape[-1:], dtype=torch.float64) + 0.5).to(dtype).to(dev)
    if case["pos_weight"]:
        kw["pos_weight"] = (torch.rand(shape[-1:], dtype=torch.float64) + 0.5).to(dtype).to(dev)
    ref_kw = {k: (v.double().cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    xr = x.detach().double().cpu().requires_grad_()
    tr = t.double().cpu() if isinstance(t, torch.Tensor) else t
    with fastgan.use_impl(name):
        out = FF.binary_cross_entropy_with_logits(x, t, **kw)
    ref = reference(lambda x: FF.binary_cross_entropy_with_logits(x, tr, **ref_kw), xr)
    what = f"bce {case}"
    if x.numel() == 0 and case["reduction"] == "mean":  # 0 / 0, as torch: NaN on both sides
        assert torch.isnan(out).all() and torch.isnan(ref).all(), what
        return
    if dtype == torch.float16 and ref.numel() and ref.abs().max().item() > 65504:  # overflows, as torch's
        assert torch.isinf(out[ref.abs() > 65519]).all(), what
        return
    # the loss is a sum of many terms for mean/sum: float32 accumulation order differs from float64's
    factor = _tol_factor(dtype) * (4.0 if case["reduction"] != "none" else 1.0)
    assert_close(out, ref, dtype, what, factor)
    if out.numel():
        # mean: scale the upstream gradient up (by min(numel, 1024): the scale itself must fit fp16) so dL/dx is
        # not an fp16 subnormal for big tensors, where relative error is meaningless
        g = torch.randn(out.shape, dtype=torch.float64) * (min(x.numel(), 1024) if case["reduction"] == "mean" else 1)
        _check_grads(out, ref, [x], [xr], g, dtype, what)
