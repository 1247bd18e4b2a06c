"""The seed GAN: the classic MNIST MLP generator and the small strided-conv discriminator.

Both networks are built either from the fused layers of :mod:`fastgan.nn` (``layers="fused"``: the activation is
part of the layer) or from stock :mod:`torch.nn` (``layers="stock"``: ``nn.Linear``/``nn.Conv2d`` followed by a
separate activation module). The learned layers have the same names in both variants (``fc1``, ``conv1``, ...) and
the activation slots (``act1``, ...) hold no parameters (``nn.Identity`` in the fused variant), so the two
``state_dict``\\ s have identical keys and shapes: a checkpoint written by one loads into the other. The fused
layers subclass their torch counterparts and inherit their initialisation, and layers are created in the same
order, so under the same seed both variants start from identical weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import functional as FF
from .. import nn as fnn

__all__ = ["LAYER_KINDS", "G_INITS", "Z_DIM", "IMAGE_SHAPE", "Generator", "Discriminator", "build_models",
           "make_loss", "r1_penalty", "d_loss_r1"]

LAYER_KINDS = ("fused", "stock")
Z_DIM = 100
IMAGE_SHAPE = (1, 28, 28)
LRELU_SLOPE = 0.2


def _check_kind(layers: str) -> str:
    if layers not in LAYER_KINDS:
        raise ValueError(f"layers: expected one of {list(LAYER_KINDS)}, got {layers!r}")
    return layers


def _linear(layers: str, cin: int, cout: int, act: str):
    """(layer, activation module) for ``act(x @ W.T + b)``."""
    if layers == "fused":
        alpha = LRELU_SLOPE if act == "lrelu" else None
        return fnn.FusedLinear(cin, cout, act=act, alpha=alpha), nn.Identity()
    return nn.Linear(cin, cout), _stock_act(act)


def _conv(layers: str, cin: int, cout: int, act: str):
    """(layer, activation module) for a 3x3, stride-2, pad-1 convolution followed by ``act``."""
    if layers == "fused":
        return fnn.FusedConv2d(cin, cout, 3, stride=2, padding=1, act=act, alpha=LRELU_SLOPE), nn.Identity()
    return nn.Conv2d(cin, cout, 3, stride=2, padding=1), _stock_act(act)


def _stock_act(act: str) -> nn.Module:
    return {"lrelu": lambda: nn.LeakyReLU(LRELU_SLOPE), "sigmoid": nn.Sigmoid, "linear": nn.Identity}[act]()


# Generator hidden widths: "seed" is the classic MNIST MLP (the benchmarks' shapes); "wide" doubles both hidden layers,
# the trainer's default since 2026-12-05 (docs/recipe.md: the seed networks stay below the 80%-confident goal in a
# five-minute run; the wider G reaches it for ~5% more time per step on the CPU).
G_ARCHS = {"seed": (128, 256), "wide": (256, 512)}


class Generator(nn.Module):
    """z (``z_dim``, standard normal) -> h1 -> lrelu -> h2 -> lrelu -> 784 -> sigmoid -> (1, 28, 28) in [0, 1]; (h1, h2)
    = (128, 256) for ``arch="seed"``, (256, 512) for ``"wide"``."""

    def __init__(self, layers: str = "fused", z_dim: int = Z_DIM, arch: str = "seed"):
        super().__init__()
        if arch not in G_ARCHS:
            raise ValueError(f"arch: expected one of {list(G_ARCHS)}, got {arch!r}")
        h1, h2 = G_ARCHS[arch]
        self.layers, self.z_dim, self.arch = _check_kind(layers), z_dim, arch
        self.fc1, self.act1 = _linear(layers, z_dim, h1, "lrelu")
        self.fc2, self.act2 = _linear(layers, h1, h2, "lrelu")
        self.fc3, self.act3 = _linear(layers, h2, 28 * 28, "sigmoid")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.fc1(z))
        x = self.act2(self.fc2(x))
        x = self.act3(self.fc3(x))
        return x.view(z.shape[0], *IMAGE_SHAPE)


class Discriminator(nn.Module):
    """(1, 28, 28) -> conv 32 -> lrelu -> conv 64 -> lrelu -> conv 128 -> lrelu -> flatten 2048 -> linear 1 (logit).

    Every conv is 3x3, stride 2, padding 1: 28 -> 14 -> 7 -> 4, so the flattened feature has 128 * 4 * 4 = 2048.
    """

    def __init__(self, layers: str = "fused"):
        super().__init__()
        self.layers = _check_kind(layers)
        self.conv1, self.act1 = _conv(layers, 1, 32, "lrelu")
        self.conv2, self.act2 = _conv(layers, 32, 64, "lrelu")
        self.conv3, self.act3 = _conv(layers, 64, 128, "lrelu")
        self.fc, _ = _linear(layers, 128 * 4 * 4, 1, "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._features(x)
        if self._plain_head():
            feat, wt = self._head_operands(h)
            fc = self.fc
            if type(fc) is fnn.FusedLinear:
                return FF.linear(feat, wt, fc.bias, act=fc.act, alpha=fc.alpha, gain=fc.gain,
                                 clamp=fc.clamp).squeeze(1)
            return nn.functional.linear(feat, wt, fc.bias).squeeze(1)
        return self.fc(h.flatten(1)).squeeze(1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.act3(self.conv3(x))

    def _plain_head(self) -> bool:
        """Whether calling the head's function directly is the same as calling the module: a plain (Fused)Linear
        with no hooks (spectral_norm, feature capture, ...), no parametrization or quantization (other types)."""
        fc, mod = self.fc, nn.modules.module
        return (type(fc) in (nn.Linear, fnn.FusedLinear) and not fc._forward_hooks and not fc._forward_pre_hooks
                and not mod._global_forward_hooks and not mod._global_forward_pre_hooks)

    def _head_operands(self, h: torch.Tensor):
        """(features, weight) of the head for the last feature map h. A channels_last map is read without copying
        it to NCHW order: the features are taken in memory order (h, w, c) -- a view -- and the head's weight
        (2048 values, in (c, h, w) order as always) is permuted to match. Same logit up to summation order; the
        feature map's NCHW copy in the forward and the copy of its gradient back to channels_last in the backward
        (2 MB each at batch 256) are gone."""
        fc = self.fc
        if h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
            n, c, hh, ww = h.shape
            feat = h.permute(0, 2, 3, 1).reshape(n, c * hh * ww)
            wt = fc.weight.reshape(-1, c, hh, ww).permute(0, 2, 3, 1).reshape(fc.weight.shape[0], c * hh * ww)
            return feat, wt
        return h.flatten(1), fc.weight

    def fused_loss(self, x: torch.Tensor, target, loss_weight: Optional[torch.Tensor] = None,
                   reduction: str = "mean"):
        """(loss, logits) of D on x with the head and its sigmoid-BCE loss as one op
        (:func:`fastgan.functional.linear_bce_with_logits`), or None when the head is not a plain fused linear
        layer (another type, hooks, an activation, gain or clamp): then call the module and the loss."""
        fc = self.fc
        if not (type(fc) is fnn.FusedLinear and self._plain_head() and fc.act == "linear" and fc.gain == 1.0
                and fc.clamp is None):
            return None
        if self._forward_hooks or self._forward_pre_hooks or type(self).forward is not Discriminator.forward:
            return None  # D's own hooks or another forward: the module must be called
        feat, wt = self._head_operands(self._features(x))
        return FF.linear_bce_with_logits(feat, wt, fc.bias, target, loss_weight=loss_weight, reduction=reduction)


G_INITS = ("he", "torch")


def _he_init(G: nn.Module) -> None:
    """He (Kaiming) normal init for leaky-ReLU 0.2 on every weight of G, zero biases. PyTorch's default Linear init
    (uniform, variance 1/(3 fan_in)) shrinks the signal at every layer: G's output then varies ~0.02 per pixel
    across z at step 0 and training collapses to one mode; He init keeps the variation ~10x larger."""
    for name, p in G.named_parameters():
        if name.endswith("weight"):
            nn.init.kaiming_normal_(p, a=LRELU_SLOPE, nonlinearity="leaky_relu")
        else:
            nn.init.zeros_(p)


def build_models(layers: str = "fused", seed=None, device=None, z_dim: int = Z_DIM, g_init: str = "torch",
                 channels_last: Optional[bool] = None, arch: str = "seed"):
    """(G, D), initialised from ``torch.manual_seed(seed)`` when a seed is given (G first, then D, then G's
    re-initialisation when ``g_init="he"``). Both layer kinds get identical weights for the same seed.

    ``channels_last`` (default: on the CPU only): D's convolution weights in ``torch.channels_last``, so its
    activations are channels_last too (same values; the head reads the last feature map in its memory order). oneDNN
    runs these convolutions without NCHW <-> blocked reorders: the CPU training step takes ~12-18% less time with
    either layer kind (benchmarks/NOTES.md). Not measured on GPUs, so off there."""
    _check_kind(layers)
    if g_init not in G_INITS:
        raise ValueError(f"g_init: expected one of {list(G_INITS)}, got {g_init!r}")

    def make():
        G, D = Generator(layers, z_dim, arch), Discriminator(layers)
        if g_init == "he":
            with torch.no_grad():
                _he_init(G)
        return G, D

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G, D = make()
    else:
        G, D = make()
    G, D = G.to(device), D.to(device)
    if channels_last is None:
        channels_last = next(D.parameters()).device.type == "cpu"
    if channels_last:
        D = D.to(memory_format=torch.channels_last)
    return G, D


class GanBCE(nn.Module):
    """Mean sigmoid-BCE against a constant label: ``loss(logits, label)``; :meth:`halves` and :meth:`real_fake`, D's
    loss on a batch of real then fake images; :meth:`sum_squares`, a gradient penalty's term.

    ``fused``: :func:`fastgan.functional.binary_cross_entropy_with_logits` with the label passed as a number (no
    target tensor); ``stock``: ``torch.nn.functional.binary_cross_entropy_with_logits`` against a ``full_like``
    target, as stock code does. Same math.
    """

    def __init__(self, layers: str = "fused"):
        super().__init__()
        self.fused = _check_kind(layers) == "fused"
        self._halves = None  # (key, target, weight) of halves / real_fake, made once per shape / device / dtype

    def forward(self, logits: torch.Tensor, label: float) -> torch.Tensor:
        if self.fused:
            return FF.binary_cross_entropy_with_logits(logits, label)
        return nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    def of(self, D: nn.Module, x: torch.Tensor, label: float):
        """(``loss(D(x), label)``, the logits). With fused layers and a discriminator that offers it
        (:meth:`Discriminator.fused_loss`; not a DDP wrapper, whose forward must run), D's head and the loss are
        one op: on CUDA two launches forward + backward instead of five."""
        out = self._fused_head(D, x, float(label))
        if out is not None:
            return out
        logits = D(x)
        return self(logits, label), logits

    def _fused_head(self, D: nn.Module, x: torch.Tensor, target, **kwargs):
        fused = getattr(D, "fused_loss", None) if self.fused else None
        return fused(x, target, **kwargs) if fused is not None else None

    def _constants(self, n: int, b: int, like: torch.Tensor):
        """(target, weight) of a batch of b real then n - b fake rows: target 1 / 0, weight 1/b / 1/(n-b)."""
        key = (n, b, like.device, like.dtype)
        if self._halves is None or self._halves[0] != key:
            target = torch.cat([like.new_ones(b), like.new_zeros(n - b)])
            weight = torch.cat([like.new_full((b,), 1.0 / b), like.new_full((n - b,), 1.0 / (n - b))])
            self._halves = (key, target, weight)
        return self._halves[1], self._halves[2]

    def halves(self, logits: torch.Tensor, b: int) -> torch.Tensor:
        """``loss(logits[:b], 1) + loss(logits[b:], 0)`` as one weighted sum (target 1 / 0 and weight 1/b / 1/(n-b)
        per half, constant tensors made once): one loss kernel and one gradient kernel instead of two of each and an
        add. Equal to the two means up to the summation order (the same gradients when b is a power of two)."""
        target, weight = self._constants(logits.shape[0], b, logits)
        fn = FF.binary_cross_entropy_with_logits if self.fused else nn.functional.binary_cross_entropy_with_logits
        return fn(logits.view(target.shape), target, weight=weight, reduction="sum")

    def real_fake(self, D: nn.Module, x: torch.Tensor, b: int):
        """(:meth:`halves` of ``D(x)``, the logits) for x = cat(real, fake): D's loss on one pass, with D's head and
        the loss as one op where :meth:`of` has it (no slices, whose gradients autograd would pad with zeros and
        add)."""
        target, weight = self._constants(x.shape[0], b, x)
        out = self._fused_head(D, x, target, loss_weight=weight, reduction="sum")
        if out is not None:
            return out
        logits = D(x)
        return self.halves(logits, b), logits

    def sum_squares(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale * sum(x^2)`` (a gradient penalty's term): fastgan.functional.sum_squares with fused layers, torch's
        square + sum with stock ones."""
        return FF.sum_squares(x, scale) if self.fused else x.square().sum() * scale

    def seed(self, n: int, b: int, like: torch.Tensor) -> torch.Tensor:
        """The target of b real then n - b fake rows, 1 / 0, of like's dtype and device (made once): a backward
        seed that differentiates the real rows' logits only."""
        return self._constants(n, b, like)[0]


def make_loss(layers: str = "fused") -> GanBCE:
    """The GAN's sigmoid-BCE (:class:`GanBCE`) for ``layers`` ("fused" or "stock")."""
    return GanBCE(layers)


def input_gradient(logits: torch.Tensor, images: torch.Tensor, seed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """grad_x of ``(seed * logits).sum()`` w.r.t. ``images`` (which must require grad), its graph kept (double
    backward), ``seed`` ones by default; the fused layers' weight gradients skipped (fastgan.no_weight_gradients)."""
    seed = torch.ones_like(logits) if seed is None else seed.view(logits.shape)
    with FF.no_weight_gradients():
        return torch.autograd.grad(logits, images, seed, create_graph=True)[0]


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, seed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E||grad_x D(x)||^2 over the real images ``real`` (which must require grad) whose
    logits are ``real_logits``; the graph is kept (double backward) so the penalty can be minimised. ``seed``: ones
    shaped like the logits' elements (the gradient of their sum; default: made here)."""
    grad = input_gradient(real_logits, real, seed)
    return grad.square().sum(dim=tuple(range(1, grad.dim()))).mean()


def d_loss_r1(D: nn.Module, loss: GanBCE, real: torch.Tensor, fake: torch.Tensor, gamma: float,
              one_pass: bool = False):
    """D's loss with the R1 penalty, ``loss(D(real), 1) + loss(D(fake), 0) + gamma/2 * r1`` (gamma > 0). Returns
    (loss_d, the penalty term ``gamma/2 * r1`` (detached), the logits of cat(real, fake)); a log divides the term by
    gamma/2 when it is written (:meth:`fastgan.train.Trainer.metrics`), not a launch per step.

    ``one_pass=False`` (the CPU's choice): the real images in a pass of their own, so the penalty's double backward
    runs through the real half only. ``one_pass=True`` (on CUDA, where the seed GAN's step is bound by launches, not
    FLOPs): D runs once over cat(real, fake), with its head and the loss one op; the input gradient is taken with a
    seed of 1 on the real rows and 0 on the fake ones, whose gradient is then exactly 0, so ``gamma/2 * r1`` is
    ``gamma / (2 b)`` times the sum of the whole gradient's squares (:meth:`GanBCE.sum_squares`: one launch and one
    backward launch with fused layers). The double backward runs through both halves (twice its FLOPs), but every
    layer is one launch per pass instead of two, and no parameter gradient of two halves needs adding. It needs a D
    whose samples do not interact (no batch statistics: BatchNorm in training mode, minibatch standard deviation),
    as this package's Discriminator."""
    b = real.shape[0]
    if one_pass:
        x = torch.cat([real, fake]).detach().requires_grad_(True)
        loss_h, logits = loss.real_fake(D, x, b)
        term = loss.sum_squares(input_gradient(logits, x, loss.seed(x.shape[0], b, x)), 0.5 * gamma / b)
        return loss_h + term, term.detach(), logits
    real = real.detach().requires_grad_(True)
    lr_, lf = D(real), D(fake.detach())
    r1 = r1_penalty(lr_, real, loss.seed(2 * b, b, lr_)[:b])
    logits = torch.cat([lr_, lf])
    return torch.add(loss.halves(logits, b), r1, alpha=0.5 * gamma), r1.detach() * (0.5 * gamma), logits
