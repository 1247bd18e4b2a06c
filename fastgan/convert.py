"""Convert an existing model to fused layers and back.

``fastgan.fuse(model)`` rewrites Linear / Conv2d / ConvTranspose2d followed by LeakyReLU / ReLU / Sigmoid /
Tanh into one fused layer with the same weights; a remaining standalone ``LeakyReLU`` becomes
:class:`fastgan.nn.LeakyReLU` and ``BCEWithLogitsLoss`` becomes :class:`fastgan.nn.BCEWithLogitsLoss`.
Inside ``nn.Sequential`` (at any nesting depth) the activation's slot is kept as an identity placeholder, so
``state_dict`` keys do not change and ``fastgan.unfuse`` restores the original structure exactly. Other
modules whose ``forward`` is ``torch.fx``-traceable are rewritten on their graph (the result is a
``GraphModule``); modules that cannot be traced are left as they are, with their children still converted.
"""
from __future__ import annotations

import copy
import inspect
import logging
from typing import List, Optional, Tuple

import torch
from torch import nn

from . import _activations
from . import nn as fnn

log = logging.getLogger("fastgan.convert")

_LAYER_TO_FUSED = {nn.Linear: fnn.FusedLinear, nn.Conv2d: fnn.FusedConv2d, nn.ConvTranspose2d: fnn.FusedConvTranspose2d}
_FUSED_TO_LAYER = {v: k for k, v in _LAYER_TO_FUSED.items()}


def _act_of(m) -> Optional[Tuple[str, Optional[float]]]:
    """(act, alpha) for a fusable activation module (the activation table's modules, and fastgan.nn's drop-in
    twins of them), else None. A negative alpha (leaky ReLU slope) is not fusable."""
    for spec in _activations.ACTIVATIONS.values():
        if spec.module is None or type(m) not in (spec.module, getattr(fnn, spec.module.__name__, None)):
            continue
        alpha = getattr(m, spec.alpha_attr) if spec.alpha_attr else None
        return (spec.name, alpha) if alpha is None or alpha >= 0 else None
    return None


# torch function -> activation name, for torch.fx graphs
_FX_FUNCS = {f: spec.name for spec in _activations.ACTIVATIONS.values() for f in spec.functions}


def _fx_defaults(func) -> dict:
    """func's keyword defaults (F.leaky_relu's slope: 0.01, not the table's 0.2; inplace False)."""
    try:
        return {k: v.default for k, v in inspect.signature(func).parameters.items()}
    except (TypeError, ValueError):  # a builtin without a signature: positional input only
        return {}


class _Placeholder(nn.Identity):
    """Keeps the slot of an activation that was fused into the preceding layer (so keys and indices stay)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = [original]  # a list: not registered as a submodule, not in state_dict

    def extra_repr(self) -> str:
        return f"fused into the previous layer: {self.original[0]}"


def _fused_copy(layer: nn.Module, act: str, alpha: Optional[float]) -> nn.Module:
    """A fused layer sharing ``layer``'s parameters (same tensors, same names)."""
    cls = _LAYER_TO_FUSED[type(layer)]
    new = cls.__new__(cls)
    new.__dict__ = layer.__dict__.copy()
    new._parameters = dict(layer._parameters)
    new._buffers = dict(layer._buffers)
    new._modules = dict(layer._modules)
    new._set_act(act, alpha, 1.0, None)
    return new


def _stock_copy(layer: nn.Module) -> nn.Module:
    cls = _FUSED_TO_LAYER[type(layer)]
    new = cls.__new__(cls)
    new.__dict__ = {k: v for k, v in layer.__dict__.items() if k not in ("act", "alpha", "gain", "clamp")}
    new._parameters = dict(layer._parameters)
    new._buffers = dict(layer._buffers)
    new._modules = dict(layer._modules)
    return new


def _bce(loss: nn.BCEWithLogitsLoss) -> nn.Module:
    new = fnn.BCEWithLogitsLoss.__new__(fnn.BCEWithLogitsLoss)
    new.__dict__ = loss.__dict__.copy()
    new._buffers = dict(loss._buffers)
    return new


def _fuse_sequential(seq: nn.Sequential, prefix: str, report: List[str]) -> None:
    names = list(seq._modules)
    i = 0
    while i < len(names):
        m = seq._modules[names[i]]
        nxt = seq._modules[names[i + 1]] if i + 1 < len(names) else None
        if type(m) in _LAYER_TO_FUSED and nxt is not None and _act_of(nxt) is not None:
            act, alpha = _act_of(nxt)
            seq._modules[names[i]] = _fused_copy(m, act, alpha)
            seq._modules[names[i + 1]] = _Placeholder(nxt)
            report.append(f"{prefix}{names[i]}+{prefix}{names[i + 1]}: {type(m).__name__}+{type(nxt).__name__} "
                          f"-> {_LAYER_TO_FUSED[type(m)].__name__}(act={act!r})")
            i += 2
            continue
        i += 1


def _fuse_fx(module: nn.Module, prefix: str, report: List[str]) -> nn.Module:
    """Rewrite a traceable module's graph: layer -> activation pairs become one fused layer."""
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - any tracing failure means: leave it as it is
        log.info("fastgan.fuse: %s is not fx-traceable (%s); left unchanged", prefix or type(module).__name__, e)
        return module
    changed = False
    modules = dict(gm.named_modules())
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) not in _LAYER_TO_FUSED:
            continue
        if len(node.users) != 1 or calls[node.target] != 1:  # a layer called twice keeps its stock form
            continue
        (user,) = node.users
        act = alpha = None
        if user.op == "call_module" and _act_of(modules.get(user.target)) is not None:
            act, alpha = _act_of(modules[user.target])
        elif user.op == "call_function" and user.target in _FX_FUNCS:
            args, kwargs = list(user.args), dict(user.kwargs)
            if not args and "input" in kwargs:  # torch.tanh(input=h)
                args.append(kwargs.pop("input"))
            if not args or args[0] is not node:
                continue
            act = _FX_FUNCS[user.target]
            spec = _activations.get(act)
            defaults = _fx_defaults(user.target)
            # other keywords (inplace=...) only at their defaults
            if any(k != spec.alpha_attr and defaults.get(k, object()) != v for k, v in kwargs.items()):
                continue
            if spec.alpha_attr:
                alpha = kwargs.get(spec.alpha_attr, args[1] if len(args) > 1 else defaults.get(spec.alpha_attr))
                if not isinstance(alpha, (int, float)) or alpha < 0 or len(args) > 2:
                    continue
            elif len(args) > 1:
                continue
        if act is None:
            continue
        layer = modules[node.target]
        gm.get_submodule(node.target)  # exists
        parent, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, _fused_copy(layer, act, alpha))
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        report.append(f"{prefix}{node.target}+{user.target if user.op == 'call_module' else user.target.__name__}: "
                      f"{type(layer).__name__}+activation -> {_LAYER_TO_FUSED[type(layer)].__name__}(act={act!r})")
        changed = True
    if not changed:
        return module
    gm.graph.lint()
    gm.recompile()
    return gm


def _fuse(module: nn.Module, prefix: str, report: List[str]) -> nn.Module:
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, prefix, report)
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if type(child) is nn.LeakyReLU and child.negative_slope >= 0:
            module._modules[name] = fnn.LeakyReLU(child.negative_slope, child.inplace)
            report.append(f"{prefix}{name}: LeakyReLU -> fastgan.nn.LeakyReLU")
        elif type(child) is nn.BCEWithLogitsLoss:
            module._modules[name] = _bce(child)
            report.append(f"{prefix}{name}: BCEWithLogitsLoss -> fastgan.nn.BCEWithLogitsLoss")
        else:
            module._modules[name] = _fuse(child, f"{prefix}{name}.", report)
    if not isinstance(module, nn.Sequential) and type(module).forward is not nn.Module.forward \
            and type(module).__module__.split(".")[0] not in ("torch", "fastgan"):
        module = _fuse_fx(module, prefix, report)
    return module


def fuse(model: nn.Module, inplace: bool = False, return_report: bool = False):
    """Rewrite ``model`` to use fastgan's fused layers (same weights). See the module docstring.

    Returns the converted model, or ``(model, report)`` with ``return_report=True``, where ``report`` lists
    every change as ``"path: before -> after"`` (also logged at INFO level on ``fastgan.convert``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report: List[str] = []
    if type(model) in _LAYER_TO_FUSED or type(model) is nn.BCEWithLogitsLoss or type(model) is nn.LeakyReLU:
        holder = nn.Sequential(model)
        model = _fuse(holder, "", report)[0]
    else:
        model = _fuse(model, "", report)
    for line in report:
        log.info("fastgan.fuse: %s", line)
    return (model, report) if return_report else model


def unfuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Restore stock torch layers with the same weights.

    A fused layer followed by the placeholder that :func:`fuse` left gets its activation module back in that
    slot (the original structure and keys). A fused layer with an activation but no such slot (built directly
    from ``fastgan.nn``) becomes ``nn.Sequential(layer, activation)``: same weights, keys gain a ``.0``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)

    def act_module(m):
        spec = _activations.get(m.act)
        if spec.module is None:
            return None
        if spec.alpha_attr:
            return spec.module(**{spec.alpha_attr: spec.alpha if m.alpha is None else m.alpha})
        return spec.module()

    def visit(module: nn.Module) -> nn.Module:
        names = list(module._modules)
        for i, name in enumerate(names):
            child = module._modules[name]
            if child is None:
                continue
            if type(child) in _FUSED_TO_LAYER:
                if child.gain != 1.0 or child.clamp is not None:
                    raise ValueError(f"unfuse: {name} uses gain={child.gain}, clamp={child.clamp}, which has no "
                                     "stock torch layer equivalent")
                stock = _stock_copy(child)
                nxt = module._modules[names[i + 1]] if i + 1 < len(names) else None
                act = act_module(child)
                if isinstance(nxt, _Placeholder):
                    module._modules[name] = stock
                    module._modules[names[i + 1]] = nxt.original[0]
                elif act is None:
                    module._modules[name] = stock
                else:
                    module._modules[name] = nn.Sequential(stock, act)
            elif type(child) is fnn.LeakyReLU:
                module._modules[name] = nn.LeakyReLU(child.negative_slope, child.inplace)
            elif type(child) is fnn.BCEWithLogitsLoss:
                new = nn.BCEWithLogitsLoss.__new__(nn.BCEWithLogitsLoss)
                new.__dict__ = child.__dict__.copy()
                module._modules[name] = new
            elif isinstance(child, _Placeholder):
                continue  # restored together with its layer
            else:
                module._modules[name] = visit(child)
        return module

    if type(model) in _FUSED_TO_LAYER:
        return visit(nn.Sequential(model))[0]
    return visit(model)
