"""The dispatcher ops ``torch.ops.fastgan.*`` (compiled kernels) and ``torch.ops.fastgan_emu.*`` (the CUDA
kernels under CPU emulation): fake (meta) kernels and autograd formulas, registered on both namespaces.

Every backward is written with ops that are themselves differentiable — ``bias_act_backward``,
``dense_backward``, ``conv2d_backward`` and ``sigmoid_bce_backward`` are dispatcher ops with their own autograd
(written with the fastgan ops again, so every order of derivative runs the same kernels) — so double backward
(R1 / WGAN-GP penalties) works through every op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _activations, _ext

_NAMESPACES = {"native": "fastgan", "emu": "fastgan_emu"}
_FUNCS: dict = {}  # namespace -> _OpSet of autograd.Function.apply per op
_RAW: dict = {}  # namespace -> _OpSet of the ops called below autograd (no graph recorded)
_functorch_active = torch._C._are_functorch_transforms_active
_below_autograd = torch._C._AutoDispatchBelowAutograd  # what torch.library's own autograd kernels use
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_PLAIN = (torch.Tensor, torch.nn.Parameter)
# Ops with a C++ autograd entry point (fastgan._C.autograd_<op>, csrc/autograd.cpp). sigmoid_bce: the C++ node
# computes the logits' gradient only.
_CPP_OPS = ("bias_act", "dense", "conv2d", "sigmoid_bce")


def _cpp_state_ok() -> bool:
    """No dispatch / function mode (they must see the dispatcher op) and no forward AD (the C++ nodes have no
    JVP): the thread-wide half of whether an eager call can take the C++ autograd path; the per-call half (plain
    tensor arguments) is in the ops of ``_direct_set``."""
    return not (_dispatch_modes() or _function_modes() or _fwd_ad._current_level >= 0)


class _OpSet:
    """Differentiable entry points of one library: attribute per op (a Function's apply)."""


_DIRECT: dict = {}  # namespace -> _OpSet of the C++ autograd entry points (see direct_entries())
_fwd_ad = torch.autograd.forward_ad


def direct_entries(impl: str):
    """Ops that go straight to the C++ autograd entry points once their remaining tensor arguments are plain too
    (else to the classic Python Function), for a caller that has ruled out modes and forward AD
    (``_cpp_state_ok``), torch.func, torch.compile and a subclassed first tensor: ``fastgan.functional``'s fast
    path, and ``ns(impl)``'s eager ops after their own checks. ~1 us per call less than ``ns(impl)``."""
    return _DIRECT[_NAMESPACES[impl]]


def _direct_set(fn: _OpSet, emu: bool) -> _OpSet:
    """The C++ entry points of one library with their per-call check; ``fn``: the Python Functions' applies that
    serve any other call (filled by _register after this set is built; looked up per call)."""
    C = _ext.C
    bias_act_c, dense_c, conv2d_c, bce_c = C.autograd_bias_act, C.autograd_dense, C.autograd_conv2d, \
        C.autograd_sigmoid_bce
    d = _OpSet()

    def bias_act(x, b, dim, act, alpha, gain, clamp):
        if b is None or type(b) in _PLAIN:
            return bias_act_c(x, b, dim, act, alpha, gain, clamp, emu)
        return fn.bias_act(x, b, dim, act, alpha, gain, clamp)

    def dense(x, w, b, act, alpha, gain, clamp):
        if type(w) in _PLAIN and (b is None or type(b) in _PLAIN):
            return dense_c(x, w, b, act, alpha, gain, clamp, emu)
        return fn.dense(x, w, b, act, alpha, gain, clamp)

    def conv2d(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp):
        if type(w) in _PLAIN and (b is None or type(b) in _PLAIN):
            return conv2d_c(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp, emu)
        return fn.conv2d(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp)

    def sigmoid_bce(x, target, label, weight, pos_weight, reduction):
        if all(t is None or (type(t) in _PLAIN and not t.requires_grad) for t in (target, weight, pos_weight)):
            return bce_c(x, target, label, weight, pos_weight, reduction, emu)
        return fn.sigmoid_bce(x, target, label, weight, pos_weight, reduction)

    d.bias_act, d.dense, d.conv2d, d.sigmoid_bce = bias_act, dense, conv2d, sigmoid_bce
    return d


def ns(impl: str):
    """The differentiable entry points for an implementation: ``ns("native").bias_act(...)`` etc.

    Eager: the autograd.Function classes (they also work under torch.func). Under torch.compile: the
    dispatcher ops themselves, whose registered autograd uses the same formulas and which Dynamo traces
    without graph breaks.
    """
    name = _NAMESPACES[impl]
    if torch.compiler.is_compiling():
        return getattr(torch.ops, name)
    return _FUNCS[name]


def _entry(name: str):
    """The ops a backward formula calls. When the backward itself is not being differentiated (grad mode off:
    no create_graph, no torch.func transform) they run straight below autograd -- an autograd.Function per call
    would cost ~10-15 us of Python and record nothing useful; otherwise the differentiable Functions."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops, name)
    if not torch.is_grad_enabled() and not _functorch_active():
        return _RAW[name]
    return _FUNCS[name]


def _memory_format(t: torch.Tensor):
    """torch.channels_last when t's strides suggest it (as ATen's suggest_memory_format), else contiguous."""
    from torch._prims_common import suggest_memory_format
    return suggest_memory_format(t) if t.ndim == 4 else torch.contiguous_format


def _bcast_along(v: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.reshape(shape)


def _register(name: str) -> None:
    """Fake kernels + autograd for every op of library ``name``.

    The formulas are registered twice from one definition: on the dispatcher ops themselves
    (``torch.library.register_autograd``, so direct callers of ``torch.ops.fastgan.*`` get gradients) and as
    ``torch.autograd.Function`` classes used by :mod:`fastgan.functional` (a setup_context-style one that works
    under ``torch.func`` transforms (``grad``, ``vmap``), and a classic one for plain eager calls, which is cheaper
    per call). Backward formulas call the Function versions of
    the backward ops, so every order of derivative stays on the same path.

    Plain eager calls of bias_act, dense, conv2d and sigmoid_bce (plain tensors, no torch function / dispatch
    mode, no forward AD) go one step further: ``fastgan._C.autograd_<op>`` (csrc/autograd.cpp), C++ autograd
    nodes with the same first-order formulas, whose backward calls the backward ops through the dispatcher
    when it is itself differentiated -- so second derivatives use the formulas below.
    """
    raw = getattr(torch.ops, name)
    fn = _OpSet()  # filled below: differentiable apply() per op
    eager = _OpSet()  # the classic Python Functions' applies (what the C++ entry points fall back to)
    below = _OpSet()  # and the same ops below autograd
    has_cpp = all(hasattr(_ext.C, f"autograd_{op}") for op in _CPP_OPS)
    direct = _DIRECT[name] = _direct_set(eager, name == _NAMESPACES["emu"]) if has_cpp else fn
    q = lambda op: f"{name}::{op}"  # noqa: E731

    def register(op: str, backward, setup_context) -> None:
        torch.library.register_autograd(q(op), backward, setup_context=setup_context)
        raw_op = getattr(raw, op)

        def run(*args):
            # Straight to the kernel: the op's own autograd kernel (register_autograd above) would only check
            # grad mode and redispatch, ~30 us of Python per call (torch.library does the same internally).
            with _below_autograd():
                return raw_op(*args)

        # Two Function classes with the same formulas. setup_context style is what torch.func transforms
        # (grad, vmap) need, but its apply() binds the arguments with inspect on every call (~20 us); the classic
        # forward(ctx, ...) style skips that and serves plain eager autograd.
        ft_cls = type(f"{name}_{op}", (torch.autograd.Function,), {
            "forward": staticmethod(run),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward),
            "generate_vmap_rule": True,
        })

        def forward_with_ctx(ctx, *args):
            out = run(*args)
            setup_context(ctx, args, out)
            return out

        eager_cls = type(f"{name}_{op}_eager", (torch.autograd.Function,), {
            "forward": staticmethod(forward_with_ctx),
            "backward": staticmethod(backward),
        })
        ft_apply, eager_apply = ft_cls.apply, eager_cls.apply
        direct_op = getattr(direct, op, None) if op in _CPP_OPS else None

        def apply(*args):
            if _functorch_active():
                return ft_apply(*args)
            if direct_op is not None and type(args[0]) in _PLAIN and _cpp_state_ok():
                return direct_op(*args)  # C++ when the other tensor arguments are plain too
            return eager_apply(*args)

        setattr(fn, op, apply)
        setattr(eager, op, eager_apply)
        setattr(below, op, run)

    # backward formulas look the ops up here, through _entry (globals: torch.compile can trace them)
    _FUNCS[name] = fn
    _RAW[name] = below

    # ---------------------------------------------------------------- fake kernels
    @torch.library.register_fake(q("bias_act"))
    def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):
        return torch.empty_like(x)

    @torch.library.register_fake(q("bias_act_backward"))
    def _bias_act_backward_fake(dy, y, bias_grad, dim, act, alpha, gain, clamp):
        n = (y.shape[dim] if y.ndim else 1) if bias_grad else 0
        return torch.empty_like(y), y.new_empty((n,))

    # ---------------------------------------------------------------- batching rules (torch.func.vmap)
    # The vmapped dim is moved to the front and becomes an ordinary leading dim of one op call (the channel dim
    # shifts by one). A batched bias (or a per-sample bias gradient) is folded into the channel dim: the batch dim
    # is moved right before the channel dim and the two are merged, so one call applies sample i's bias to
    # sample i.
    def _batch_first(info, t, td):
        return t.movedim(td, 0) if td is not None else t.expand(info.batch_size, *t.shape)

    def _merge_at(t, d):
        """Batch-first t -> (t with batch x channel merged at dim d, the unmerged shape)."""
        tm = t.movedim(0, d)
        shape = tm.shape
        return tm.reshape(*shape[:d], shape[d] * shape[d + 1], *shape[d + 2:]), shape

    @torch.library.register_vmap(q("bias_act"))
    def _bias_act_vmap(info, in_dims, x, b, dim, act, alpha, gain, clamp):
        xd, bd = in_dims[0], in_dims[1]
        ndim = x.ndim - (xd is not None)  # the per-sample ndim
        d = dim % ndim if ndim else 0
        xb = _batch_first(info, x, xd)
        if b is None or bd is None:
            return raw.bias_act(xb, b, d + 1 if ndim else 0, act, alpha, gain, clamp), 0
        xm, shape = _merge_at(xb, d)
        y = raw.bias_act(xm, b.movedim(bd, 0).reshape(-1), d, act, alpha, gain, clamp)
        return y.reshape(shape).movedim(d, 0), 0

    @torch.library.register_vmap(q("bias_act_backward"))
    def _bias_act_backward_vmap(info, in_dims, dy, y, bias_grad, dim, act, alpha, gain, clamp):
        ndim = y.ndim - (in_dims[1] is not None)
        d = dim % ndim if ndim else 0
        dyb, yb = _batch_first(info, dy, in_dims[0]), _batch_first(info, y, in_dims[1])
        if not (bias_grad and ndim):
            dz, db = raw.bias_act_backward(dyb, yb, False, d + 1 if ndim else 0, act, alpha, gain, clamp)
            return (dz, db), (0, None)
        (dym, shape), (ym, _) = _merge_at(dyb, d), _merge_at(yb, d)
        dz, db = raw.bias_act_backward(dym, ym, True, d, act, alpha, gain, clamp)
        return (dz.reshape(shape).movedim(d, 0), db.reshape(info.batch_size, -1)), (0, 0)

    @torch.library.register_fake(q("dense"))
    def _dense_fake(x, w, b, act, alpha, gain, clamp):
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    @torch.library.register_fake(q("dense_backward"))
    def _dense_backward_fake(dz, x, w, mask):
        return (x.new_empty(x.shape) if mask[0] else x.new_empty((0,)),
                w.new_empty(w.shape) if mask[1] else w.new_empty((0,)))

    @torch.library.register_fake(q("conv2d"))
    def _conv2d_fake(x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp):
        return torch.ops.aten.convolution(x, w, None, stride, padding, dilation, False, [0, 0], groups)

    @torch.library.register_fake(q("conv2d_backward"))
    def _conv2d_backward_fake(dz, x, w, stride, padding, dilation, groups, mask):
        # dx in x's memory format; dw channels_last when x is (the kernels' reduction order), else contiguous
        fmt = _memory_format(x)
        return (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt) if mask[0]
                else x.new_empty((0,)),
                torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt) if mask[1]
                else w.new_empty((0,)))

    @torch.library.register_fake(q("sigmoid_bce"))
    def _bce_fake(logits, target, label, weight, pos_weight, reduction):
        if reduction == 0:
            return torch.empty_like(logits, memory_format=torch.contiguous_format)
        return logits.new_empty(())

    @torch.library.register_fake(q("sigmoid_bce_backward"))
    def _bce_backward_fake(grad, logits, target, label, weight, pos_weight, reduction):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    # ---------------------------------------------------------------- bias_act
    def bias_act_setup(ctx, inputs, output):
        x, b, dim, act, alpha, gain, clamp = inputs
        ctx.has_b = b is not None
        ctx.params = (dim, act, alpha, gain, clamp)
        ctx.save_for_backward(output)

    def bias_act_bwd(ctx, gy):
        (y,) = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.params
        want_db = ctx.has_b and ctx.needs_input_grad[1]
        dz, db = _entry(name).bias_act_backward(gy, y, want_db, dim, act, alpha, gain, clamp)
        return dz, (db if want_db else None), None, None, None, None, None

    register("bias_act", bias_act_bwd, bias_act_setup)

    def bias_act_backward_setup(ctx, inputs, output):
        dy, y, bias_grad, dim, act, alpha, gain, clamp = inputs
        ctx.params = (bias_grad, dim, act, alpha, gain, clamp)
        ctx.save_for_backward(dy, y)

    def bias_act_backward_bwd(ctx, gdz, gdb):
        dy, y = ctx.saved_tensors
        bias_grad, dim, act, alpha, gain, clamp = ctx.params
        g = gdz if gdz is not None else torch.zeros_like(y)
        if bias_grad and gdb is not None and y.ndim:
            g = g + _bcast_along(gdb, y.ndim, dim)
        gdy = gy = None
        if ctx.needs_input_grad[0]:  # dz is linear in dy: the same op applies the same mask
            gdy = _entry(name).bias_act_backward(g, y, False, dim, act, alpha, gain, clamp)[0]
        spec = _activations.get(act)
        if ctx.needs_input_grad[1] and spec.d2 is not None:  # dz depends on y through act'(y / gain)
            gy = g * dy * spec.d2(y / gain, alpha)
            if clamp >= 0:
                gy = gy * (y.abs() < clamp).to(gy.dtype)
        return gdy, gy, None, None, None, None, None, None

    register("bias_act_backward", bias_act_backward_bwd, bias_act_backward_setup)

    # ---------------------------------------------------------------- dense
    def dense_setup(ctx, inputs, output):
        x, w, b, act, alpha, gain, clamp = inputs
        ctx.has_b = b is not None
        ctx.params = (act, alpha, gain, clamp)
        ctx.save_for_backward(x, w, output)

    def dense_bwd(ctx, gy):
        x, w, y = ctx.saved_tensors
        act, alpha, gain, clamp = ctx.params
        want_db = ctx.has_b and ctx.needs_input_grad[2]
        dz, db = _entry(name).bias_act_backward(gy, y, want_db, y.ndim - 1, act, alpha, gain, clamp)
        need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
        dx = dw = None
        if need[0] or need[1]:
            dx, dw = _entry(name).dense_backward(dz, x, w, need)
        return (dx if need[0] else None), (dw if need[1] else None), (db if want_db else None), \
            None, None, None, None

    register("dense", dense_bwd, dense_setup)

    def dense_backward_setup(ctx, inputs, output):
        dz, x, w, mask = inputs
        ctx.mask = (bool(mask[0]), bool(mask[1]))
        ctx.save_for_backward(dz, x, w)

    def dense_backward_bwd(ctx, gdx, gdw):
        # dx = dz @ w and dw = dz^T @ x are bilinear: each gradient is another dense / dense_backward.
        dz, x, w = ctx.saved_tensors
        gdx = gdx if ctx.mask[0] and gdx is not None and gdx.numel() else None
        gdw = gdw if ctx.mask[1] and gdw is not None and gdw.numel() else None
        e = _entry(name)
        gdz = gx = gw = None
        if ctx.needs_input_grad[0]:
            terms = []
            if gdx is not None:
                terms.append(e.dense(gdx, w, None, "linear", 0.0, 1.0, -1.0))  # gdx @ w^T
            if gdw is not None:
                terms.append(e.dense(x, gdw, None, "linear", 0.0, 1.0, -1.0))  # x @ gdw^T
            gdz = sum(terms[1:], terms[0]) if terms else torch.zeros_like(dz)
        if ctx.needs_input_grad[1] and gdw is not None:
            gx = e.dense_backward(dz, x, gdw, [True, False])[0]  # dz @ gdw
        if ctx.needs_input_grad[2] and gdx is not None:
            gw = e.dense_backward(dz, gdx, w, [False, True])[1]  # dz^T @ gdx
        return gdz, gx, gw, None

    register("dense_backward", dense_backward_bwd, dense_backward_setup)

    # ---------------------------------------------------------------- conv2d
    def conv2d_setup(ctx, inputs, output):
        x, w, b, stride, padding, dilation, groups, act, alpha, gain, clamp = inputs
        ctx.has_b = b is not None
        ctx.conv = (stride, padding, dilation, groups)
        ctx.params = (act, alpha, gain, clamp)
        ctx.save_for_backward(x, w, output)

    def conv2d_bwd(ctx, gy):
        x, w, y = ctx.saved_tensors
        act, alpha, gain, clamp = ctx.params
        stride, padding, dilation, groups = ctx.conv
        want_db = ctx.has_b and ctx.needs_input_grad[2]
        dz, db = _entry(name).bias_act_backward(gy, y, want_db, 1, act, alpha, gain, clamp)
        need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
        dx = dw = None
        if need[0] or need[1]:
            dx, dw = _entry(name).conv2d_backward(dz, x, w, stride, padding, dilation, groups, need)
        return (dx if need[0] else None), (dw if need[1] else None), (db if want_db else None), \
            None, None, None, None, None, None, None, None

    register("conv2d", conv2d_bwd, conv2d_setup)

    def conv2d_backward_setup(ctx, inputs, output):
        dz, x, w, stride, padding, dilation, groups, mask = inputs
        ctx.conv = (stride, padding, dilation, groups)
        ctx.mask = (bool(mask[0]), bool(mask[1]))
        ctx.save_for_backward(dz, x, w)

    def conv2d_backward_bwd(ctx, gdx, gdw):
        # dx = conv_transpose(dz, w) and dw = correlate(x, dz) are bilinear; their adjoints are conv2d and
        # conv2d_backward again.
        dz, x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        gdx = gdx if ctx.mask[0] and gdx is not None and gdx.numel() else None
        gdw = gdw if ctx.mask[1] and gdw is not None and gdw.numel() else None
        e = _entry(name)
        gdz = gx = gw = None
        if ctx.needs_input_grad[0]:
            terms = []
            if gdx is not None:
                terms.append(e.conv2d(gdx, w, None, stride, padding, dilation, groups, "linear", 0.0, 1.0, -1.0))
            if gdw is not None:
                terms.append(e.conv2d(x, gdw, None, stride, padding, dilation, groups, "linear", 0.0, 1.0, -1.0))
            gdz = sum(terms[1:], terms[0]) if terms else torch.zeros_like(dz)
        if ctx.needs_input_grad[1] and gdw is not None:
            gx = e.conv2d_backward(dz, x, gdw, stride, padding, dilation, groups, [True, False])[0]
        if ctx.needs_input_grad[2] and gdx is not None:
            gw = e.conv2d_backward(dz, gdx, w, stride, padding, dilation, groups, [False, True])[1]
        return gdz, gx, gw, None, None, None, None, None

    register("conv2d_backward", conv2d_backward_bwd, conv2d_backward_setup)

    # ---------------------------------------------------------------- sigmoid + BCE
    def bce_setup(ctx, inputs, output):
        logits, target, label, weight, pos_weight, reduction = inputs
        ctx.label, ctx.reduction = label, reduction
        ctx.save_for_backward(logits, target, weight, pos_weight)

    def bce_bwd(ctx, g):
        logits, target, weight, pos_weight = ctx.saved_tensors
        label, reduction = ctx.label, ctx.reduction
        dx = dt = dw = dp = None
        if ctx.needs_input_grad[0]:
            dx = _entry(name).sigmoid_bce_backward(g, logits, target, label, weight, pos_weight, reduction)
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

    register("sigmoid_bce", bce_bwd, bce_setup)

    def bce_backward_setup(ctx, inputs, output):
        grad, logits, target, label, weight, pos_weight, reduction = inputs
        ctx.label, ctx.reduction = label, reduction
        ctx.save_for_backward(grad, logits, target, weight, pos_weight)

    def bce_backward_bwd(ctx, gg):
        grad, x, target, weight, pos_weight = ctx.saved_tensors
        label, reduction = ctx.label, ctx.reduction
        n = x.numel()
        G = grad if reduction == 0 else (grad / n if reduction == 1 else grad)
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
                out[0] = ((gg * d).sum() / (n if reduction == 1 else 1)).reshape(grad.shape)
        if ctx.needs_input_grad[1]:
            out[1] = gg * G * W * q1 * s * (1 - s)
        if ctx.needs_input_grad[2]:
            out[2] = gg * G * W * ((P - 1) * s - P)
        if ctx.needs_input_grad[4]:
            out[4] = (gg * G * (q1 * s - P * T)).sum_to_size(weight.shape)
        if ctx.needs_input_grad[5]:
            out[5] = (gg * G * W * (T * s - T)).sum_to_size(pos_weight.shape)
        return tuple(out)

    register("sigmoid_bce_backward", bce_backward_bwd, bce_backward_setup)




if _ext.C is not None:
    _register("fastgan")
    if _ext.has_emu():
        _register("fastgan_emu")
