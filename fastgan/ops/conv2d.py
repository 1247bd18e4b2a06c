"""``fastgan::conv2d`` and ``fastgan::conv2d_backward``: fake kernels and autograd formulas.

y = act(conv2d(x, w) + b) * gain; with ``dact_y`` (the double backward's product): act_grad(conv2d(x, w), dact_y),
dz's adjoint in the product's epilogue (no bias). The backward is one op:
``conv2d_backward(dy, x, w, ..., mask, y, act...)`` gives dx = conv_transpose(dz, w), dw = correlate(x, dz) and
db = sum of dz, dz = act_grad(dy, y) (computed inside the products' operand loads on the GEMM kernels). Its own
backward (the double backward of R1 / WGAN-GP penalties) is conv2d and conv2d_backward again, through dz's adjoint
(_registry.layer_backward_double).
"""
from __future__ import annotations

import torch

from .. import _activations
from ._registry import (LAYER_DEFAULTS, call, dact_y_grad, layer_backward_double, layer_mask, leaves,
                        register, with_defaults)


def memory_format(t: torch.Tensor):
    """torch.channels_last when ATen's suggest_memory_format() would say so for t (4-D), else contiguous: the layout
    the kernels give a convolution gradient (csrc/cpu/conv2d.h, channels_last()). ATen's rule, written out: the
    strides must not decrease along C, W, H, N (ambiguous size-1 dims as ATen resolves them)."""
    if t.ndim != 4 or t.stride(1) == 0:
        return torch.contiguous_format
    lo = 0
    for d in (1, 3, 2, 0):
        size, stride = t.shape[d], t.stride(d)
        if size == 0 or stride < lo or (d == 0 and lo == t.stride(1)):
            return torch.contiguous_format
        lo = stride * size if size > 1 else stride
    return torch.channels_last


def _fake(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp, dact_y=None):
    return torch.ops.aten.convolution(x, w, None, stride, padding, dilation, False, [0, 0], groups)


def _backward_fake(dy, x, w, stride, padding, dilation, groups, mask, y=None, act="linear", alpha=0.0, gain=1.0,
                   clamp=-1.0):
    # dx in x's memory format; dw channels_last when x is (the kernels' reduction order), else contiguous
    fmt = memory_format(x)
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt) if mask[0]
            else x.new_empty((0,)),
            torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt) if mask[1]
            else w.new_empty((0,)),
            w.new_empty((w.shape[0],)) if mask[2] else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp, dact_y = with_defaults(inputs, 11, (None,))
    ctx.has_b = b is not None
    ctx.leaves = leaves(w, b)
    ctx.conv = (stride, padding, dilation, groups)
    ctx.params = (act, alpha, gain, clamp)
    ctx.dact = dact_y is not None
    # the output only where the activation's derivative reads it (as torch's linear / conv2d, an identity layer
    # saves no output: it may be modified in place)
    y = dact_y if ctx.dact else (None if _activations.is_identity(act, gain, clamp) else output)
    ctx.save_for_backward(x, w, y)


def _backward(ctx, gy):
    x, w, y = ctx.saved_tensors
    mask = layer_mask(ctx)
    if x.shape[1] == 0:  # no input channels: torch's output has no channels either, and every gradient is zero
        return (torch.zeros_like(x) if mask[0] else None, torch.zeros_like(w) if mask[1] else None,
                w.new_zeros(w.shape[0]) if mask[2] else None, None, None, None, None, None, None, None, None, None)
    # (with dact_y, as dense.py: the same formulas with y = dact_y, and dact_y's own gradient)
    dx, dw, db = call("conv2d_backward", gy, x, w, *ctx.conv, mask, y, *ctx.params)
    gy_ = dact_y_grad(ctx, gy, lambda: call("conv2d", x, w, None, *ctx.conv, "linear", 0.0, 1.0, -1.0, None), 1) \
        if ctx.dact else None
    return (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None), \
        None, None, None, None, None, None, None, None, gy_


def _backward_setup(ctx, inputs, output):
    dy, x, w, stride, padding, dilation, groups, mask, y, act, alpha, gain, clamp = with_defaults(
        inputs, 8, LAYER_DEFAULTS)
    ctx.conv = (stride, padding, dilation, groups)
    ctx.mask = tuple(bool(m) for m in mask)
    ctx.act = (act, alpha, gain, clamp)
    ctx.dim = 1
    ctx.y_index = 8
    # x only matters with the weight gradient (the double backward's products with gdw); without it, x may be a
    # stand-in that only carries a shape and layout (conv_transpose2d's, output-sized when channels_last)
    ctx.save_for_backward(dy, x if ctx.mask[1] else None, w, y)


def _backward_backward(ctx, gdx, gdw, gdb):
    conv = ctx.conv
    gdy, gx, gw, gy = layer_backward_double(
        ctx, gdx, gdw, gdb, lambda a, b, *dact: call("conv2d", a, b, None, *conv, *dact),
        lambda dy, x, w, mask, *act: call("conv2d_backward", dy, x, w, *conv, mask, *act),
        (1, -1, 1, 1))
    return gdy, gx, gw, None, None, None, None, None, gy, None, None, None, None


Conv2d = register("conv2d", fake=_fake, setup_context=_setup, backward=_backward)
Conv2dBackward = register("conv2d_backward", fake=_backward_fake, setup_context=_backward_setup,
                          backward=_backward_backward)
