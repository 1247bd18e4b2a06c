"""``fastgan::dense`` and ``fastgan::dense_backward``: fake kernels and autograd formulas.

y = act(x @ w.T + b) * gain. The backward is one op: ``dense_backward(dy, x, w, mask, y, act...)`` gives
dx = dz @ w, dw = dz^T @ x and db = sum of dz, dz = act_grad(dy, y) (computed inside the products' operand loads
on the GEMM kernels). Its own backward (the double backward) is the product and dense_backward again, through dz's
adjoint (_registry.layer_backward_double).
"""
from __future__ import annotations

from ._registry import LAYER_DEFAULTS, call, layer_backward_double, layer_mask, register, with_defaults


def _fake(x, w, b, act, alpha, gain, clamp):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _backward_fake(dy, x, w, mask, y=None, act="linear", alpha=0.0, gain=1.0, clamp=-1.0):
    return (x.new_empty(x.shape) if mask[0] else x.new_empty((0,)),
            w.new_empty(w.shape) if mask[1] else w.new_empty((0,)),
            w.new_empty((w.shape[0],)) if mask[2] else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, act, alpha, gain, clamp = inputs
    ctx.has_b = b is not None
    ctx.params = (act, alpha, gain, clamp)
    ctx.save_for_backward(x, w, output)


def _backward(ctx, gy):
    x, w, y = ctx.saved_tensors
    mask = layer_mask(ctx)
    dx, dw, db = call("dense_backward", gy, x, w, mask, y, *ctx.params)
    return (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None), None, None, None, None


def _backward_setup(ctx, inputs, output):
    dy, x, w, mask, y, act, alpha, gain, clamp = with_defaults(inputs, 4, LAYER_DEFAULTS)
    ctx.mask = tuple(bool(m) for m in mask)
    ctx.act = (act, alpha, gain, clamp)
    ctx.dim = dy.ndim - 1
    ctx.y_index = 4
    ctx.save_for_backward(dy, x, w, y)


def _backward_backward(ctx, gdx, gdw, gdb):
    gdy, gx, gw, gy = layer_backward_double(ctx, gdx, gdw, gdb,
                                            lambda a, b: call("dense", a, b, None, "linear", 0.0, 1.0, -1.0),
                                            lambda *args: call("dense_backward", *args),
                                            (-1,))
    return gdy, gx, gw, None, gy, None, None, None, None


Dense = register("dense", fake=_fake, setup_context=_setup, backward=_backward)
DenseBackward = register("dense_backward", fake=_backward_fake, setup_context=_backward_setup,
                         backward=_backward_backward)
