"""``fastgan::adam_``: Adam over lists of tensors in place (the optimiser step of :class:`fastgan.optim.Adam`).
No autograd (an optimiser step runs under ``torch.no_grad``); the fake kernel returns nothing, as the op does. The op
does not advance autograd's version counters of the tensors it writes: a caller does
(``torch.autograd.graph.increment_version``), as :class:`fastgan.optim.Adam` does."""
from __future__ import annotations

import torch

from ._registry import one_device_fake


def _fake(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, ema=None, ema_beta=0.0):
    return None


torch.library.register_fake("fastgan::adam_", one_device_fake("fastgan::adam_", _fake))
