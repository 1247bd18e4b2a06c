"""``fastgan::conv2d`` and ``fastgan::conv2d_backward``: fake kernels and autograd formulas.

y = act(conv2d(x, w) + b) * gain. The backward: (dz, db) from ``bias_act_backward`` with the saved y, then
``conv2d_backward`` gives dx = conv_transpose(dz, w) and dw = correlate(x, dz). Both are bilinear; their adjoints
are conv2d and conv2d_backward again (the double backward of R1 / WGAN-GP penalties).
"""
from __future__ import annotations

import torch

from ._registry import call, product_double_backward, register


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


def _fake(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp):
    return torch.ops.aten.convolution(x, w, None, stride, padding, dilation, False, [0, 0], groups)


def _backward_fake(dz, x, w, stride, padding, dilation, groups, mask):
    # dx in x's memory format; dw channels_last when x is (the kernels' reduction order), else contiguous
    fmt = memory_format(x)
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt) if mask[0]
            else x.new_empty((0,)),
            torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt) if mask[1]
            else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp = inputs
    ctx.has_b = b is not None
    ctx.conv = (stride, padding, dilation, groups)
    ctx.params = (act, alpha, gain, clamp)
    ctx.save_for_backward(x, w, output)


def _backward(ctx, gy):
    x, w, y = ctx.saved_tensors
    act, alpha, gain, clamp = ctx.params
    stride, padding, dilation, groups = ctx.conv
    want_db = ctx.has_b and ctx.needs_input_grad[2]
    if x.shape[1] == 0:  # no input channels: torch's output has no channels either, and every gradient is zero
        return (torch.zeros_like(x) if ctx.needs_input_grad[0] else None,
                torch.zeros_like(w) if ctx.needs_input_grad[1] else None,
                w.new_zeros(w.shape[0]) if want_db else None, None, None, None, None, None, None, None, None)
    dz, db = call("bias_act_backward", gy, y, want_db, 1, act, alpha, gain, clamp)
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
    dx = dw = None
    if need[0] or need[1]:
        dx, dw = call("conv2d_backward", dz, x, w, stride, padding, dilation, groups, need)
    return (dx if need[0] else None), (dw if need[1] else None), (db if want_db else None), \
        None, None, None, None, None, None, None, None


def _backward_setup(ctx, inputs, output):
    dz, x, w, stride, padding, dilation, groups, mask = inputs
    ctx.conv = (stride, padding, dilation, groups)
    ctx.mask = (bool(mask[0]), bool(mask[1]))
    ctx.save_for_backward(dz, x, w)


def _backward_backward(ctx, gdx, gdw):
    conv = ctx.conv
    return (*product_double_backward(
        ctx, gdx, gdw, lambda a, b: call("conv2d", a, b, None, *conv, "linear", 0.0, 1.0, -1.0),
        lambda dz, x, w, mask: call("conv2d_backward", dz, x, w, *conv, mask)), None, None, None, None, None)


Conv2d = register("conv2d", fake=_fake, setup_context=_setup, backward=_backward)
Conv2dBackward = register("conv2d_backward", fake=_backward_fake, setup_context=_backward_setup,
                          backward=_backward_backward)
