"""How each op of ``torch.ops.fastgan`` gets its Python-side registrations: one definition, two users.

For every op, its module in this package writes the fake kernel, the autograd formulas (``setup_context`` +
``backward``) and, where the default is not good enough, a batching rule. :func:`register` then

* registers them with the dispatcher (``torch.library.register_fake`` / ``register_autograd`` /
  ``register_vmap``), so ``torch.compile`` and direct ``torch.ops.fastgan.*`` callers get gradients, and
* builds the one ``torch.autograd.Function`` with the same ``setup_context`` and ``backward``, which
  :mod:`fastgan.functional` calls. torch.func transforms (``grad``, ``vmap``, ...) need a Function: the autograd
  that ``register_autograd`` installs does not support them (torch 2.11-2.14). Its forward calls the op itself
  (grad mode is off inside a Function's forward, so the op's autograd kernel passes straight to the kernels).

Backward formulas call the backward ops through :func:`call`, which differentiates them again only when the
backward itself is being differentiated (``create_graph=True``, torch.func), so every order of derivative runs the
same kernels.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

FUNCTIONS: dict = {}  # op name -> its autograd.Function
_VARARGS = inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)])


def op(name: str):
    """The dispatcher op ``torch.ops.fastgan.<name>``."""
    return getattr(torch.ops.fastgan, name)


def register(name: str, *, fake: Callable, setup_context: Callable, backward: Callable,
             vmap: Optional[Callable] = None) -> type:
    qualname = f"fastgan::{name}"
    user_setup, user_backward = setup_context, backward

    def setup_context(ctx, inputs, output):
        # An output nobody differentiates (the weight gradient of a conv2d_backward that R1's first-order gradient
        # computed alongside dx) arrives in the backward as None, not as a tensor of zeros: the formulas then skip
        # the products it would feed (a zero-filled weight gradient cost a convolution forward and backward each).
        ctx.set_materialize_grads(False)
        user_setup(ctx, inputs, output)

    def backward(ctx, *grads):
        if all(g is None for g in grads):
            return (None,) * len(ctx.needs_input_grad)
        return user_backward(ctx, *grads)

    torch.library.register_fake(qualname, fake)
    torch.library.register_autograd(qualname, backward, setup_context=setup_context)
    if vmap is not None:
        torch.library.register_vmap(qualname, vmap)
    raw = op(name)

    def forward(*args):
        return raw(*args)

    # Function.apply binds its arguments to forward's signature on every call (inspect.signature, ~15 us on a
    # 2-core VM); a precomputed one is what inspect returns at once
    forward.__signature__ = _VARARGS

    attrs = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
             "backward": staticmethod(backward)}
    if vmap is not None:
        attrs["vmap"] = staticmethod(vmap)
    else:
        attrs["generate_vmap_rule"] = True  # the op runs under vmap: the dispatcher's per-sample fallback
    cls = type(f"fastgan_{name}", (torch.autograd.Function,), attrs)
    FUNCTIONS[name] = cls
    return cls


def call(name: str, *args):
    """An op called from a backward formula: differentiable (through its Function) when the backward is itself
    being differentiated, the plain op otherwise (no graph to record; saves the Function's per-call cost)."""
    if torch.is_grad_enabled():
        return FUNCTIONS[name].apply(*args)
    return op(name)(*args)


def product_double_backward(ctx, gdx, gdw, product: Callable, grads: Callable) -> tuple:
    """The backward of a product's gradient op -- ``(dx, dw) = grads(dz, x, w, mask)`` for ``z = product(x, w)``
    (dense, conv2d) -- with respect to (dz, x, w). Both outputs are bilinear: dx in (dz, w), dw in (dz, x), so
    their adjoints are the product and its gradient op again: gdz = product(gdx, w) + product(x, gdw),
    gx = grads(dz, x, gdw) [dx part], gw = grads(dz, gdx, w) [dw part]. Saved tensors: (dz, x, w); ctx.mask the
    forward's mask (an output it did not compute has no gradient)."""
    dz, x, w = ctx.saved_tensors
    gdx = gdx if ctx.mask[0] and gdx is not None and gdx.numel() else None
    gdw = gdw if ctx.mask[1] and gdw is not None and gdw.numel() else None
    gdz = gx = gw = None
    if ctx.needs_input_grad[0]:
        terms = ([product(gdx, w)] if gdx is not None else []) + ([product(x, gdw)] if gdw is not None else [])
        gdz = sum(terms[1:], terms[0]) if terms else torch.zeros_like(dz)
    if ctx.needs_input_grad[1] and gdw is not None:
        gx = grads(dz, x, gdw, [True, False])[0]
    if ctx.needs_input_grad[2] and gdx is not None:
        gw = grads(dz, gdx, w, [False, True])[1]
    return gdz, gx, gw
