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


_env_parsed = ("", "auto")  # (raw value, implementation name) of the last successful parse
_backend = "native"  # what fastgan._C's backend override for CPU tensors was last set to


def _sync_backend(name: str) -> None:
    """Point the compiled glue's backend override for CPU tensors at the emulated CUDA kernels while ``emu`` is
    selected (csrc/ops/glue.h: the one place where an emulated or a native launch is chosen)."""
    global _backend
    want = "emu" if name == "emu" else "native"
    if want != _backend and _ext.C is not None:
        _ext.C.set_cpu_backend(want)
        _backend = want


def current() -> str:
    """The selected implementation name: use_impl's, else FASTGAN_IMPL's (read on every call: it may change at run
    time, e.g. in tests), else 'auto'."""
    global _env_parsed
    if _current is not None:
        return _current
    raw = os.environ.get("FASTGAN_IMPL", "")
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
    _sync_backend(name)
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
        _sync_backend(current())


_cuda_fallback_warned = False


def resolve(device: torch.device) -> str:
    """The concrete implementation ('native' | 'emu' | 'torch') for a tensor on ``device``."""
    global _cuda_fallback_warned
    name = current()
    if name == "torch":
        return "torch"
    if name == "emu":
        if device.type != "cpu":
            raise RuntimeError(f"impl 'emu' runs the CUDA kernels on the CPU and takes CPU tensors; got a tensor on "
                               f"{device}")
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


class _CSetting(_Setting):
    """A setting that fastgan._C holds (read by its C++ launch code): ``_C.<_name>()`` reads it,
    ``_C.set_<_name>(value)`` writes it (and rejects a bad value with an error naming the accepted ones)."""

    _name = ""

    def __init__(self, value):
        if _ext.C is None:
            raise RuntimeError(f"{self._name}: fastgan._C is not loaded: {_ext.load_error}")
        super().__init__(value)

    @classmethod
    def _get(cls):
        return getattr(_ext.C, cls._name)()

    @classmethod
    def _set(cls, value):
        getattr(_ext.C, "set_" + cls._name)(value)


class cuda_gemm_route(_CSetting):
    """Where the CUDA kernels' products go: ``"auto"`` (default: fastgan's kernels, large or badly tiled products to
    cuBLAS / cuDNN through ATen, per the size policy in csrc/ops/gemm_glue.cpp), ``"kernels"`` (always fastgan's,
    inside their index limits) or ``"aten"`` (always cuBLAS / cuDNN + the fused bias-activation pass). Used like
    :class:`use_impl` (a plain call, ``with``, or a decorator); the ``FASTGAN_CUDA_GEMM`` environment variable gives
    the initial value. Process-wide, not per thread. No effect on CPU tensors or the emulation."""

    _name = "cuda_gemm_route"

    def __init__(self, name: str):
        super().__init__(name)  # ValueError naming the accepted routes
        self.name = name


class cuda_pdl(_CSetting):
    """Programmatic dependent launch of fastgan's CUDA kernels on sm_90 and newer GPUs: ``True`` lets each kernel
    be scheduled while the previous one in the stream is finishing (every kernel waits for its predecessor's
    results before touching memory, so results are the same bits), which hides part of the launch gap between the
    short dependent kernels of a training step, in a CUDA graph too. Off by default until a GPU has measured it
    (benchmarks/gpu_check.sh); ``FASTGAN_CUDA_PDL=1`` gives the initial value. Used like :class:`use_impl`.
    Process-wide; no effect on older GPUs, CPU tensors or the emulation (which checks every kernel against the rule
    above on every launch)."""

    _name = "cuda_pdl"

    def __init__(self, on: bool):
        if not isinstance(on, bool):
            raise TypeError(f"cuda_pdl: expected True or False, got {on!r}")
        super().__init__(on)
        self.on = on
