"""``fastgan::sigmoid_bce`` and ``fastgan::sigmoid_bce_backward``: fake kernels and autograd formulas.

loss = w * (p t softplus(-x) + (1 - t) softplus(x)), reduced (0 none, 1 mean, 2 sum); ``label`` stands for every
target when ``target`` is None. The logits' gradient is the fused backward op; the gradients of target, weight and
pos_weight (rare) and the double backward are written with torch ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import call, register


def _fake(logits, target, label, weight, pos_weight, reduction):
    if reduction == 0:
        return torch.empty_like(logits, memory_format=torch.contiguous_format)
    return logits.new_empty(())


def _backward_fake(grad, logits, target, label, weight, pos_weight, reduction):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    logits, target, label, weight, pos_weight, reduction = inputs
    ctx.label, ctx.reduction = label, reduction
    ctx.save_for_backward(logits, target, weight, pos_weight)


def _backward(ctx, g):
    logits, target, weight, pos_weight = ctx.saved_tensors
    label, reduction = ctx.label, ctx.reduction
    dx = dt = dw = dp = None
    if ctx.needs_input_grad[0]:
        dx = call("sigmoid_bce_backward", g, logits, target, label, weight, pos_weight, reduction)
    if any(ctx.needs_input_grad[i] for i in (1, 3, 4)):  # rare: plain torch formulas
        G = g if reduction == 0 else (g / logits.numel() if reduction == 1 else g)
        t = target if target is not None else label
        p = pos_weight if pos_weight is not None else 1.0
        w = weight if weight is not None else 1.0
        sp = F.softplus(-logits)
        if ctx.needs_input_grad[1]:
            dt = G * w * (p * sp - F.softplus(logits))
        if ctx.needs_input_grad[3]:
            dw = (G * (p * t * sp + (1 - t) * F.softplus(logits))).sum_to_size(weight.shape)
        if ctx.needs_input_grad[4]:
            dp = (G * w * t * sp).sum_to_size(pos_weight.shape)
    return dx, dt, None, dw, dp, None


def _backward_setup(ctx, inputs, output):
    grad, logits, target, label, weight, pos_weight, reduction = inputs
    ctx.label, ctx.reduction = label, reduction
    ctx.save_for_backward(grad, logits, target, weight, pos_weight)


def _backward_backward(ctx, gg):
    grad, x, target, weight, pos_weight = ctx.saved_tensors
    label, reduction = ctx.label, ctx.reduction
    n = x.numel()
    # mean over n = 0 elements: the gradient is empty, and so is every term below; max(n, 1) keeps 0 / 0 out
    G = grad if reduction == 0 else (grad / max(n, 1) if reduction == 1 else grad)
    T = target if target is not None else label
    P = pos_weight if pos_weight is not None else 1.0
    W = weight if weight is not None else 1.0
    s = torch.sigmoid(x)
    q1 = 1 + (P - 1) * T
    out = [None] * 7
    if ctx.needs_input_grad[0]:
        d = W * ((1 - T) * s - P * T * torch.sigmoid(-x))  # no cancellation (bce_math.cuh)
        if reduction == 0:
            out[0] = gg * d
        else:
            out[0] = ((gg * d).sum() / (max(n, 1) if reduction == 1 else 1)).reshape(grad.shape)
    if ctx.needs_input_grad[1]:
        out[1] = gg * G * W * q1 * s * (1 - s)
    if ctx.needs_input_grad[2]:
        out[2] = gg * G * W * ((P - 1) * s - P)
    if ctx.needs_input_grad[4]:
        out[4] = (gg * G * (q1 * s - P * T)).sum_to_size(weight.shape)
    if ctx.needs_input_grad[5]:
        out[5] = (gg * G * W * (T * s - T)).sum_to_size(pos_weight.shape)
    return tuple(out)


SigmoidBCE = register("sigmoid_bce", fake=_fake, setup_context=_setup, backward=_backward)
SigmoidBCEBackward = register("sigmoid_bce_backward", fake=_backward_fake, setup_context=_backward_setup,
                              backward=_backward_backward)
