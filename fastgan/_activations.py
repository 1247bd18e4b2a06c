"""The one table of activations.

Every implementation (pure-PyTorch reference, C++ CPU kernels, CUDA kernels and their emulation) reads its
activation list from here on the Python side and from the ``FG_ACTIVATIONS`` X-macro in
``csrc/kernels/activation.cuh`` on the C++ side; a test in ``tests/test_api.py`` checks that the two agree.

Adding an activation means: one row here, one ``__host__ __device__`` functor plus one X-macro line in C++.

Columns
-------
code       integer id shared with C++ (``fastgan::Act``)
alpha      default ``alpha`` (only lrelu uses it)
gain       default ``gain`` of :func:`fastgan.functional.bias_act` (StyleGAN convention: sqrt(2) for the
           rectifiers, so activations keep unit variance); the torch-compatible API
           (``linear``/``conv2d``/``leaky_relu``/``fastgan.nn``) always defaults to gain 1.
ref        the activation in pure PyTorch, ``ref(x, alpha)``
dy_from_y  derivative of ``act`` expressed through its own output ``a = act(x)`` (so ``y`` is saved, not ``x``)
d2         ``d(act'(x))/d a`` written through ``a`` — non-zero only for smooth activations; ``None`` when the
           derivative is piecewise constant in ``a``.
module     the ``torch.nn`` module computing it (``fastgan.fuse`` / ``unfuse``), None for linear; ``alpha_attr``: its
           attribute (and constructor keyword) holding alpha
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Activation:
    name: str
    code: int
    alpha: float
    gain: float
    ref: Callable[[torch.Tensor, float], torch.Tensor]
    dy_from_y: Callable[[torch.Tensor, float], torch.Tensor]
    d2: Optional[Callable[[torch.Tensor, float], torch.Tensor]]
    module: Optional[type] = None
    alpha_attr: Optional[str] = None


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", 0, 0.0, 1.0,
                   lambda x, al: x,
                   lambda a, al: torch.ones_like(a),
                   None),
        Activation("relu", 1, 0.0, math.sqrt(2),
                   lambda x, al: torch.relu(x),
                   lambda a, al: (~(a <= 0)).to(a.dtype),  # NaN passes the gradient, as torch.relu
                   None,
                   nn.ReLU, None),
        Activation("lrelu", 2, 0.2, math.sqrt(2),
                   lambda x, al: F.leaky_relu(x, al),  # stock's op: one pass, as fast as stock
                   lambda a, al: torch.where(a > 0, torch.ones_like(a), torch.full_like(a, al)),
                   None,
                   nn.LeakyReLU, "negative_slope"),
        Activation("sigmoid", 3, 0.0, 1.0,
                   lambda x, al: torch.sigmoid(x),
                   lambda a, al: a * (1 - a),
                   lambda a, al: 1 - 2 * a,
                   nn.Sigmoid, None),
        Activation("tanh", 4, 0.0, 1.0,
                   lambda x, al: torch.tanh(x),
                   lambda a, al: 1 - a * a,
                   lambda a, al: -2 * a,
                   nn.Tanh, None),
    ]
}


def is_identity(act: str, gain: float, clamp: float) -> bool:
    """Whether act(z) * gain, clamped (clamp < 0: none), is z itself: nothing for a pass to apply."""
    return act == "linear" and gain == 1 and clamp < 0


def get(name: str) -> Activation:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"act: unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _number(v, name: str) -> float:
    """A real number (int, float, NumPy scalar or a 0-d real tensor) as a float; strings and bools are refused by
    name (float('1') or float(True) would accept them silently)."""
    if isinstance(v, torch.Tensor) and v.ndim == 0 and not v.is_complex():
        return float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    return float(v)


def resolve(act: str, alpha: Optional[float], gain: Optional[float], clamp: Optional[float]):
    """Validate and fill defaults; returns (Activation, alpha, gain, clamp_or_-1)."""
    spec = get(act)
    alpha = spec.alpha if alpha is None else _number(alpha, "alpha")
    gain = spec.gain if gain is None else _number(gain, "gain")
    # (comparisons, not math.isfinite: under torch.compile(dynamic=True) a layer's float may be symbolic; NaN fails
    # every comparison)
    if not 0 <= alpha < math.inf:
        raise ValueError(f"alpha: expected a finite number >= 0, got {alpha}")
    if not 0 < gain < math.inf:
        raise ValueError(f"gain: expected a finite number > 0, got {gain}")
    if clamp is None:
        clamp = -1.0
    else:
        clamp = _number(clamp, "clamp")
        if not 0 <= clamp < math.inf:
            raise ValueError(f"clamp: expected None or a finite number >= 0, got {clamp}")
    return spec, alpha, gain, clamp
