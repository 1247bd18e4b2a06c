"""Drop-in fused layers.

``FusedLinear``/``FusedConv2d``/``BCEWithLogitsLoss`` subclass their ``torch.nn`` counterparts: the same
constructor arguments and defaults, the same parameters, ``state_dict`` keys and default initialisation, so
weights load both ways. The extra keyword-only arguments ``act``, ``alpha``, ``gain`` and ``clamp`` select the
activation that is applied in the same pass as the bias.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import nn

from . import _activations
from . import functional as FF

__all__ = ["FusedLeakyReLU", "FusedBiasAct", "FusedLinear", "FusedConv2d", "FusedConvTranspose2d", "LeakyReLU",
           "BCEWithLogitsLoss"]


def _act_repr(act: str, alpha, gain, clamp) -> str:
    s = f"act={act!r}"
    if act == "lrelu":
        s += f", alpha={_activations.get(act).alpha if alpha is None else alpha}"
    if gain != 1.0:
        s += f", gain={gain:g}"
    if clamp is not None:
        s += f", clamp={clamp}"
    return s


class _ActMixin:
    def _set_act(self, act: str, alpha: Optional[float], gain: float, clamp: Optional[float]) -> None:
        _activations.resolve(act, alpha, gain, clamp)  # validate early, at construction
        self.act, self.alpha, self.gain, self.clamp = act, alpha, float(gain), clamp


class FusedBiasAct(_ActMixin, nn.Module):
    """Learned per-channel bias followed by an activation, in one pass: ``act(x + bias) * gain``. ``gain`` defaults
    to 1, as for FusedLinear / FusedConv2d (``fastgan.functional.bias_act`` follows StyleGAN's defaults instead:
    sqrt(2) for relu and lrelu)."""

    def __init__(self, channels: int, act: str = "lrelu", alpha: Optional[float] = None, gain: float = 1.0,
                 clamp: Optional[float] = None, bias: bool = True, dim: int = 1, device=None, dtype=None):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"channels: expected a positive int, got {channels!r}")
        channels = int(channels)  # (a NumPy integer too, as torch.nn's layers take)
        self._set_act(act, alpha, gain, clamp)
        self.channels, self.dim = channels, dim
        if bias:
            self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FF.bias_act(x, self.bias, self.dim, self.act, self.alpha, self.gain, self.clamp)

    def extra_repr(self) -> str:
        act = _act_repr(self.act, self.alpha, self.gain, self.clamp)
        return f"{self.channels}, {act}, bias={self.bias is not None}"


class FusedLeakyReLU(FusedBiasAct):
    """Learned bias + leaky ReLU: ``lrelu(x + bias, negative_slope) * gain``.

    Porting from rosinality's StyleGAN2: its ``FusedLeakyReLU(channel, bias=True, negative_slope=0.2,
    scale=2**0.5)`` takes ``bias`` second and scales by sqrt(2). Here every argument after ``channels`` is
    keyword-only (so a positional ``True`` cannot silently become the slope) and ``gain`` defaults to 1 (torch's
    ``LeakyReLU``): pass ``gain=2**0.5`` for rosinality's behaviour.
    """

    def __init__(self, channels: int, *args, negative_slope: float = 0.2, gain: float = 1.0,
                 clamp: Optional[float] = None, bias: bool = True, dim: int = 1, device=None, dtype=None):
        if args:
            raise TypeError(
                f"FusedLeakyReLU: every argument after channels is keyword-only, got {len(args)} more positional "
                f"({', '.join(map(repr, args))}). rosinality's FusedLeakyReLU(channel, bias, negative_slope, scale) "
                "becomes FusedLeakyReLU(channel, bias=..., negative_slope=..., gain=scale) (its scale defaults to "
                "sqrt(2), fastgan's gain to 1).")
        super().__init__(channels, "lrelu", negative_slope, gain, clamp, bias, dim, device, dtype)

    @property
    def negative_slope(self) -> float:
        return self.alpha


class FusedLinear(_ActMixin, nn.Linear):
    """``nn.Linear`` with the activation fused into the output pass."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
                 clamp: Optional[float] = None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_act(act, alpha, gain, clamp)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return FF.linear(input, self.weight, self.bias, act=self.act, alpha=self.alpha, gain=self.gain,
                         clamp=self.clamp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_act_repr(self.act, self.alpha, self.gain, self.clamp)}"


class FusedConv2d(_ActMixin, nn.Conv2d):
    """``nn.Conv2d`` with bias + activation fused into the output pass."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
                 clamp: Optional[float] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._set_act(act, alpha, gain, clamp)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input = nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return FF.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                         act=self.act, alpha=self.alpha, gain=self.gain, clamp=self.clamp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_act_repr(self.act, self.alpha, self.gain, self.clamp)}"


class FusedConvTranspose2d(_ActMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with bias + activation fused into one pass over its output; the transposed
    convolution runs on the conv kernels' data-gradient path (see :func:`fastgan.functional.conv_transpose2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None, *, act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
                 clamp: Optional[float] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        self._set_act(act, alpha, gain, clamp)

    def forward(self, input: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return FF.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                   self.groups, self.dilation, act=self.act, alpha=self.alpha, gain=self.gain,
                                   clamp=self.clamp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_act_repr(self.act, self.alpha, self.gain, self.clamp)}"


class LeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU`` computed by the fused bias-activation kernel (no bias)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return FF.leaky_relu(input, self.negative_slope, self.inplace)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``nn.BCEWithLogitsLoss`` computed by the fused sigmoid-BCE op; ``target`` may also be a number."""

    def forward(self, input: torch.Tensor, target) -> torch.Tensor:
        return FF.binary_cross_entropy_with_logits(input, target, self.weight, pos_weight=self.pos_weight,
                                                   reduction=self.reduction)
