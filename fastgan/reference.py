"""Pure-PyTorch reference of every fastgan op.

This module is the test oracle, the benchmark baseline ("stock composition") and the fallback used when the
compiled extension ``fastgan._C`` is not available. It is written with stock torch ops only, so autograd
(including double backward) comes from PyTorch itself. Arguments are assumed validated by
:mod:`fastgan.functional`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import _activations

REDUCTIONS = ("none", "mean", "sum")


def _epilogue(z: torch.Tensor, act: str, alpha: float, gain: float, clamp: float) -> torch.Tensor:
    spec = _activations.get(act)
    y = spec.ref(z, alpha)
    if gain != 1:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float,
             clamp: float) -> torch.Tensor:
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    return _epilogue(x, act, alpha, gain, clamp)


def dense(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], act: str, alpha: float, gain: float,
          clamp: float) -> torch.Tensor:
    return _epilogue(F.linear(x, w, b), act, alpha, gain, clamp)


def conv2d(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int, act: str, alpha: float, gain: float,
           clamp: float) -> torch.Tensor:
    return _epilogue(F.conv2d(x, w, b, stride, padding, dilation, groups), act, alpha, gain, clamp)


def sigmoid_bce(logits: torch.Tensor, target: Optional[torch.Tensor], label: float,
                weight: Optional[torch.Tensor], pos_weight: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Same value as ``F.binary_cross_entropy_with_logits`` (the stable formula it uses), written out so it is
    also differentiable with respect to ``weight`` and ``pos_weight`` (torch's op is not)."""
    t = label if target is None else target
    sp = F.softplus(-logits)  # log(1 + exp(-x)), stable for any finite x
    if pos_weight is None:
        loss = (1 - t) * logits + sp
    else:
        loss = (1 - t) * logits + (1 + (pos_weight - 1) * t) * sp
    if weight is not None:
        loss = loss * weight
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
