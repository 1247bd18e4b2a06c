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
    elif _activations.is_identity(act, gain, clamp):
        return x.clone()  # a new tensor, as the kernels' (an in-place change of the result must not change x)
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
    """The value of ``F.binary_cross_entropy_with_logits``, written as ``p t softplus(-x) + (1 - t) softplus(x)``:
    a sum of non-negative terms, so confident logits keep full relative precision (torch's
    ``(1 - t) x + softplus(-x)`` cancels for t = 0, x << 0), and differentiable with respect to ``weight`` and
    ``pos_weight`` (torch's op is not). Same formula as the kernels (csrc/kernels/bce_math.cuh)."""
    t = label if target is None else target
    p = 1.0 if pos_weight is None else pos_weight
    loss = p * t * F.softplus(-logits) + (1 - t) * F.softplus(logits)  # softplus is stable for any finite x
    if weight is not None:
        loss = loss * weight
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def sum_squares(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * sum(x^2)``, one element; half types squared, summed and scaled in float32 (as the kernels)."""
    acc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (acc.square().sum() * scale).to(x.dtype)
