"""Loading of the compiled extension ``fastgan._C``.

Importing fastgan never compiles anything. If ``_C`` is missing, fails to load, or was built against another
torch than the one running, fastgan warns once (naming the cause and the fix) and every op runs on the
pure-PyTorch reference path. ``fastgan doctor`` prints the same diagnosis.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Optional

import torch

_FIX = ("rebuild it against the torch you are running: "
        "`pip install --no-build-isolation --force-reinstall --no-deps .` in the fastgan source tree")

C = None  # the loaded module, or None
load_error: Optional[str] = None  # why it is not loaded
_warned = False


def _load() -> None:
    global C, load_error
    try:
        mod = importlib.import_module("fastgan._C")
    except ImportError as e:  # missing, or undefined symbols after a torch upgrade
        msg = str(e)
        if "No module named" in msg and "fastgan._C" in msg:
            load_error = ("fastgan._C is not built (pure-Python install or source checkout without a build); "
                          "install with `pip install --no-build-isolation .`")
        else:
            load_error = (f"fastgan._C failed to load ({msg.splitlines()[0]}); probably built against another torch: "
                          f"{_FIX}")
        return
    except Exception as e:  # pragma: no cover - any other loader failure
        load_error = f"fastgan._C failed to load ({type(e).__name__}: {e}); {_FIX}"
        return
    info = mod.build_info()
    built, running = info["torch_version"], torch.__version__
    if built != running:  # the local part too: a +cu128 build links another CUDA runtime than a +cu130 torch
        load_error = f"fastgan._C was built against torch {built} but torch {running} is running; {_FIX}"
        return
    C = mod
    stale = stale_reason()
    if stale:
        warnings.warn(f"fastgan: {stale}", RuntimeWarning, stacklevel=2)


def stale_reason() -> Optional[str]:
    """Why the loaded _C is not what the source tree it is imported from would build (an edit or a `git pull` since
    the build), or None: when it matches, or when fastgan is not imported from a source checkout (an installed
    wheel: nothing to compare with) or _C was built without a digest (CMake)."""
    from . import _source
    if C is None:
        return None
    built = C.build_info().get("source_digest", "")
    root = _source.package_tree()
    tree = _source.tree_digest(root)
    if not built or tree is None or built == tree:
        return None
    return (f"fastgan._C ({C.__file__}) was built from other sources than those in {root} (digest {built}, tree "
            f"{tree}): the C++/CUDA code changed since the build; rebuild with "
            f"`pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`)")


def user_stacklevel() -> int:
    """warnings.warn's stacklevel that points at the first caller outside the fastgan package (and torch, whose
    dispatch or autograd may sit in between), seen from the function calling warnings.warn."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    inner = (pkg + os.sep, os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    f, level = sys._getframe(2), 2  # 1: the caller of warnings.warn, 2: its caller
    while f is not None and f.f_code.co_filename.startswith(inner):
        f, level = f.f_back, level + 1
    return level


def warn_once() -> None:
    global _warned
    if load_error and not _warned:
        _warned = True
        warnings.warn(f"fastgan: using the pure-PyTorch reference path (slower): {load_error}", RuntimeWarning,
                      stacklevel=user_stacklevel())


def build_info() -> dict:
    return dict(C.build_info()) if C is not None else {}


def has_cuda() -> bool:
    return C is not None and bool(C.build_info()["with_cuda"])


def has_emu() -> bool:
    return C is not None and bool(C.build_info()["with_emu"])


_load()
