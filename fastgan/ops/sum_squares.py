"""``fastgan::sum_squares`` and ``fastgan::sum_squares_backward``: fake kernels and autograd formulas.

out = scale * sum(x^2), one element (a gradient penalty's squared norm: one reduction launch on CUDA instead of
pow + sum); its gradient dx = 2 * scale * g * x is the backward op (one launch instead of pow's backward, three).
The backward op's own backward (third-order use) is written with plain torch ops.
"""
from __future__ import annotations

from ._registry import call, register


def _fake(x, scale):
    return x.new_empty(())


def _backward_fake(g, x, scale):
    return x.new_empty(x.shape)


def _setup(ctx, inputs, output):
    x, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(x)


def _backward(ctx, g):
    (x,) = ctx.saved_tensors
    return call("sum_squares_backward", g, x, ctx.scale), None


def _backward_setup(ctx, inputs, output):
    g, x, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(g, x)


def _backward_backward(ctx, gdx):
    """dx = 2 s g x: d/dg = 2 s sum(gdx x), d/dx = 2 s g gdx."""
    g, x = ctx.saved_tensors
    need = ctx.needs_input_grad
    gg = (gdx * x).sum().reshape(g.shape) * (2.0 * ctx.scale) if need[0] else None
    gx = gdx * (g.reshape(()) * (2.0 * ctx.scale)) if need[1] else None
    return gg, gx, None


SumSquares = register("sum_squares", fake=_fake, setup_context=_setup, backward=_backward)
SumSquaresBackward = register("sum_squares_backward", fake=_backward_fake, setup_context=_backward_setup,
                              backward=_backward_backward)
