"""``fastgan::dense`` and ``fastgan::dense_backward``: fake kernels and autograd formulas.

y = act(x @ w.T + b) * gain; with ``dact_y`` (the double backward's product): act_grad(x @ w.T, dact_y), dz's
adjoint in the product's epilogue (no bias). The backward is one op: ``dense_backward(dy, x, w, mask, y, act...)`` gives
dx = dz @ w, dw = dz^T @ x and db = sum of dz, dz = act_grad(dy, y) (computed inside the products' operand loads
on the GEMM kernels). Its own backward (the double backward) is the product and dense_backward again, through dz's
adjoint (_registry.layer_backward_double).
"""
from __future__ import annotations

from .. import _activations
from ._registry import (LAYER_DEFAULTS, call, dact_y_grad, layer_backward_double, layer_mask, leaves,
                        register, with_defaults)


def _fake(x, w, b, act, alpha, gain, clamp, dact_y=None):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _backward_fake(dy, x, w, mask, y=None, act="linear", alpha=0.0, gain=1.0, clamp=-1.0):
    return (x.new_empty(x.shape) if mask[0] else x.new_empty((0,)),
            w.new_empty(w.shape) if mask[1] else w.new_empty((0,)),
            w.new_empty((w.shape[0],)) if mask[2] else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, act, alpha, gain, clamp, dact_y = with_defaults(inputs, 7, (None,))
    ctx.has_b = b is not None
    ctx.leaves = leaves(w, b)
    ctx.params = (act, alpha, gain, clamp)
    ctx.dact = dact_y is not None
    # the output only where the activation's derivative reads it (as torch's linear / conv2d, an identity layer
    # saves no output: it may be modified in place)
    y = dact_y if ctx.dact else (None if _activations.is_identity(act, gain, clamp) else output)
    ctx.save_for_backward(x, w, y)


def _backward(ctx, gy):
    # y = act(z): dz = act_grad(gy, y). With dact_y (out = act_grad(x @ w.T, dact_y), the double backward's
    # product): the same formulas with y = dact_y, act_grad being linear and elementwise; plus dact_y's own gradient.
    x, w, y = ctx.saved_tensors
    mask = layer_mask(ctx)
    dx, dw, db = call("dense_backward", gy, x, w, mask, y, *ctx.params)
    gy_ = dact_y_grad(ctx, gy, lambda: call("dense", x, w, None, "linear", 0.0, 1.0, -1.0, None), -1) \
        if ctx.dact else None
    return (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None), None, None, None, None, \
        gy_


def _backward_setup(ctx, inputs, output):
    dy, x, w, mask, y, act, alpha, gain, clamp = with_defaults(inputs, 4, LAYER_DEFAULTS)
    ctx.mask = tuple(bool(m) for m in mask)
    ctx.act = (act, alpha, gain, clamp)
    ctx.dim = dy.ndim - 1
    ctx.y_index = 4
    ctx.save_for_backward(dy, x, w, y)


def _backward_backward(ctx, gdx, gdw, gdb):
    gdy, gx, gw, gy = layer_backward_double(ctx, gdx, gdw, gdb,
                                            lambda a, b, *dact: call("dense", a, b, None, *dact),
                                            lambda *args: call("dense_backward", *args),
                                            (-1,))
    return gdy, gx, gw, None, gy, None, None, None, None


Dense = register("dense", fake=_fake, setup_context=_setup, backward=_backward)
DenseBackward = register("dense_backward", fake=_backward_fake, setup_context=_backward_setup,
                         backward=_backward_backward)
