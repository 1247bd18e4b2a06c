"""Defects found against outside references (torch.nn.functional, StyleGAN2-ADA / rosinality definitions), pinned
on every implementation: NaN propagation, empty and zero-channel inputs, porting traps, and the documented
differences from torch (docs/usage.md, "Differences from torch")."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fastgan
import fastgan.functional as FF
from fastgan import _activations
from helpers import tf32

ACTS = list(_activations.ACTIVATIONS)  # every activation of the one table


def _stock(act: str, z: torch.Tensor) -> torch.Tensor:
    """The activation as stock torch computes it: the table's torch.nn module (torch's own NaN handling), or z."""
    spec = _activations.get(act)
    if spec.module is None:
        return z
    return spec.module(**({spec.alpha_attr: 0.2} if spec.alpha_attr else {}))(z)


def _same_nan_mask(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a, b = a.cpu(), b.cpu()
    assert torch.equal(torch.isnan(a), torch.isnan(b)), f"{what}: NaN positions differ:\n{a}\nvs torch\n{b}"
    fin = ~torch.isnan(b)
    torch.testing.assert_close(a[fin].double(), b[fin].double(), rtol=1e-5, atol=1e-6, msg=what)


@pytest.mark.parametrize("act", ACTS)
def test_nan_propagates_through_bias_act_forward_and_backward(impl, act):
    """NaN in, NaN out, for every activation (relu turned NaN into 0); the backward at a NaN gives what torch's
    backward gives (relu passes the gradient)."""
    _, dev = impl
    x = torch.tensor([[float("nan"), -1.0, 2.0, 0.5]], device=dev).repeat(3, 1).requires_grad_()
    xs = x.detach().clone().requires_grad_()
    y = FF.bias_act(x, None, act=act, alpha=0.2, gain=1.0)
    ys = _stock(act, xs)
    _same_nan_mask(y.detach(), ys.detach(), f"{act} forward")
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gs,) = torch.autograd.grad(ys, xs, g)
    _same_nan_mask(gx, gs, f"{act} backward")


@pytest.mark.parametrize("op", ["linear", "conv2d", "conv_transpose2d"])
def test_nan_propagates_through_fused_epilogues(impl, op):
    """A fused layer + ReLU shows a diverged model's NaN as stock torch does (it hid it as 0)."""
    _, dev = impl
    if op == "linear":
        x = torch.randn(4, 3, device=dev)
        x[1, 0] = float("nan")
        w, b = torch.eye(3, device=dev), torch.zeros(3, device=dev)
        got, want = FF.linear(x, w, b, act="relu"), torch.relu(F.linear(x.cpu(), w.cpu(), b.cpu()))
    elif op == "conv2d":
        x = torch.randn(2, 2, 5, 5, device=dev)
        x[0, 1, 2, 2] = float("nan")
        w, b = torch.randn(3, 2, 3, 3, device=dev), torch.randn(3, device=dev)
        got = FF.conv2d(x, w, b, padding=1, act="relu")
        want = torch.relu(F.conv2d(x.cpu(), w.cpu(), b.cpu(), padding=1))
    else:
        x = torch.randn(2, 2, 4, 4, device=dev)
        x[1, 0, 1, 1] = float("nan")
        w, b = torch.randn(2, 3, 3, 3, device=dev), torch.randn(3, device=dev)
        got = FF.conv_transpose2d(x, w, b, stride=2, padding=1, act="relu")
        want = torch.relu(F.conv_transpose2d(x.cpu(), w.cpu(), b.cpu(), stride=2, padding=1))
    assert torch.isnan(want).any()
    _same_nan_mask(got, want, op)


def test_fused_model_shows_nan(impl):
    """A model converted by fastgan.fuse (Linear + ReLU) keeps the NaN of a diverged weight."""
    _, dev = impl
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()).to(dev)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    fused = fastgan.fuse(model)
    x = torch.randn(5, 3, device=dev)
    _same_nan_mask(fused(x).detach(), model(x).detach(), "fused Linear+ReLU")


def test_bce_empty_mean_second_derivative_is_zero(impl):
    """The mean over no elements: the first derivative is empty, and its derivative with respect to the incoming
    gradient is 0 (it was NaN: the double backward divided by n = 0)."""
    _, dev = impl
    x = torch.zeros(0, device=dev, requires_grad=True)
    gy = torch.tensor(1.0, device=dev, requires_grad=True)
    (gx,) = torch.autograd.grad(FF.binary_cross_entropy_with_logits(x, 1.0), x, gy, create_graph=True)
    (ggy,) = torch.autograd.grad(gx.sum(), gy, allow_unused=True, materialize_grads=True)
    assert ggy.item() == 0.0


def test_conv2d_without_input_channels_matches_torch(impl):
    """in_channels = 0: torch's output shape, a zero bias gradient and empty input/weight gradients, forward and
    backward, on every implementation (native's backward raised about an internal argument; emu gave the bias)."""
    _, dev = impl
    x = torch.randn(2, 0, 5, 5, device=dev, requires_grad=True)
    w = torch.randn(4, 0, 3, 3, device=dev, requires_grad=True)
    b = torch.randn(4, device=dev, requires_grad=True)
    for kw in (dict(), dict(padding=1, stride=2)):
        y = FF.conv2d(x, w, b, act="lrelu", **kw)
        ys = F.leaky_relu(F.conv2d(x, w, b, **kw), 0.2)
        assert y.shape == ys.shape, (y.shape, ys.shape)
        got = torch.autograd.grad(y.sum(), [x, w, b])
        want = torch.autograd.grad(ys.sum(), [x, w, b])
        for a, c in zip(got, want):
            assert a.shape == c.shape and torch.equal(a, c)


def test_conv2d_without_output_channels_raises_at_forward(impl):
    _, dev = impl
    x = torch.randn(2, 3, 5, 5, device=dev)
    w = torch.randn(0, 3, 3, 3, device=dev)
    with pytest.raises(ValueError, match="weight: expected at least 1 output channel"):
        FF.conv2d(x, w)
    with pytest.raises(RuntimeError):  # torch raises too
        F.conv2d(x, w)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "tf32_overflow"])
@pytest.mark.parametrize("case", ["conv_valid", "conv_padded", "conv_strided", "conv_transpose_s2"])
def test_nan_weight_does_not_reach_padding_outputs(impl, case, precision):
    """A NaN in one weight tap reaches only the outputs and gradients that tap touches with real data, as in torch:
    zero padding takes no part in products (forward, input gradient, weight gradient). With TF32 on, the CUDA
    kernels' tensor-core tiles take the same masked path; tf32_overflow: a finite weight that TF32 rounding makes
    infinite (3.40265e38) must behave like torch's with that weight infinite."""
    name, dev = impl
    if precision != "fp32" and not (name == "emu" or dev.type == "cuda"):
        pytest.skip("TF32 is a CUDA-kernel path")
    torch.manual_seed(0)
    if case == "conv_transpose_s2":
        x = torch.randn(1, 2, 4, 4, device=dev, requires_grad=True)
        w = torch.randn(2, 3, 3, 3, device=dev, requires_grad=True)
        kw = dict(stride=2)
        ours, stock = FF.conv_transpose2d, F.conv_transpose2d
    else:
        x = torch.randn(2, 2, 6, 6, device=dev, requires_grad=True)
        w = torch.randn(3, 2, 3, 3, device=dev, requires_grad=True)
        kw = {"conv_valid": {}, "conv_padded": dict(padding=1), "conv_strided": dict(stride=2, padding=1)}[case]
        ours, stock = FF.conv2d, F.conv2d
    w_stock = w.detach().clone().requires_grad_()
    with torch.no_grad():
        w[0, 1, 0, 0] = 3.40265e38 if precision == "tf32_overflow" else float("nan")
        w_stock[0, 1, 0, 0] = float("inf") if precision == "tf32_overflow" else float("nan")
    # torch's answer from the CPU: cuDNN's algorithms (FFT, Winograd, implicit GEMM over padded tiles) may multiply
    # the padding by the weights, 0 * NaN
    x_stock, w_stock = x.detach().cpu().requires_grad_(), w_stock.detach().cpu().requires_grad_()
    results = []
    for f, xf, wf in ((ours, x, w), (stock, x_stock, w_stock)):
        with tf32(precision != "fp32"):
            y = f(xf, wf, **kw)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device)
        with tf32(precision != "fp32"):
            gx, gw = torch.autograd.grad(y, (xf, wf), gy)
        results.append([torch.isfinite(t).cpu() for t in (y, gx, gw)])
    for what, a, b in zip(("output", "input gradient", "weight gradient"), *results):
        assert torch.equal(a, b), f"{what}: {int((~a).sum())} not finite, torch {int((~b).sum())}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activation_gradient_beyond_the_dtype_keeps_padding_out(impl, dtype):
    """The CUDA kernels apply act' (and the gain) to the upstream gradient as they fetch it, in float32: a product
    past the half type's range becomes inf only when rounded for the tensor cores. Such a tile must take the masked
    path like an inf, or 0 x inf on the padding taps turns the weight gradient into NaN where the float64 answer is
    finite."""
    name, dev = impl
    if not (name == "emu" or dev.type == "cuda"):
        pytest.skip("the CUDA kernels' fetch-time activation gradient")
    # float16: 30000 x 4 = 120000 > 65504; bfloat16: 2^126 x 3.998 = 3.4011e38, a float32 that rounds to inf
    big, gain = (30000.0, 4.0) if dtype == torch.float16 else (2.0 ** 126, 3.998)
    x = torch.full((1, 2, 4, 4), 0.01, dtype=torch.float64)
    w = torch.full((3, 2, 3, 3), 0.01, dtype=torch.float64)
    b = torch.ones(3, dtype=torch.float64)  # every output positive: act' = 1
    gy = torch.full((1, 3, 4, 4), 1e-3, dtype=torch.float64)
    gy[0, 0, 0, 0] = big  # the corner: five of its nine taps read padding
    gy = gy.to(dtype).double()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    want = torch.autograd.grad(F.leaky_relu(F.conv2d(xr, wr, b, padding=1), 0.2) * gain, wr, gy)[0].to(dtype)
    xf, wf = x.to(dev, dtype), w.to(dev, dtype).requires_grad_()
    y = FF.conv2d(xf, wf, b.to(dev, dtype), padding=1, act="lrelu", gain=gain)
    got = torch.autograd.grad(y, wf, gy.to(dev, dtype))[0].cpu()
    assert not torch.isnan(got).any(), got[0]
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    torch.testing.assert_close(got.double(), want.double(), rtol=2e-2, atol=1e-3)


def test_fused_leaky_relu_refuses_rosinality_positional_arguments():
    """rosinality's FusedLeakyReLU(channel, bias, negative_slope, scale): a positional bool here would have become
    the slope (1.0: a plain bias add) without a word."""
    for args in ((True,), (False,), (True, 0.2), (0.2,)):
        with pytest.raises(TypeError, match="keyword-only.*rosinality"):
            fastgan.nn.FusedLeakyReLU(8, *args)
    m = fastgan.nn.FusedLeakyReLU(8, bias=False, negative_slope=0.1, gain=2 ** 0.5)
    assert m.bias is None and m.negative_slope == 0.1 and m.gain == 2 ** 0.5


@pytest.mark.parametrize("arg", ["alpha", "gain", "clamp"])
@pytest.mark.parametrize("value", ["1", True, None])
def test_activation_arguments_must_be_numbers(arg, value):
    """clamp='1' / clamp=True were taken as 1.0; every numeric argument refuses non-numbers by name (None means
    the default, or no clamp)."""
    x = torch.randn(2, 3)
    if value is None:  # lrelu's defaults: slope 0.2, gain sqrt(2), no clamp
        torch.testing.assert_close(FF.bias_act(x, act="lrelu", **{arg: value}), F.leaky_relu(x, 0.2) * math.sqrt(2))
        return
    with pytest.raises(TypeError, match=f"{arg}: expected a number"):
        FF.bias_act(x, act="lrelu", **{arg: value})


def test_bce_infinite_values_documented_behaviour(impl):
    """Documented differences from torch (docs/usage.md, Differences from torch): the loss of a logit of -inf with
    target 1 is +inf (the true limit; torch gives NaN), and its gradient -1 (torch NaN); an infinite target or
    pos_weight gives NaN or inf as the formula does, never a finite wrong number."""
    _, dev = impl
    x = torch.tensor([-math.inf, math.inf, 0.0], device=dev)
    loss = FF.binary_cross_entropy_with_logits(x, torch.tensor([1.0, 0.0, 1.0], device=dev), reduction="none")
    assert loss[0].item() == math.inf and loss[1].item() == math.inf and loss[2].item() == pytest.approx(math.log(2))
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(FF.binary_cross_entropy_with_logits(xg, torch.tensor([1.0, 0.0, 1.0], device=dev),
                                                                   reduction="sum"), xg)
    assert g.tolist() == [-1.0, 1.0, -0.5]
    t_inf = FF.binary_cross_entropy_with_logits(torch.tensor([0.5], device=dev),
                                                torch.tensor([math.inf], device=dev), reduction="none")
    assert not torch.isfinite(t_inf).any()
    p_inf = FF.binary_cross_entropy_with_logits(torch.tensor([0.5, -0.5], device=dev),
                                                torch.tensor([1.0, 0.0], device=dev), reduction="none",
                                                pos_weight=torch.tensor([math.inf, math.inf], device=dev))
    assert p_inf[0].item() == math.inf and math.isnan(p_inf[1].item())
