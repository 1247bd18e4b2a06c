"""Run outputs: the per-step metrics log (JSON lines), sample grids and the loss-curve plot (PNG).

Matplotlib is imported only when a picture is written (Agg canvas, no pyplot, no global backend change).
"""
from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path
from typing import Iterable, List

import numpy as np
import torch

__all__ = ["MetricsLog", "make_grid", "save_grid", "plot_losses", "read_metrics"]


def json_safe(obj):
    """``obj`` with NaN / infinite floats (a diverged run, an infinite error) as None, at any depth: JSON has no
    such numbers (strict parsers refuse Python's NaN / Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json_line(record: dict) -> str:
    """One JSON line (strict JSON: see json_safe)."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


class MetricsLog:
    """Appends one JSON object per line; on resume, drops lines past the resumed step first."""

    def __init__(self, path, resume_step=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            keep = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            write_text_atomically(self.path, "".join(_json_line(r) for r in keep))
        self._f = open(self.path, "a", buffering=1)

    def write(self, records: Iterable[dict]) -> None:
        self._f.write("".join(_json_line(r) for r in records))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(path) -> List[dict]:
    """The step records of a metrics file; a torn last line (a killed run) and lines that are no step record (an
    edit) are skipped."""
    out = []
    if not os.path.exists(path):  # (a run that has written none yet)
        return out
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                out.append(rec)
    return out


def make_grid(images: torch.Tensor, nrow: int = 0, pad: int = 2) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad) float array, white padding."""
    x = images.detach().float().cpu().clamp(0, 1).numpy()[:, 0]
    n, h, w = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return grid


def save_grid(images: torch.Tensor, path, nrow: int = 0, scale: int = 2) -> None:
    """Write a PNG grid of ``images`` (white digits on black, as MNIST), each pixel ``scale`` x ``scale``."""
    from matplotlib.image import imsave

    grid = make_grid(images, nrow)
    if scale > 1:
        grid = np.kron(grid, np.ones((scale, scale), dtype=grid.dtype))
    _write_atomically(path, lambda tmp: imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0, format=_format(path)))


def write_text_atomically(path, text: str) -> None:
    _write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def _format(path) -> str:
    return Path(path).suffix.lstrip(".").lower() or "png"


def _write_atomically(path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then renamed over it: a failed write (a full disk, a
    killed process) leaves the previous file as it was. Through a symbolic link, its target is replaced; a device or
    a pipe (/dev/stdout) is written directly."""
    if os.path.exists(path) and not os.path.isfile(path):
        write(path)
        return
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(y) < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def plot_losses(records: List[dict], path) -> None:
    """Loss curves (D and G, raw and smoothed) and D(x) / D(G(z)) against the step."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(9, 6.5), tight_layout=True)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    if records:
        step = np.array([r["step"] for r in records])
        k = max(1, len(records) // 100)
        for key, label, color in (("loss_d", "D loss", "tab:blue"), ("loss_g", "G loss", "tab:orange")):
            y = np.array([r.get(key, np.nan) for r in records], dtype=float)
            ax1.plot(step, y, color=color, alpha=0.25, lw=0.8)
            ax1.plot(step, _smooth(y, k), color=color, label=label)
        if any("r1" in r for r in records):
            ax1.plot(step, _smooth(np.array([r.get("r1", np.nan) for r in records], float), k), color="tab:green",
                     label="R1 penalty")
        for key, label, color in (("d_real", "D(x)", "tab:green"), ("d_fake", "D(G(z))", "tab:red")):
            y = np.array([r.get(key, np.nan) for r in records], dtype=float)
            ax2.plot(step, _smooth(y, k), color=color, label=label)
        ax1.legend()
        ax2.legend()
    ax1.set_ylabel("loss")
    ax1.set_title("GAN training")
    ax2.set_ylabel("mean sigmoid(D)")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    _write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format=_format(path)))
