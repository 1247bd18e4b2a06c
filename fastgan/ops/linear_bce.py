"""``fastgan::linear_bce`` and ``fastgan::linear_bce_backward``: a one-output dense head and its sigmoid-BCE loss as
one op (a discriminator's last layer and loss: on CUDA two launches per forward + backward instead of five).

(loss, logits) = linear_bce(x, w, b, target, label, weight, reduction), logits = x @ w.T + b (one column),
loss = the weighted BCE of the logits, mean (1) or sum (2). The backward op gives (dx, dw, db) from the gradients of
both outputs. Gradients w.r.t. target and weight are not computed (fastgan.functional sends such calls to the
unfused composition); the double backward is written with differentiable ops below.
"""
from __future__ import annotations

import torch

from ._registry import LAYER_DEFAULTS, call, layer_mask, leaves, register


def _fake(x, w, b, target, label, weight, reduction):
    return x.new_empty(()), x.new_empty((x.shape[0],))


def _backward_fake(g_loss, g_logits, x, w, logits, target, label, weight, reduction, mask):
    return (x.new_empty(x.shape) if mask[0] else x.new_empty((0,)),
            w.new_empty(w.shape) if mask[1] else w.new_empty((0,)),
            w.new_empty((1,)) if mask[2] else w.new_empty((0,)))


def _setup(ctx, inputs, output):
    x, w, b, target, label, weight, reduction = inputs
    ctx.has_b = b is not None
    ctx.leaves = leaves(w, b)
    ctx.args = (label, reduction)
    ctx.save_for_backward(x, w, output[1], target, weight)


def _backward(ctx, g_loss, g_logits):
    x, w, logits, target, weight = ctx.saved_tensors
    label, reduction = ctx.args
    need = ctx.needs_input_grad
    if need[3] or need[5]:
        raise RuntimeError("fastgan::linear_bce: no gradient w.r.t. target or weight (fastgan.functional."
                           "linear_bce_with_logits computes those through the unfused ops)")
    mask = layer_mask(ctx)
    if g_loss is None:  # the logits' gradient alone (a penalty's input gradient): the plain one-output dense backward
        dx, dw, db = call("dense_backward", g_logits.view(-1, 1), x, w, mask, *LAYER_DEFAULTS)
    else:
        dx, dw, db = call("linear_bce_backward", g_loss, g_logits, x, w, logits, target, label, weight, reduction,
                          mask)
    return (dx if mask[0] else None), (dw if mask[1] else None), (db if mask[2] else None), None, None, None, None


def _backward_setup(ctx, inputs, output):
    g_loss, g_logits, x, w, logits, target, label, weight, reduction, mask = inputs
    ctx.args = (label, reduction)
    ctx.mask = tuple(bool(m) for m in mask)
    ctx.save_for_backward(g_loss, g_logits, x, w, logits, target, weight)


def _backward_backward(ctx, gdx, gdw, gdb):
    """dl = s W d(l) + g_logits (s = g_loss / n for the mean), dx = dl w, dw = dl^T x, db = sum dl; so
    g_dl = gdx w^T + x gdw^T + gdb, g_x = dl gdw, g_w = dl^T gdx, g_g_loss = sum g_dl W d(l) / n, g_g_logits = g_dl,
    g_logits = g_dl s W sigmoid'(l). Differentiable ops only (any order)."""
    g_loss, g_logits, x, w, logits, target, weight = ctx.saved_tensors
    label, reduction = ctx.args
    need = ctx.needs_input_grad
    gdx = gdx if ctx.mask[0] and gdx is not None and gdx.numel() else None
    gdw = gdw if ctx.mask[1] and gdw is not None and gdw.numel() else None
    gdb = gdb if ctx.mask[2] and gdb is not None and gdb.numel() else None
    n = max(logits.shape[0], 1)
    out = [None] * 10
    unit = call("sigmoid_bce_backward", torch.ones_like(g_loss).reshape(()), logits, target, label, weight, None,
                reduction)  # W d(l) (/ n for the mean)
    dl = None
    if (need[2] and gdw is not None) or (need[3] and gdx is not None):
        dl = g_loss.reshape(()) * unit + (g_logits if g_logits is not None else 0)
    terms = ([gdx @ w[0]] if gdx is not None else []) + ([x @ gdw[0]] if gdw is not None else [])
    g_dl = sum(terms[1:], terms[0]) if terms else None
    if gdb is not None:
        g_dl = gdb.expand(logits.shape) if g_dl is None else g_dl + gdb
    if g_dl is not None:
        if need[0]:
            out[0] = (g_dl * unit).sum().reshape(g_loss.shape)
        if need[1] and g_logits is not None:
            out[1] = g_dl
        if need[4]:
            s = torch.sigmoid(logits)
            W = weight if weight is not None else 1.0
            out[4] = g_dl * (g_loss.reshape(()) / (n if reduction == 1 else 1)) * W * s * (1 - s)
    if need[2] and gdw is not None:
        out[2] = dl[:, None] * gdw
    if need[3] and gdx is not None:
        out[3] = (dl @ gdx).unsqueeze(0)
    return tuple(out)


LinearBCE = register("linear_bce", fake=_fake, setup_context=_setup, backward=_backward)
LinearBCEBackward = register("linear_bce_backward", fake=_backward_fake, setup_context=_backward_setup,
                             backward=_backward_backward)
