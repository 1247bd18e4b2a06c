"""Python side of the dispatcher ops ``torch.ops.fastgan.*`` (compiled in ``fastgan._C``), one module per op:
fake kernel, batching rule where needed, and one set of autograd formulas each (see :mod:`._registry`).

Imported by :mod:`fastgan.functional` only when ``fastgan._C`` is loaded (the schemas live there).
"""
from __future__ import annotations

from .._ext import C

if C is not None:
    from . import adam, bce, bias_act, conv2d, dense, linear_bce, sum_squares  # noqa: F401  (registers everything)
    from ._registry import FUNCTIONS  # noqa: F401
