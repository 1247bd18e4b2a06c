"""Fused ops, functional form.

``linear``, ``conv2d``, ``leaky_relu`` and ``binary_cross_entropy_with_logits`` take the same arguments as
their ``torch.nn.functional`` namesakes (same defaults); ``linear`` and ``conv2d`` add keyword-only ``act``,
``alpha``, ``gain`` and ``clamp`` that are applied in the same pass as the bias. A combination the fused path
does not support (``padding="same"`` with an asymmetric split, a negative leaky-ReLU slope, ``inplace=True``)
falls back to the stock torch computation, never to a different result.

Every function takes one path: its argument checks (so errors name the argument and what was expected, whichever
implementation runs), the choice of implementation (:mod:`fastgan._impl`), then either the pure-PyTorch reference
(:mod:`fastgan.reference`) or the op's one ``torch.autograd.Function`` (:mod:`fastgan.ops`), which runs
``torch.ops.fastgan.*`` in eager mode, under torch.compile and under torch.func transforms alike.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import _activations, _impl, ops, reference
from .ops._registry import no_weight_gradients

__all__ = ["bias_act", "leaky_relu", "linear", "conv2d", "conv_transpose2d", "binary_cross_entropy_with_logits",
           "linear_bce_with_logits", "sum_squares", "no_weight_gradients"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_REDUCTION_CODE = {"none": 0, "mean": 1, "sum": 2}


def _fn(name: str):
    """The autograd.Function of op ``name`` (built when fastgan._C is loaded; _impl.resolve only returns 'native'
    or 'emu' then)."""
    return ops.FUNCTIONS[name]


def _check_tensor(t, name: str, like: Optional[torch.Tensor] = None, like_name: str = "input") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating-point tensor (float32, float64, float16 or bfloat16), "
                        f"got {t.dtype}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name}: expected a tensor on {like.device} like {like_name}, got one on {t.device}")
        if t.dtype != like.dtype:
            raise TypeError(f"{name}: expected dtype {like.dtype} like {like_name}, got {t.dtype}")


def _autocast_dtype(t: torch.Tensor) -> Optional[torch.dtype]:
    """The autocast dtype for ``t``'s device when autocast is on there, else None. The fused layers follow
    autocast's policy: GEMM/conv in the low-precision dtype, the loss in float32."""
    dev = t.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def _cast(t, dtype):
    """t in autocast's dtype, as autocast casts an op's arguments: float64 tensors are left as they are."""
    if t is None or not isinstance(t, torch.Tensor) or t.dtype in (dtype, torch.float64):
        return t
    return t.to(dtype)


def _check_bias(bias, n: int, x: torch.Tensor, what: str) -> None:
    if bias is None:
        return
    _check_tensor(bias, "bias", x)
    if bias.ndim != 1 or bias.shape[0] != n:
        raise ValueError(f"bias: expected a 1-D tensor of length {n} ({what}), got shape {tuple(bias.shape)}")


def _as_int(v):
    """v as an int when torch's int arguments take it (ints, NumPy ints, integer 0-d tensors), else None. Type tests,
    not operator.index in try/except: torch.compile (2.11) cannot trace an exception caught inside the graph."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):  # (torch refuses bools there)
        return int(v)
    if (isinstance(v, torch.Tensor) and v.ndim == 0 and not v.is_floating_point() and not v.is_complex()
            and v.dtype != torch.bool):
        return int(v)
    return None


def _pair(v, name: str, allow_zero: bool) -> tuple:
    # as torch's int[2] arguments: an int or a sequence of one or two; a float (even 2.0) is refused (int(1.5) would
    # silently truncate it)
    items = list(v) if isinstance(v, (tuple, list)) else [v]
    ints = [_as_int(i) for i in items]
    if any(i is None for i in ints):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if len(ints) == 1:
        ints = ints * 2
    lo = 0 if allow_zero else 1
    if len(ints) != 2 or any(i < lo for i in ints):
        raise ValueError(f"{name}: expected an int or a pair of ints >= {lo}, got {v!r}")
    if any(i >= 2 ** 63 for i in ints):
        raise ValueError(f"{name}: expected ints below 2**63 (torch's int64), got {v!r}")
    return tuple(ints)


def _groups(v) -> int:
    """conv's groups as an int (as torch takes it: an int, a NumPy int or an integer 0-d tensor)."""
    i = _as_int(v)
    if i is None or not 1 <= i < 2 ** 63:
        raise ValueError(f"groups: expected an int >= 1, got {v!r}")
    return i


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None,
             clamp: Optional[float] = None) -> torch.Tensor:
    """``y = clamp(act(x + bias) * gain, -clamp, clamp)``, bias broadcast along ``dim``.

    ``alpha``/``gain`` default per activation (:data:`fastgan._activations.ACTIVATIONS`; StyleGAN's
    convention: gain sqrt(2) for relu and lrelu). ``clamp=None`` means no clamping.
    """
    spec, alpha, gain, clamp = _activations.resolve(act, alpha, gain, clamp)
    _check_tensor(x, "x")
    if bias is not None and _autocast_dtype(x) is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)  # an fp32 bias parameter after an autocast layer
    dim = _bias_act_checks(x, bias, dim)
    impl = _impl.resolve(x.device)
    if impl == "torch":
        return reference.bias_act(x, bias, dim, spec.name, alpha, gain, clamp)
    return _fn("bias_act").apply(x, bias, dim, spec.name, alpha, gain, clamp)


def _bias_act_checks(x, bias, dim: int) -> int:
    """bias_act's argument checks; returns the normalised dim."""
    _check_tensor(x, "x")
    if _as_int(dim) is None:
        raise TypeError(f"dim: expected an int, got {dim!r}")
    dim = _as_int(dim)
    if bias is None:
        return dim % x.ndim if x.ndim else 0
    if x.ndim == 0:
        raise ValueError("x: a bias needs at least a 1-D input to broadcast along")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim: expected an int in [{-x.ndim}, {x.ndim - 1}] for a {x.ndim}-D input, got {dim}")
    dim = dim % x.ndim
    _check_bias(bias, x.shape[dim], x, f"x.shape[{dim}]")
    return dim


def leaky_relu(input: torch.Tensor, negative_slope: float = 0.01, inplace: bool = False) -> torch.Tensor:
    """Same as :func:`torch.nn.functional.leaky_relu` (negative or non-finite slopes and ``inplace`` use the stock
    op)."""
    if (inplace or not isinstance(input, torch.Tensor) or input.dtype not in _FLOAT_DTYPES
            or isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real)
            or not 0 <= negative_slope < math.inf):
        return F.leaky_relu(input, negative_slope, inplace)
    return bias_act(input, None, 1, "lrelu", negative_slope, 1.0, None)


def _linear_checks(input, weight, bias) -> None:
    _check_tensor(input, "input")
    _check_tensor(weight, "weight", input)
    if weight.ndim != 2:
        raise ValueError(f"weight: expected a 2-D tensor (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input: expected last dimension {weight.shape[1]} (weight's in_features), "
                         f"got shape {tuple(input.shape)}")
    _check_bias(bias, weight.shape[0], input, "weight's out_features")


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
           clamp: Optional[float] = None) -> torch.Tensor:
    """``act(input @ weight.T + bias) * gain`` in one pass over the output; any number of leading dims."""
    spec, alpha, gain, clamp = _activations.resolve(act, alpha, gain, clamp)
    _check_tensor(input, "input")
    ac = _autocast_dtype(input)
    if ac is not None:
        input, weight, bias = _cast(input, ac), _cast(weight, ac), _cast(bias, ac)
    _linear_checks(input, weight, bias)
    impl = _impl.resolve(input.device)
    if impl == "torch":
        return reference.dense(input, weight, bias, spec.name, alpha, gain, clamp)
    return _fn("dense").apply(input, weight, bias, spec.name, alpha, gain, clamp, None)


def _same_padding(weight: torch.Tensor, stride, dilation):
    """Symmetric padding equal to padding='same', or None when the split is asymmetric / stride != 1."""
    if stride != (1, 1):
        raise ValueError("padding: padding='same' is not supported for strided convolutions (as in torch)")
    pads = []
    for k, d in zip(weight.shape[2:], dilation):
        total = d * (k - 1)
        if total % 2:
            return None
        pads.append(total // 2)
    return tuple(pads)


def _check_conv_operands(input, weight, weight_layout: str) -> None:
    _check_tensor(weight, "weight", input)
    if input.ndim not in (3, 4):
        raise ValueError(f"input: expected a 4-D (N, C, H, W) or unbatched 3-D (C, H, W) tensor, "
                         f"got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"weight: expected a 4-D tensor {weight_layout}, got shape {tuple(weight.shape)}")


def _check_conv_size(input, weight, padding, dilation) -> None:
    h, w = input.shape[-2:]
    for i, (size, k) in enumerate(zip((h, w), weight.shape[2:])):
        if size + 2 * padding[i] < dilation[i] * (k - 1) + 1:
            raise ValueError(f"input: spatial size {(h, w)} (padded {(h + 2 * padding[0], w + 2 * padding[1])}) is "
                             f"smaller than the dilated kernel {tuple(weight.shape[2:])}")


def _conv2d_checks(input, weight, bias, stride, padding, dilation, groups):
    """conv2d's argument checks (the spatial size too when ``padding`` is given as numbers); returns the
    normalised (stride, dilation)."""
    _check_tensor(input, "input")
    _check_conv_operands(input, weight, "(out_channels, in_channels/groups, kH, kW)")
    if weight.shape[0] == 0:  # as torch, at the forward
        raise ValueError(f"weight: expected at least 1 output channel (dimension 0), got shape {tuple(weight.shape)}")
    cin = input.shape[-3]
    if cin != weight.shape[1] * groups:
        raise ValueError(f"input: expected {weight.shape[1] * groups} channels (weight.shape[1] * groups), got {cin}")
    if weight.shape[0] % groups:
        raise ValueError(f"weight: out_channels {weight.shape[0]} is not divisible by groups={groups}")
    _check_bias(bias, weight.shape[0], input, "weight's out_channels")
    stride = _pair(stride, "stride", allow_zero=False)
    dilation = _pair(dilation, "dilation", allow_zero=False)
    if padding is not None and not isinstance(padding, str):
        _check_conv_size(input, weight, _pair(padding, "padding", allow_zero=True), dilation)
    return stride, dilation


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: Union[int, Sequence[int]] = 1, padding: Union[str, int, Sequence[int]] = 0,
           dilation: Union[int, Sequence[int]] = 1, groups: int = 1, *, act: str = "linear",
           alpha: Optional[float] = None, gain: float = 1.0, clamp: Optional[float] = None) -> torch.Tensor:
    """``act(conv2d(input, weight, stride, padding, dilation, groups) + bias) * gain``; 4-D or unbatched 3-D."""
    spec, alpha, gain, clamp = _activations.resolve(act, alpha, gain, clamp)
    groups = _groups(groups)
    _check_tensor(input, "input")
    ac = _autocast_dtype(input)
    if ac is not None:
        input, weight, bias = _cast(input, ac), _cast(weight, ac), _cast(bias, ac)
    stride, dilation = _conv2d_checks(input, weight, bias, stride, None, dilation, groups)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            padding = _same_padding(weight, stride, dilation)
            if padding is None:  # asymmetric split: stock computation
                y = F.conv2d(input, weight, bias, stride, "same", dilation, groups)
                if _activations.is_identity(spec.name, gain, clamp):
                    return y
                return bias_act(y, None, 1, spec.name, alpha, gain, None if clamp < 0 else clamp)
        else:
            raise ValueError(f"padding: expected 'valid', 'same', an int or a pair of ints, got {padding!r}")
    else:
        padding = _pair(padding, "padding", allow_zero=True)
    _check_conv_size(input, weight, padding, dilation)
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    impl = _impl.resolve(input.device)
    if impl == "torch":
        y = reference.conv2d(x, weight, bias, stride, padding, dilation, groups, spec.name, alpha, gain, clamp)
    else:
        y = _fn("conv2d").apply(x, weight, bias, list(stride), list(padding), list(dilation), int(groups),
                                spec.name, alpha, gain, clamp, None)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     stride: Union[int, Sequence[int]] = 1, padding: Union[int, Sequence[int]] = 0,
                     output_padding: Union[int, Sequence[int]] = 0, groups: int = 1,
                     dilation: Union[int, Sequence[int]] = 1, *, act: str = "linear", alpha: Optional[float] = None,
                     gain: float = 1.0, clamp: Optional[float] = None) -> torch.Tensor:
    """``act(conv_transpose2d(input, weight, ...) + bias) * gain`` (DCGAN-style generators); 4-D or unbatched 3-D.

    A transposed convolution is the data gradient of a convolution, so it runs on the conv kernels' data-gradient
    path (``conv2d_backward`` with weight ``weight``; its input gradient is then ``conv2d`` and its weight gradient
    the conv weight-gradient path); bias, activation, gain and clamp follow in one fused pass.
    """
    _check_tensor(input, "input")
    spec, alpha, gain, clamp = _activations.resolve(act, alpha, gain, clamp)
    groups = _groups(groups)
    ac = _autocast_dtype(input)
    if ac is not None:
        input, weight, bias = _cast(input, ac), _cast(weight, ac), _cast(bias, ac)
    _check_conv_operands(input, weight, "(in_channels, out_channels/groups, kH, kW)")
    if input.shape[-3] != weight.shape[0]:
        raise ValueError(f"input: expected {weight.shape[0]} channels (weight.shape[0]), got {input.shape[-3]}")
    if weight.shape[0] % groups:
        raise ValueError(f"weight: in_channels {weight.shape[0]} is not divisible by groups={groups}")
    _check_bias(bias, weight.shape[1] * groups, input, "weight.shape[1] * groups")
    stride = _pair(stride, "stride", allow_zero=False)
    dilation = _pair(dilation, "dilation", allow_zero=False)
    padding = _pair(padding, "padding", allow_zero=True)
    output_padding = _pair(output_padding, "output_padding", allow_zero=True)
    out_hw = []
    for i in range(2):
        if output_padding[i] >= max(stride[i], dilation[i]):
            raise ValueError(f"output_padding: expected values smaller than stride or dilation, got "
                             f"{tuple(output_padding)} with stride {tuple(stride)}, dilation {tuple(dilation)}")
        size = ((input.shape[-2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1)
                + output_padding[i] + 1)
        if size < 1:
            raise ValueError(f"input: spatial size {tuple(input.shape[-2:])} gives an empty output with padding "
                             f"{tuple(padding)} and kernel {tuple(weight.shape[2:])}")
        out_hw.append(size)
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    impl = _impl.resolve(input.device)
    if impl == "torch" or any(o >= s for o, s in zip(output_padding, stride)):
        # (output_padding >= stride, allowed when below the dilation, has no convolution it is the gradient of)
        y = F.conv_transpose2d(x, weight, None, stride, padding, output_padding, groups, dilation)
    else:
        # conv2d_backward reads only the shape, dtype and memory format of its `x` argument: a zero-stride view
        # carries them without memory, except for channels_last, whose format needs real strides.
        shape = (x.shape[0], weight.shape[1] * groups, *out_hw)
        if x.ndim == 4 and ops.conv2d.memory_format(x) == torch.channels_last:
            like = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        else:
            like = x.new_empty(()).expand(shape)
        y = _fn("conv2d_backward").apply(x, like, weight, list(stride), list(padding), list(dilation), int(groups),
                                         [True, False, False], None, "linear", 0.0, 1.0, -1.0)[0]
    if bias is not None or not _activations.is_identity(spec.name, gain, clamp):
        y = bias_act(y, bias, 1, spec.name, alpha, gain, None if clamp < 0 else clamp)
    return y.squeeze(0) if unbatched else y


def binary_cross_entropy_with_logits(input: torch.Tensor, target: Union[torch.Tensor, float],
                                     weight: Optional[torch.Tensor] = None, size_average=None, reduce=None,
                                     reduction: str = "mean",
                                     pos_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Numerically stable sigmoid + binary cross-entropy in one pass.

    As :func:`torch.nn.functional.binary_cross_entropy_with_logits`, and ``target`` may also be a Python
    number (the GAN case: every target equals that label and no target tensor is read or allocated).
    """
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction
        reduction = _reduction.legacy_get_string(size_average, reduce)
    return _bce(input, target, weight, pos_weight, reduction)


def _bce(input, target, weight, pos_weight, reduction, weight_name="weight"):
    """The loss of :func:`binary_cross_entropy_with_logits`; ``weight_name`` names ``weight`` in errors as the
    caller's signature does."""
    _check_tensor(input, "input")
    if _autocast_dtype(input) is not None:  # autocast runs this loss in float32
        input, weight, pos_weight = _cast(input, torch.float32), _cast(weight, torch.float32), \
            _cast(pos_weight, torch.float32)
        if isinstance(target, torch.Tensor):
            target = _cast(target, torch.float32)
    input, target, weight, pos_weight, out_dtype = _bce_dtypes(input, target, weight, pos_weight)
    target, label = _bce_checks(input, target, weight, pos_weight, reduction, weight_name)
    impl = _impl.resolve(input.device)
    if impl == "torch":
        loss = reference.sigmoid_bce(input, target, label, weight, pos_weight, reduction)
    else:
        loss = _fn("sigmoid_bce").apply(input, target, label, weight, pos_weight, _REDUCTION_CODE[reduction])
    return loss if out_dtype is None else loss.to(out_dtype)


def sum_squares(input: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * input.square().sum()``, one element: a gradient penalty's squared norm (R1:
    ``sum_squares(grad, 1 / batch)`` of the images' gradient). On CUDA one launch forward (a fixed-order
    reduction: the same bits on every run; half types accumulate in float32) and one backward."""
    _check_tensor(input, "input")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    impl = _impl.resolve(input.device)
    if impl == "torch":
        return reference.sum_squares(input, float(scale))
    return _fn("sum_squares").apply(input, float(scale))


def linear_bce_with_logits(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                           target: Union[torch.Tensor, float] = 1.0, *, loss_weight: Optional[torch.Tensor] = None,
                           reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor]:
    """A one-output linear layer and its sigmoid-BCE loss in one op -- a discriminator's head and loss. Returns
    ``(loss, logits)``, the same as ``logits = F.linear(input, weight, bias)[:, 0]`` and
    ``loss = binary_cross_entropy_with_logits(logits, target, loss_weight, reduction=reduction)``.

    ``input`` (batch, in_features); ``weight`` (1, in_features); ``bias`` (1,) or None; ``target`` a tensor of
    shape (batch,) or a number (every target); ``loss_weight`` per-sample weights (batch,) or one element;
    ``reduction`` "mean" or "sum". On CUDA one kernel forward and one backward (the head's product, the loss, its
    gradient and the head's three gradients); gradients w.r.t. ``target`` / ``loss_weight`` and autocast take the
    unfused composition.
    """
    _check_tensor(input, "input")
    ac = _autocast_dtype(input)
    if ac is not None:  # the composition below, as autocast runs it: the head in ac, the loss in float32
        input, weight, bias = _cast(input, ac), _cast(weight, ac), _cast(bias, ac)
        target, loss_weight = _cast(target, torch.float32), _cast(loss_weight, torch.float32)
    if input.ndim != 2:
        raise ValueError(f"input: expected a 2-D tensor (batch, in_features), got shape {tuple(input.shape)}")
    _check_tensor(weight, "weight", input)
    if tuple(weight.shape) != (1, input.shape[1]):
        raise ValueError(f"weight: expected shape (1, {input.shape[1]}) (one output feature), "
                         f"got {tuple(weight.shape)}")
    if bias is not None:
        _check_tensor(bias, "bias", input)
        if tuple(bias.shape) != (1,):
            raise ValueError(f"bias: expected shape (1,), got {tuple(bias.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    # the logits' shape, dtype (float32 under autocast: the loss's) and device (no memory)
    loss_dtype = torch.float32 if ac is not None and input.dtype != torch.float64 else input.dtype
    like = input.new_empty((), dtype=loss_dtype).expand(input.shape[0])
    if (isinstance(target, torch.Tensor) and target.dtype != loss_dtype and target.dtype in _FLOAT_DTYPES or
            isinstance(loss_weight, torch.Tensor) and loss_weight.dtype != loss_dtype and
            not loss_weight.is_complex()):  # mixed dtypes: the composition, whose loss takes them as stock's does
        logits = linear(input, weight, bias)[:, 0]
        return _bce(logits, target, loss_weight, None, reduction, "loss_weight"), logits
    target, label = _bce_checks(like, target, loss_weight, None, reduction, weight_name="loss_weight")
    impl = _impl.resolve(input.device)
    grads_of_targets = any(t is not None and t.requires_grad for t in (target, loss_weight))
    if impl == "torch" or grads_of_targets or ac is not None:
        logits = linear(input, weight, bias)[:, 0]
        return _bce(logits, label if target is None else target, loss_weight, None, reduction, "loss_weight"), logits
    loss, logits = _fn("linear_bce").apply(input, weight, bias, target, label, loss_weight,
                                           _REDUCTION_CODE[reduction])
    return loss, logits


def _bce_dtypes(input, target, weight, pos_weight):
    """Mixed dtypes as stock's loss takes them: the input and a floating target computed in their common dtype, and
    weights of any real dtype in it too; also returns the result's dtype where it differs: the target's, as stock's
    (its loss is built in place on ``1 - target``). Other dtypes are left for the checks to name."""
    out_dtype = None
    if input.dtype not in _FLOAT_DTYPES:
        return input, target, weight, pos_weight, out_dtype
    if isinstance(target, torch.Tensor) and target.dtype in _FLOAT_DTYPES and target.dtype != input.dtype:
        out_dtype = target.dtype
        common = torch.promote_types(input.dtype, target.dtype)
        input, target = input.to(common), target.to(common)
    weight, pos_weight = (w.to(input.dtype) if isinstance(w, torch.Tensor) and w.dtype != input.dtype
                          and not w.is_complex() else w for w in (weight, pos_weight))
    return input, target, weight, pos_weight, out_dtype


def _bce_checks(input, target, weight, pos_weight, reduction, weight_name="weight"):
    """binary_cross_entropy_with_logits' argument checks; returns (target tensor or None, constant label).
    ``weight_name``: the weight argument's name in the caller's signature."""
    _check_tensor(input, "input")
    if reduction not in _REDUCTION_CODE:
        raise ValueError(f"reduction: expected one of {list(_REDUCTION_CODE)}, got {reduction!r}")
    if isinstance(target, torch.Tensor):
        _check_tensor(target, "target", input)
        if target.shape != input.shape:
            raise ValueError(f"target: expected the input's shape {tuple(input.shape)}, got {tuple(target.shape)}")
        label = 0.0
    elif isinstance(target, numbers.Real) and not isinstance(target, bool):
        label = float(target)
        if not math.isfinite(label):
            raise ValueError(f"target: expected a finite number, got {label}")
        target = None
    else:
        raise TypeError(f"target: expected a tensor or a number, got {type(target).__name__}")
    for name, t in ((weight_name, weight), ("pos_weight", pos_weight)):
        if t is None:
            continue
        _check_tensor(t, name, input)
        try:
            shape = torch.broadcast_shapes(t.shape, input.shape)
        except RuntimeError:
            shape = None
        if shape != input.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} does not broadcast to the input's shape "
                             f"{tuple(input.shape)}")
    return target, label
