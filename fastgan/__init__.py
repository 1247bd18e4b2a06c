"""fastgan: fused CUDA/C++ kernels for GAN building blocks, as PyTorch ops and drop-in layers.

Importing fastgan never compiles anything; without the compiled extension every op runs on the pure-PyTorch
reference path (see ``fastgan doctor``). The names below load on first use, so the command line (``fastgan``)
parses its arguments before torch is imported.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "available_impls", "use_impl", "cuda_gemm_route", "cuda_pdl", "functional", "nn", "optim",
           "fuse", "unfuse", "no_weight_gradients"]
_WHERE = {"available_impls": "._impl", "use_impl": "._impl", "cuda_gemm_route": "._impl", "cuda_pdl": "._impl",
          "fuse": ".convert",
          "unfuse": ".convert", "functional": ".functional", "nn": ".nn", "optim": ".optim",
          "no_weight_gradients": ".functional"}


def __getattr__(name: str):
    if name in _WHERE:
        mod = importlib.import_module(_WHERE[name], __name__)
        value = mod if name in ("functional", "nn", "optim") else getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
