"""How each op of ``torch.ops.fastgan`` gets its Python-side registrations: one definition, two users.

For every op, its module in this package writes the fake kernel, the autograd formulas (``setup_context`` +
``backward``) and, where the default is not good enough, a batching rule. :func:`register` then

* registers them with the dispatcher (``torch.library.register_fake`` / ``register_autograd`` /
  ``register_vmap``), so ``torch.compile`` and direct ``torch.ops.fastgan.*`` callers get gradients, and
* builds the one ``torch.autograd.Function`` with the same ``setup_context`` and ``backward``, which
  :mod:`fastgan.functional` calls. torch.func transforms (``grad``, ``vmap``, ...) need a Function: the autograd
  that ``register_autograd`` installs does not support them (torch 2.11-2.15). Its forward calls the op itself
  (grad mode is off inside a Function's forward, so the op's autograd kernel passes straight to the kernels).

Backward formulas call the backward ops through :func:`call`, which differentiates them again only when the
backward itself is being differentiated (``create_graph=True``, torch.func), so every order of derivative runs the
same kernels.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Callable, Optional

import torch

from .. import _activations

FUNCTIONS: dict = {}  # op name -> its autograd.Function


def op(name: str):
    """The dispatcher op ``torch.ops.fastgan.<name>``."""
    return getattr(torch.ops.fastgan, name)


def one_device_fake(qualname: str, fake: Callable) -> Callable:
    """``fake`` as the op's fake kernel: the dispatcher sends a call with any meta tensor to it, also one whose other
    tensors hold data, whose results would then be uninitialised memory; torch's own ops refuse the mix, so does
    this."""
    @functools.wraps(fake)
    def checked(*args, **kwargs):
        devices = {t.device.type for a in (*args, *kwargs.values())
                   for t in (a if isinstance(a, (list, tuple)) else [a]) if isinstance(t, torch.Tensor)}
        if "meta" in devices and len(devices) > 1:
            raise ValueError(f"{qualname}: expected every tensor on one device, got meta tensors with tensors on "
                             f"{', '.join(sorted(devices - {'meta'}))}")
        return fake(*args, **kwargs)
    return checked


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
        n = len(ctx.needs_input_grad)  # a caller may omit trailing arguments that have schema defaults
        if all(g is None for g in grads):
            return (None,) * n
        return tuple(user_backward(ctx, *grads))[:n]

    torch.library.register_fake(qualname, one_device_fake(qualname, fake))
    torch.library.register_autograd(qualname, backward, setup_context=setup_context)
    if vmap is not None:
        torch.library.register_vmap(qualname, vmap)
    raw = op(name)

    def forward(*args):
        return raw(*args)

    # forward's signature is the op's (the fake kernel's parameters and defaults): Function.apply binds its arguments
    # to it on every call, filling omitted trailing defaults (a precomputed signature is what inspect returns at
    # once: inspect would take ~15 us on a 2-core VM), and torch.compile, tracing a call with no input that requires
    # gradients, passes forward a ctx unless the call's argument count equals the signature's (so callers pass
    # every argument, defaults included).
    forward.__signature__ = inspect.signature(fake)

    attrs = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
             "backward": staticmethod(backward)}
    if vmap is not None:
        attrs["vmap"] = staticmethod(vmap)
    else:
        attrs["generate_vmap_rule"] = True  # the op runs under vmap: the dispatcher's per-sample fallback
    cls = type(f"fastgan_{name}", (torch.autograd.Function,), attrs)
    FUNCTIONS[name] = cls
    return cls


_weight_gradients = True  # process-wide: a CUDA backward runs on autograd's device thread, not the caller's


@contextlib.contextmanager
def no_weight_gradients():
    """Within this context the fused layers' backward (linear, conv2d, linear_bce_with_logits, bias_act) computes no
    gradients w.r.t. their weights and biases that are leaves (parameters); those come back as None (not
    accumulated, as for an unused tensor). A weight computed from other tensors keeps its gradient.

    For a gradient penalty's first-order gradient, ``torch.autograd.grad(D(x), x, create_graph=True)``, which needs
    the gradient w.r.t. the images only: autograd cannot tell a Python-defined backward which of its gradients one
    ``grad`` call will use, so without this each layer computes its weight gradient too and it is discarded (stock
    torch ops skip it on their own). The penalty's own backward, run after the context, computes every gradient as
    usual. Process-wide (not per thread); read when a backward runs in eager mode, and under torch.compile when the
    compiled forward runs (its backward is compiled with the value)."""
    global _weight_gradients
    before, _weight_gradients = _weight_gradients, False
    try:
        yield
    finally:
        _weight_gradients = before


def weight_gradients_enabled() -> bool:
    """False inside :func:`no_weight_gradients`."""
    return _weight_gradients


def leaves(*params) -> tuple:
    """For each of a layer's parameters (weight, bias; None allowed) whether it is a leaf of the graph (an
    nn.Parameter, not computed from other tensors): only a leaf's gradient may be skipped inside
    :func:`no_weight_gradients` -- a computed weight (a modulated convolution's) carries the gradient on to the
    tensors it came from, the images included. Set by the layer ops' setup_context as ctx.leaves."""
    return tuple(p is None or p.is_leaf for p in params)  # (is_leaf: torch.compile traces it; grad_fn it cannot)


def layer_mask(ctx) -> list:
    """Which of (input, weight, bias) gradients a layer's backward computes: those autograd needs, less the leaf
    weight's and bias's inside :func:`no_weight_gradients` (ctx.has_b: the layer has a bias; ctx.leaves:
    :func:`leaves` of (weight, bias))."""
    need = ctx.needs_input_grad
    skip_w, skip_b = (not _weight_gradients and leaf for leaf in ctx.leaves)
    return [bool(need[0]), bool(need[1]) and not skip_w, ctx.has_b and bool(need[2]) and not skip_b]


def call(name: str, *args):
    """An op called from a backward formula: differentiable (through its Function) when the backward is itself
    being differentiated, the plain op otherwise (no graph to record; saves the Function's per-call cost)."""
    if torch.is_grad_enabled():
        return FUNCTIONS[name].apply(*args)
    return op(name)(*args)


LAYER_DEFAULTS = (None, "linear", 0.0, 1.0, -1.0)  # the backward ops' (y, act, alpha, gain, clamp) defaults


def with_defaults(inputs, n_required: int, defaults) -> tuple:
    """An op's inputs as setup_context receives them, with the schema's defaults filled in for omitted trailing
    arguments."""
    inputs = tuple(inputs)
    return inputs + tuple(defaults[len(inputs) - n_required:])


def dact_y_grad(ctx, g, product: Callable, dim: int):
    """The gradient w.r.t. ``dact_y`` of a layer op called with it (out = act_grad(P, dact_y), P = product()), for
    the gradient g of out: nonzero only for an activation whose derivative varies with y (P recomputed then)."""
    from .bias_act import layer_dz_adjoint  # (bias_act imports this module)
    if not ctx.needs_input_grad[-1] or _activations.get(ctx.params[0]).d2 is None:
        return None
    return layer_dz_adjoint(g, product(), ctx.saved_tensors[2], dim, *ctx.params, False, True)[1]


def layer_backward_double(ctx, gdx, gdw, gdb, product: Callable, grads: Callable, bias_shape) -> tuple:
    """The backward of a fused layer's gradient op ``(dx, dw, db) = grads(dy, x, w, mask, y, act...)`` (dense_backward,
    conv2d_backward) for ``y = act(product(x, w) + b)``, with respect to (dy, x, w, y). Through dz = act_grad(dy, y):
    dx is bilinear in (dz, w), dw in (dz, x), db linear in dz, so their adjoints are the product and the gradient
    op again: gdz = product(gdx, w) + product(x, gdw) + gdb (broadcast), gx = grads(dy, x, gdw, y) [dx part],
    gw = grads(dy, gdx, w, y) [dw part] (act' applied inside those products, as in the first backward); then
    (gdy, gy) from dz's adjoint (ops/bias_act.py). Saved tensors: (dy, x, w, y); ctx.mask the forward's mask (an
    output it did not compute has no gradient), ctx.act the activation arguments, ctx.dim the channel dim,
    ctx.y_index y's position among the op's inputs. ``product(a, b)`` is the layer's linear product, and
    ``product(a, b, act, alpha, gain, clamp, y)`` the same with act_grad(., y) in its epilogue: gdy in one launch
    when gdx is dz's only term and y needs no gradient (R1's double backward). Returns (gdy, gx, gw, gy)."""
    from .bias_act import layer_dz_adjoint  # (bias_act imports this module)
    dy, x, w, y = ctx.saved_tensors
    need = ctx.needs_input_grad  # (as long as the inputs given: trailing defaults may be omitted)
    # (dz depends on y only through a smooth activation's derivative)
    need_y = (len(need) > ctx.y_index and need[ctx.y_index] and y is not None
              and _activations.get(ctx.act[0]).d2 is not None)
    gdx = gdx if ctx.mask[0] and gdx is not None and gdx.numel() else None
    gdw = gdw if ctx.mask[1] and gdw is not None and gdw.numel() else None
    gdb = gdb if ctx.mask[2] and gdb is not None and gdb.numel() else None
    gdz = gx = gw = gdy = gy = None
    fused = need[0] and not need_y and gdx is not None and gdw is None and gdb is None and y is not None
    if fused:
        gdy = product(gdx, w, *ctx.act, y)
    elif need[0] or need_y:
        linear = ("linear", 0.0, 1.0, -1.0, None)
        terms = ([product(gdx, w, *linear)] if gdx is not None else []) + \
            ([product(x, gdw, *linear)] if gdw is not None else [])
        gdz = sum(terms[1:], terms[0]) if terms else None
        if gdb is not None:
            gdz = gdb.reshape(bias_shape).expand(dy.shape) if gdz is None else gdz + gdb.reshape(bias_shape)
    if need[1] and gdw is not None:
        gx = grads(dy, x, gdw, [True, False, False], y, *ctx.act)[0]
    if need[2] and gdx is not None:
        gw = grads(dy, gdx, w, [False, True, False], y, *ctx.act)[1]
    if not fused:
        gdy, gy = layer_dz_adjoint(gdz, dy, y, ctx.dim, *ctx.act, need[0], need_y)
    return gdy, gx, gw, gy
