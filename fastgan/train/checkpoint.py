"""Checkpoints: written atomically, loaded with validation.

A checkpoint is a plain ``torch.save`` dict of tensors, numbers, strings and containers (it loads with
``weights_only=True``): format tag and version, the training config, ``G``/``D`` state dicts, both optimiser
states, the step, the noise generator's RNG state and the fixed sample noise.

:func:`save` writes to a temporary file in the same directory, flushes and fsyncs it, then ``os.replace``\\ s it
over the target (atomic on POSIX and Windows) and fsyncs the directory, so a process killed at any moment leaves
either the previous checkpoint or the new one, never a partial file.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save", "load", "load_models"]

FORMAT = "fastgan-gan-checkpoint"
VERSION = 1
_REQUIRED = ("G", "D", "optG", "optD", "step", "config", "rng", "fixed_noise")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or not compatible with this version / these models."""


def save(state: dict, path) -> None:
    """Atomically write ``state`` (plus the format tag) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; give the checkpoint the usual umask-based mode
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as e:  # torch's writer reports a failed write (a full disk) so
                raise OSError(f"writing {path} failed: {e}") from e
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _damaged_entry(data: bytes):
    """The first zip entry whose bytes do not match their stored CRC-32, else None. torch.load does not check them:
    flipped bytes inside a tensor would load as wrong numbers. (An entry stored with CRC 0 is skipped: torch writes
    none when told not to compute them, torch.utils.serialization.config.save.compute_crc32.)"""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return None  # torch.load says what it is not
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.CRC == 0:
                continue
            try:
                z.read(info)  # checks the CRC
            except zipfile.BadZipFile:
                return info.filename
    return None


def load(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint; :class:`CheckpointError` with the reason when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; expected a checkpoint file, such as "
                              f"{path / 'checkpoint.pt'}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        damaged = _damaged_entry(data)
        state = None if damaged else torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, KeyError, IndexError, TypeError) as e:
        # torch's own text may suggest weights_only=False: wrong for a file that is not a checkpoint, and unsafe
        # advice for any file from elsewhere; name the failure, not that advice
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not first or "weights_only" in str(e):
            first = f"{type(e).__name__}: not a checkpoint torch can read safely"
        raise CheckpointError(f"{path}: not a fastgan checkpoint, or a damaged one (reading it failed: {first})") \
            from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged checkpoint (the checksum of its entry {damaged!r} does not match its "
                              "bytes)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastgan GAN checkpoint (no '{FORMAT}' format tag)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state.get('version')!r} is not supported by "
                              f"this fastgan (expects version {VERSION})")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    wrong = [k for k in ("G", "D", "optG", "optD", "config", "rng") if not isinstance(state[k], dict)]
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        wrong.append("step")
    noise = state["fixed_noise"]
    if not isinstance(noise, torch.Tensor) or noise.ndim != 2 or not noise.is_floating_point():
        wrong.append("fixed_noise")
    if wrong:
        raise CheckpointError(f"{path}: not a checkpoint fastgan wrote: wrong kind of value for {wrong}")
    return state


def load_state_dict(module: torch.nn.Module, sd: dict, what: str, path) -> None:
    """``module.load_state_dict(sd)`` with a :class:`CheckpointError` naming the mismatch."""
    try:
        module.load_state_dict(sd)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{path}: the {what} weights do not fit this model ({msg[:500]})") from None


def load_models(path, layers: str = "fused", device=None, ema: bool = True):
    """(G, D, state) rebuilt from a checkpoint, with either layer kind; models in eval mode.

    ``G`` is the EMA generator when the checkpoint has one (trained with ``--ema-beta`` > 0) and ``ema`` is true,
    else the raw trained generator.
    """
    from .models import build_models

    state = load(path)
    z_dim = int(state["config"].get("z_dim", 100))
    G, D = build_models(layers, z_dim=z_dim, arch=state["config"].get("arch", "seed"))
    if ema and state.get("G_ema") is not None:
        load_state_dict(G, state["G_ema"], "EMA generator", path)
    else:
        load_state_dict(G, state["G"], "generator", path)
    load_state_dict(D, state["D"], "discriminator", path)
    return G.to(device).eval(), D.to(device).eval(), state
