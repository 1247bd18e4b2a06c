"""The digest of the C++/CUDA sources a ``fastgan._C`` is built from.

``setup.py`` compiles it into ``_C`` (``build_info()["source_digest"]``); in a source checkout (an editable install,
an in-place build) fastgan computes it again from the tree, so a ``_C`` left over from before an edit or a
``git pull`` is named as stale instead of silently running old kernels, and the GPU check can use a ``_C`` built
ahead of time on another machine when, and only when, it was built from the same sources. Standard library only:
``setup.py`` loads this file before torch or fastgan are importable.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional


def tree_digest(root: str) -> Optional[str]:
    """sha256 (first 16 hex digits) over every file under ``root/csrc`` but its prose (``*.md``: a note must not
    make a prebuilt ``_C`` stale) and ``root/setup.py`` (relative path and bytes, in sorted order); None when
    ``root`` is not a source tree."""
    csrc = os.path.join(root, "csrc")
    setup = os.path.join(root, "setup.py")
    if not (os.path.isdir(csrc) and os.path.isfile(setup)):
        return None
    files = [setup]
    for d, dirs, names in os.walk(csrc):
        dirs[:] = [n for n in dirs if not n.startswith(".")]
        files += [os.path.join(d, n) for n in names if not n.startswith(".") and not n.endswith(".md")]
    h = hashlib.sha256()
    for rel in sorted(os.path.relpath(f, root).replace(os.sep, "/") for f in files):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def package_tree() -> str:
    """The directory above the fastgan package: the source tree when fastgan is imported from a checkout."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
