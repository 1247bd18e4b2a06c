"""``fastgan train``: the MNIST GAN trained with the fused layers (models, data, trainer, checkpoints, metrics).

Submodules are imported on use; ``import fastgan`` does not import this package.
"""
from __future__ import annotations

from .models import Discriminator, Generator, build_models, make_loss
from .trainer import TrainConfig, TrainError, Trainer, train

__all__ = ["Generator", "Discriminator", "build_models", "make_loss", "TrainConfig", "TrainError", "Trainer", "train"]
