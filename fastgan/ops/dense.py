"""``fastgan::dense`` and ``fastgan::dense_backward``: fake kernels and autograd formulas.

y = act(x @ w.T + b) * gain. The backward: (dz, db) from ``bias_act_backward`` with the saved y, then
``dense_backward`` gives dx = dz @ w and dw = dz^T @ x. Both products are bilinear, so the double backward is dense /
dense_backward again.
"""
from __future__ import annotations

from ._registry import call, product_double_backward, register


def _fake(x, w, b, act, alpha, gain, clamp):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _backward_fake(dz, x, w, mask):
    return (x.new_empty(x.shape) if mask[0] else x.new_empty((0,)),
            w.new_empty(w.shape) if mask[1] else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, act, alpha, gain, clamp = inputs
    ctx.has_b = b is not None
    ctx.params = (act, alpha, gain, clamp)
    ctx.save_for_backward(x, w, output)


def _backward(ctx, gy):
    x, w, y = ctx.saved_tensors
    act, alpha, gain, clamp = ctx.params
    want_db = ctx.has_b and ctx.needs_input_grad[2]
    dz, db = call("bias_act_backward", gy, y, want_db, y.ndim - 1, act, alpha, gain, clamp)
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
    dx = dw = None
    if need[0] or need[1]:
        dx, dw = call("dense_backward", dz, x, w, need)
    return (dx if need[0] else None), (dw if need[1] else None), (db if want_db else None), \
        None, None, None, None


def _backward_setup(ctx, inputs, output):
    dz, x, w, mask = inputs
    ctx.mask = (bool(mask[0]), bool(mask[1]))
    ctx.save_for_backward(dz, x, w)


def _backward_backward(ctx, gdx, gdw):
    return (*product_double_backward(ctx, gdx, gdw, lambda a, b: call("dense", a, b, None, "linear", 0.0, 1.0, -1.0),
                                     lambda *args: call("dense_backward", *args)), None)


Dense = register("dense", fake=_fake, setup_context=_setup, backward=_backward)
DenseBackward = register("dense_backward", fake=_backward_fake, setup_context=_backward_setup,
                         backward=_backward_backward)
