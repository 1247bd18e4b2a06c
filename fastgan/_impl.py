"""Choice of implementation: ``auto`` | ``native`` | ``emu`` | ``torch``.

* ``torch``  — the pure-PyTorch reference (:mod:`fastgan.reference`); always available.
* ``native`` — the compiled kernels: C++ on CPU tensors, CUDA on CUDA tensors.
* ``emu``    — the CUDA kernel sources executed on the CPU by the emulator (CPU tensors only); for testing.
* ``auto``   — ``native`` where it is built for the tensor's device, else ``torch`` (with a one-time warning).

Select with :func:`use_impl` (a context manager that also works as a plain setter) or the ``FASTGAN_IMPL``
environment variable.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

from . import _ext

NAMES = ("auto", "native", "emu", "torch")
_current = None  # set by use_impl; None -> environment / auto


def _check(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"impl: unknown implementation {name!r}; expected one of {list(NAMES)}")
    if name not in available_impls():
        raise RuntimeError(f"impl: implementation {name!r} is not available in this build: {unavailable_reason(name)}")
    return name


def unavailable_reason(name: str) -> str:
    if name in ("native", "emu") and _ext.C is None:
        return _ext.load_error or "fastgan._C not loaded"
    if name == "emu" and not _ext.has_emu():
        return "fastgan._C was built without the CUDA emulation (FASTGAN_EMU=0)"
    return ""


def available_impls() -> list:
    out = ["auto", "torch"]
    if _ext.C is not None:
        out.insert(1, "native")
        if _ext.has_emu():
            out.insert(2, "emu")
    return out


# FASTGAN_IMPL is read on every fused call (it may change at run time, e.g. in tests), so the lookup is kept
# cheap: os.environ.get costs ~0.7 us (key encoding, Mapping machinery); CPython's os.environ keeps the encoded
# mapping in ``_data``, a plain dict, whose lookup is ~50 ns. Other platforms / interpreters use os.environ.get.
try:
    _ENV_DATA, _ENV_KEY, _env_decode = os.environ._data, os.environ.encodekey("FASTGAN_IMPL"), os.environ.decodevalue
except AttributeError:  # pragma: no cover - not CPython's os._Environ
    _ENV_DATA = None
_env_parsed = ("", "auto")  # (raw value, implementation name) of the last successful parse


def _env_raw() -> str:
    if _ENV_DATA is None:  # pragma: no cover
        return os.environ.get("FASTGAN_IMPL", "")
    raw = _ENV_DATA.get(_ENV_KEY)
    return "" if raw is None else _env_decode(raw)


def current() -> str:
    global _env_parsed
    if _current is not None:
        return _current
    raw = _env_raw()
    if raw == _env_parsed[0]:
        return _env_parsed[1]
    env = raw.strip()
    name = "auto"
    if env:
        try:
            name = _check(env)
        except (ValueError, RuntimeError) as e:
            raise RuntimeError(f"FASTGAN_IMPL={env!r}: {e}") from None
    _env_parsed = (raw, name)
    return name


class _Setting:
    """A process setting usable three ways (as ``torch.set_grad_enabled``): a plain call sets it for good; ``with``
    sets it for the block and then restores what was there before; as a decorator it applies to each call of the
    function only. Subclasses define ``_get`` / ``_set``; ``__init__`` validates and applies the value."""

    def __init__(self, value):
        self.value = value
        self._pending = self._get()  # what the construction-time change replaced (plain-setter use)
        self._set(value)
        self._stack = []

    def _take_over(self):
        """The value before construction, once: a ``with`` block or a decorator owns the change from then on."""
        prev, self._pending = self._pending, _NONE
        return prev

    def __enter__(self):
        prev = self._take_over()
        self._stack.append(self._get() if prev is _NONE else prev)
        self._set(self.value)
        return self

    def __exit__(self, *exc):
        self._set(self._stack.pop())
        return False

    def __call__(self, func):
        prev = self._take_over()  # a decorator: undo the construction-time setting, apply per call
        if prev is not _NONE:
            self._set(prev)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return wrapper


_NONE = object()


class use_impl(_Setting):
    """Select the implementation: ``with fastgan.use_impl("torch"): ...``, ``@fastgan.use_impl("torch")`` on a
    function, or ``fastgan.use_impl("native")`` for the rest of the process."""

    def __init__(self, name: str):
        super().__init__(_check(name))
        self.name = name

    @staticmethod
    def _get():
        return _current  # None: follow FASTGAN_IMPL / auto (restored as such)

    @staticmethod
    def _set(value):
        global _current
        _current = value


_cuda_fallback_warned = False


def for_tensor(t: torch.Tensor) -> str:
    """``resolve(t.device)``, with the common case (compiled kernels for a CPU tensor) answered without building a
    device object."""
    name = current()
    if (name == "auto" or name == "native") and t.is_cpu and _ext.C is not None:
        return "native"
    return resolve(t.device)


def resolve(device: torch.device) -> str:
    """The concrete implementation ('native' | 'emu' | 'torch') for a tensor on ``device``."""
    global _cuda_fallback_warned
    name = current()
    if name == "torch":
        return "torch"
    if name == "emu":
        if device.type != "cpu":
            raise RuntimeError(f"impl 'emu' runs the CUDA kernels on the CPU and takes CPU tensors; got a tensor on {device}")
        return "emu"
    if _ext.C is None:
        if name == "native":
            raise RuntimeError(f"impl 'native' is not available: {_ext.load_error}")
        _ext.warn_once()
        return "torch"
    if device.type == "cpu":
        return "native"
    if device.type == "cuda" and _ext.has_cuda():
        return "native"
    if name == "native":
        raise RuntimeError(f"impl 'native': fastgan._C has no kernels for device type {device.type!r} "
                           f"(built with CUDA: {_ext.has_cuda()})")
    if not _cuda_fallback_warned:
        _cuda_fallback_warned = True
        warnings.warn(f"fastgan: no compiled kernels for {device.type} tensors in this build; using the "
                      "pure-PyTorch reference path", RuntimeWarning, stacklevel=_ext.user_stacklevel())
    return "torch"


class cuda_gemm_route(_Setting):
    """Where the CUDA kernels' products go: ``"auto"`` (default: fastgan's kernels, large or badly tiled products to
    cuBLAS / cuDNN through ATen, per the size policy in csrc/ops/gemm_glue.cpp), ``"kernels"`` (always fastgan's,
    inside their index limits) or ``"aten"`` (always cuBLAS / cuDNN + the fused bias-activation pass). Used like
    :class:`use_impl` (a plain call, ``with``, or a decorator); the ``FASTGAN_CUDA_GEMM`` environment variable gives
    the initial value. Process-wide, not per thread. No effect on CPU tensors or the emulation."""

    def __init__(self, name: str):
        if _ext.C is None:
            raise RuntimeError(f"cuda_gemm_route: fastgan._C is not loaded: {_ext.load_error}")
        super().__init__(name)  # ValueError naming the accepted routes
        self.name = name

    @staticmethod
    def _get():
        return _ext.C.cuda_gemm_route()

    @staticmethod
    def _set(value):
        _ext.C.set_cuda_gemm_route(value)
