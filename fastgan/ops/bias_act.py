"""``fastgan::bias_act`` and ``fastgan::bias_act_backward``: fake kernels, batching rules, autograd formulas.

y = clamp(act(x + b) * gain); the backward saves y (every activation's derivative is written through its output,
fastgan/_activations.py) and ``bias_act_backward`` returns (dz, db) in one pass. The double backward: dz is linear
in dy (the same op applies the same mask), and depends on y through act'(y / gain) (``Activation.d2``).
"""
from __future__ import annotations

import torch

from .. import _activations
from ._registry import call, leaves, op, register, weight_gradients_enabled


def _bcast_along(v: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.reshape(shape)


# ------------------------------------------------------------------ fake kernels
def _fake(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x)


def _backward_fake(dy, y, bias_grad, dim, act, alpha, gain, clamp):
    n = (y.shape[dim] if y.ndim else 1) if bias_grad else 0
    return torch.empty_like(y), y.new_empty((n,))


# ------------------------------------------------------------------ batching rules (torch.func.vmap)
# The vmapped dim is moved to the front and becomes an ordinary leading dim of one op call (the channel dim shifts
# by one). A batched bias (or a per-sample bias gradient) is folded into the channel dim: the batch dim is moved
# right before the channel dim and the two are merged, so one call applies sample i's bias to sample i.
def _batch_first(info, t, td):
    return t.movedim(td, 0) if td is not None else t.expand(info.batch_size, *t.shape)


def _merge_at(t, d):
    """Batch-first t -> (t with batch x channel merged at dim d, the unmerged shape)."""
    tm = t.movedim(0, d)
    shape = tm.shape
    return tm.reshape(*shape[:d], shape[d] * shape[d + 1], *shape[d + 2:]), shape


def _vmap(info, in_dims, x, b, dim, act, alpha, gain, clamp):
    xd, bd = in_dims[0], in_dims[1]
    ndim = x.ndim - (xd is not None)  # the per-sample ndim
    d = dim % ndim if ndim else 0
    xb = _batch_first(info, x, xd)
    if b is None or bd is None:
        return op("bias_act")(xb, b, d + 1 if ndim else 0, act, alpha, gain, clamp), 0
    xm, shape = _merge_at(xb, d)
    y = op("bias_act")(xm, b.movedim(bd, 0).reshape(-1), d, act, alpha, gain, clamp)
    return y.reshape(shape).movedim(d, 0), 0


def _backward_vmap(info, in_dims, dy, y, bias_grad, dim, act, alpha, gain, clamp):
    ndim = y.ndim - (in_dims[1] is not None)
    d = dim % ndim if ndim else 0
    dyb, yb = _batch_first(info, dy, in_dims[0]), _batch_first(info, y, in_dims[1])
    if not (bias_grad and ndim):
        dz, db = op("bias_act_backward")(dyb, yb, False, d + 1 if ndim else 0, act, alpha, gain, clamp)
        return (dz, db), (0, None)
    (dym, shape), (ym, _) = _merge_at(dyb, d), _merge_at(yb, d)
    dz, db = op("bias_act_backward")(dym, ym, True, d, act, alpha, gain, clamp)
    return (dz.reshape(shape).movedim(d, 0), db.reshape(info.batch_size, -1)), (0, 0)


# ------------------------------------------------------------------ autograd
def _setup(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.has_b = b is not None
    ctx.b_leaf = leaves(b)[0]
    ctx.params = (dim, act, alpha, gain, clamp)
    # y = x + b saves nothing (as torch's add: its output may be modified in place); otherwise y, which every
    # activation's derivative is written through
    ctx.identity = _activations.is_identity(act, gain, clamp)
    ctx.save_for_backward(None if ctx.identity else output)


def _backward(ctx, gy):
    (y,) = ctx.saved_tensors
    dim, act, alpha, gain, clamp = ctx.params
    want_db = ctx.has_b and ctx.needs_input_grad[1] and (weight_gradients_enabled() or not ctx.b_leaf)
    if ctx.identity:  # dz = gy; db its sum over every dim but the bias's (a 1-D input: gy itself)
        dims = [d for d in range(gy.ndim) if d != dim]
        db = (gy.sum(dims) if dims else gy) if want_db else None
        return gy, db, None, None, None, None, None
    dz, db = call("bias_act_backward", gy, y, want_db, dim, act, alpha, gain, clamp)
    return dz, (db if want_db else None), None, None, None, None, None


def _backward_setup(ctx, inputs, output):
    dy, y, bias_grad, dim, act, alpha, gain, clamp = inputs
    ctx.params = (bias_grad, dim, act, alpha, gain, clamp)
    ctx.save_for_backward(dy, y)


def layer_dz_adjoint(g, dy, y, dim, act, alpha, gain, clamp, need_dy, need_y):
    """The backward of a fused layer's dz = act_grad(dy, y) (y None: dz = dy): (gradient w.r.t. dy, gradient w.r.t.
    y) for the gradient g of dz. dz is linear in dy (the same op applies the same mask) and depends on y through
    act'(y / gain)."""
    if g is None:
        return None, None
    if y is None or _activations.is_identity(act, gain, clamp):  # dz = dy
        return (g if need_dy else None), None
    gdy = call("bias_act_backward", g, y, False, dim, act, alpha, gain, clamp)[0] if need_dy else None
    spec = _activations.get(act)
    gy = None
    if need_y and spec.d2 is not None:
        gy = g * dy * spec.d2(y / gain, alpha)
        if clamp >= 0:
            gy = gy * (y.abs() < clamp).to(gy.dtype)
    return gdy, gy


def _backward_backward(ctx, gdz, gdb):
    dy, y = ctx.saved_tensors
    bias_grad, dim, act, alpha, gain, clamp = ctx.params
    g = gdz if gdz is not None else torch.zeros_like(y)
    if bias_grad and gdb is not None and y.ndim:
        g = g + _bcast_along(gdb, y.ndim, dim)
    gdy, gy = layer_dz_adjoint(g, dy, y, dim, act, alpha, gain, clamp, ctx.needs_input_grad[0],
                               ctx.needs_input_grad[1])
    return gdy, gy, None, None, None, None, None, None


BiasAct = register("bias_act", fake=_fake, setup_context=_setup, backward=_backward, vmap=_vmap)
BiasActBackward = register("bias_act_backward", fake=_backward_fake, setup_context=_backward_setup,
                           backward=_backward_backward, vmap=_backward_vmap)
