"""Convert an existing model to fused layers and back.

``fastgan.fuse(model)`` rewrites Linear / Conv2d / ConvTranspose2d followed by LeakyReLU / ReLU / Sigmoid /
Tanh inside an ``nn.Sequential`` (at any depth, also inside custom modules) into one fused layer with the same
weights; the activation's slot is kept as an identity placeholder, so ``state_dict`` keys do not change and
``fastgan.unfuse`` restores the original structure exactly. A layer under torch's parametrizations
(``parametrizations.spectral_norm`` / ``weight_norm``) fuses with them kept. Anywhere in the model, a remaining
``LeakyReLU`` becomes :class:`fastgan.nn.LeakyReLU` and ``BCEWithLogitsLoss``
:class:`fastgan.nn.BCEWithLogitsLoss` (the same module state, hooks included).

What is never rewritten, so that the converted model computes what the original did:
- a custom module's ``forward`` code (its ``F.leaky_relu(self.conv(x))``): rewriting it means tracing it, and a
  trace freezes its Python state -- a fade-in weight, ``self.training``, an optional argument's branch -- and drops
  what the trace did not touch (buffers, other methods). Use ``fastgan.nn`` / ``fastgan.functional`` there;
- an ``nn.Sequential`` subclass with its own ``forward`` (it is not a chain);
- a pair where either module has hooks that would see a different tensor (a forward hook on the layer would see
  the activation's output; a forward pre-hook, as ``torch.nn.utils.spectral_norm``'s, is fine).
Within a fused chain the layer's slot yields the activation's output and the activation's slot passes it on:
code that walks the ``Sequential`` collecting each slot's output sees that.
"""
from __future__ import annotations

import copy
import logging
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

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


def _has_hooks(m: nn.Module, pre: bool = True) -> bool:
    """Whether ``m`` has hooks that fusing would change: any on an activation; on a layer, those that see its output
    or its gradients (a forward pre-hook sees the same input either way: torch.nn.utils.spectral_norm's)."""
    names = ("_forward_hooks", "_backward_hooks", "_backward_pre_hooks") + (("_forward_pre_hooks",) if pre else ())
    return any(getattr(m, name, None) for name in names)


class _Placeholder(nn.Identity):
    """Keeps the slot of an activation that was fused into the preceding layer (so keys and indices stay)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = [original]  # a list: not registered as a submodule, not in state_dict

    def extra_repr(self) -> str:
        return f"fused into the previous layer: {self.original[0]}"


def _layer_type(m: nn.Module) -> type:
    """``m``'s layer class; for a layer with torch parametrizations (``parametrizations.spectral_norm`` /
    ``weight_norm``, whose class torch derives per module), the class it was made from."""
    return parametrize.type_before_parametrizations(m)


def _as_class(m: nn.Module, cls: type) -> type:
    """``cls``, or for a parametrized ``m`` torch's derived class rebased on ``cls``: the same properties (the
    parametrized ``weight``) and copy / pickle rules over the other layer class."""
    if type(m) is _layer_type(m):
        return cls
    extra = {k: v for k, v in vars(type(m)).items() if k not in ("__dict__", "__weakref__")}
    return type(f"Parametrized{cls.__name__}", (cls,), extra)


def _retyped(module: nn.Module, cls: type, drop=()) -> nn.Module:
    """``module``'s state (parameters, buffers, submodules, hooks, flags; less the attributes ``drop``) as an
    instance of ``cls``, a drop-in twin of its class: the same tensors under the same names."""
    new = cls.__new__(cls)
    new.__dict__ = {k: v for k, v in module.__dict__.items() if k not in drop}
    for d in ("_parameters", "_buffers", "_modules"):
        setattr(new, d, dict(getattr(module, d)))
    return new


def _fused_copy(layer: nn.Module, act: str, alpha: Optional[float]) -> nn.Module:
    """A fused layer sharing ``layer``'s parameters (and its parametrizations)."""
    new = _retyped(layer, _as_class(layer, _LAYER_TO_FUSED[_layer_type(layer)]))
    new._set_act(act, alpha, 1.0, None)
    return new


def _stock_copy(layer: nn.Module) -> nn.Module:
    cls = _as_class(layer, _FUSED_TO_LAYER[_layer_type(layer)])
    return _retyped(layer, cls, drop=("act", "alpha", "gain", "clamp"))


def _fuse_sequential(seq: nn.Sequential, prefix: str, report: List[str]) -> None:
    names = list(seq._modules)
    i = 0
    while i < len(names):
        m = seq._modules[names[i]]
        nxt = seq._modules[names[i + 1]] if i + 1 < len(names) else None
        if _layer_type(m) in _LAYER_TO_FUSED and nxt is not None and _act_of(nxt) is not None \
                and not _has_hooks(m, pre=False) and not _has_hooks(nxt):
            act, alpha = _act_of(nxt)
            seq._modules[names[i]] = _fused_copy(m, act, alpha)
            seq._modules[names[i + 1]] = _Placeholder(nxt)
            report.append(f"{prefix}{names[i]}+{prefix}{names[i + 1]}: {type(m).__name__}+{type(nxt).__name__} "
                          f"-> {_LAYER_TO_FUSED[_layer_type(m)].__name__}(act={act!r})")
            i += 2
            continue
        i += 1


def _fuse(module: nn.Module, prefix: str, report: List[str]) -> nn.Module:
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:  # a chain
        _fuse_sequential(module, prefix, report)
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if type(child) is nn.LeakyReLU and child.negative_slope >= 0:
            module._modules[name] = _retyped(child, fnn.LeakyReLU)
            report.append(f"{prefix}{name}: LeakyReLU -> fastgan.nn.LeakyReLU")
        elif type(child) is nn.BCEWithLogitsLoss:
            module._modules[name] = _retyped(child, fnn.BCEWithLogitsLoss)
            report.append(f"{prefix}{name}: BCEWithLogitsLoss -> fastgan.nn.BCEWithLogitsLoss")
        else:
            module._modules[name] = _fuse(child, f"{prefix}{name}.", report)
    return module


def _copy(model: nn.Module, what: str) -> nn.Module:
    """The copy fuse / unfuse convert (inplace=False); torch's deepcopy refuses some models (old-style spectral_norm
    or weight_norm after a forward holds a computed weight): the error then says how to go on."""
    try:
        return copy.deepcopy(model)
    except RuntimeError as e:
        raise RuntimeError(f"{what}: the model cannot be copied ({e}); pass inplace=True to convert it in place") \
            from None


def fuse(model: nn.Module, inplace: bool = False, return_report: bool = False):
    """Rewrite ``model`` to use fastgan's fused layers (same weights). See the module docstring.

    Returns the converted model, or ``(model, report)`` with ``return_report=True``, where ``report`` lists
    every change as ``"path: before -> after"`` (also logged at INFO level on ``fastgan.convert``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = _copy(model, "fuse")
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
        model = _copy(model, "unfuse")

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
            if _layer_type(child) in _FUSED_TO_LAYER:
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
                module._modules[name] = _retyped(child, nn.LeakyReLU)
            elif type(child) is fnn.BCEWithLogitsLoss:
                module._modules[name] = _retyped(child, nn.BCEWithLogitsLoss)
            elif isinstance(child, _Placeholder):
                continue  # restored together with its layer
            else:
                module._modules[name] = visit(child)
        return module

    if _layer_type(model) in _FUSED_TO_LAYER:
        return visit(nn.Sequential(model))[0]
    return visit(model)
