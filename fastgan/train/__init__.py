"""``fastgan train``: the MNIST GAN trained with the fused layers (models, data, trainer, checkpoints, metrics).

Submodules are imported on use; ``import fastgan`` does not import this package, and importing it (as the command
line does to build its parser) does not import torch until one of the names below is used.
"""
from __future__ import annotations

import importlib

__all__ = ["Generator", "Discriminator", "build_models", "make_loss", "TrainConfig", "TrainError", "Trainer", "train"]
_WHERE = {"Generator": "models", "Discriminator": "models", "build_models": "models", "make_loss": "models",
          "TrainConfig": "trainer", "TrainError": "trainer", "Trainer": "trainer", "train": "trainer"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
