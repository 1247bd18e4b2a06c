"""fastgan: fused CUDA/C++ kernels for GAN building blocks, as PyTorch ops and drop-in layers.

Importing fastgan never compiles anything; without the compiled extension every op runs on the pure-PyTorch
reference path (see ``fastgan doctor``).
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._impl import available_impls, cuda_gemm_route, use_impl  # noqa: E402
from . import functional, nn  # noqa: E402
from .convert import fuse, unfuse  # noqa: E402

__all__ = ["__version__", "available_impls", "use_impl", "cuda_gemm_route", "functional", "nn", "fuse", "unfuse"]
