"""The settings of ``fastgan train`` (no torch import: the command line builds its parser from these)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["TrainConfig", "DEFAULTS", "DEFAULT_EPOCHS"]

DEFAULT_EPOCHS = 100  # 80 until 2026-12-08: docs/recipe.md
# Settings that shape the trajectory: None in a TrainConfig means "the checkpoint's value when resuming, else this".
DEFAULTS = {"batch_size": 128, "seed": 0, "r1_gamma": 0.3, "r1_every": 4, "lr": 2e-3, "lr_d": None,
            "beta1": 0.0, "beta2": 0.999, "ema_beta": 0.999, "ms_lambda": 0.0, "inst_noise": 0.0, "g_init": "he",
            "data": None, "epochs": DEFAULT_EPOCHS, "max_steps": 0, "arch": "wide"}
# What a checkpoint written before a setting existed was trained with (resuming it keeps its trajectory);
# "lr" here means "the checkpoint's --lr".
_LEGACY = {"r1_every": 1, "lr_d": "lr", "ema_beta": 0.0, "ms_lambda": 0.0, "inst_noise": 0.0, "g_init": "torch",
           "arch": "seed"}
_MUST_MATCH = ("batch_size", "seed", "r1_gamma", "r1_every", "lr", "lr_d", "beta1", "beta2", "ema_beta", "ms_lambda",
               "inst_noise", "g_init", "data", "arch")


@dataclass
class TrainConfig:
    out: str = "runs/mnist"
    epochs: Optional[int] = None
    max_steps: Optional[int] = None  # 0 = no limit
    batch_size: Optional[int] = None
    device: str = "auto"
    layers: str = "fused"
    impl: Optional[str] = None  # None: FASTGAN_IMPL's, else auto
    seed: Optional[int] = None
    resume: Optional[str] = None  # a checkpoint path, or "auto" = OUT/checkpoint.pt
    overwrite: bool = False
    data: Optional[str] = None
    r1_gamma: Optional[float] = None
    r1_every: Optional[int] = None  # lazy R1: the penalty (weighted gamma * r1_every) on every r1_every-th D step
    lr: Optional[float] = None  # G's learning rate (and D's unless lr_d is set)
    lr_d: Optional[float] = None  # D's learning rate (None: the same as lr)
    ema_beta: Optional[float] = None  # 0: no EMA generator
    ms_lambda: Optional[float] = None  # weight of the mode-seeking term in G's loss (0: off)
    inst_noise: Optional[float] = None  # std of the Gaussian instance noise added to every D input (0: off)
    g_init: Optional[str] = None  # "he" (Kaiming normal for G) or "torch" (PyTorch's default init)
    arch: Optional[str] = None  # G's hidden widths: "wide" (256, 512) or "seed" (128, 256); D is the seed's
    beta1: Optional[float] = None
    beta2: Optional[float] = None
    checkpoint_every: int = 500  # steps; 0 = only at epoch ends
    quiet: bool = False
    progress: Optional[bool] = None  # None: a bar when stderr is a terminal (and not quiet)
    cuda_graph: bool = False
    log_every: int = 0  # 0: every step on the CPU, every 50 steps on CUDA
    samples_every_epoch: bool = True
    threads: int = 0  # torch CPU threads (0: torch's default, one per core); part of what makes CPU runs repeatable
