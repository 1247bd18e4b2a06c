"""fastgan.optim: :class:`Adam`, ``torch.optim.Adam`` whose update of all parameters is one fastgan kernel launch.

torch's fused Adam is two launches per step (its step counters are advanced by a launch of their own); this one
advances them inside the update's launch (``torch.ops.fastgan.adam_``, csrc/kernels/adam.cu), and can update an
exponential moving average of the parameters (a GAN's EMA generator) in the same pass. The state and
``state_dict`` are torch's Adam's, so checkpoints load either way.
"""
from __future__ import annotations

import torch

from . import _ext, _impl

__all__ = ["Adam", "ema_weight"]


def ema_weight(t, ema_beta: float):
    """The weight ``1 - beta_t`` with which an average moves toward its parameter after step ``t`` (1, 2, ...):
    ``beta_t = min(ema_beta, (1 + t) / (10 + t))``, the ramp of TensorFlow's ExponentialMovingAverage (short
    averages while the weights move fast). ``t`` a number (a float back), or a step counter tensor (a tensor back,
    computed on its device in double; csrc/kernels/adam_math.cuh is the kernel's copy of this formula)."""
    if isinstance(t, torch.Tensor):
        t = t.double()
        return 1.0 - ((1.0 + t) / (10.0 + t)).clamp(max=ema_beta)
    return 1.0 - min(ema_beta, (1.0 + t) / (10.0 + t))


def _dense(p: torch.Tensor) -> bool:
    """Contiguous in a memory format the kernel walks as one block (the op checks the general case itself)."""
    return p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (same arguments, state and ``state_dict``) whose step runs fastgan's one-launch kernel
    where it applies: parameters on CUDA (or on the CPU under ``fastgan.use_impl("emu")``), the default algorithm
    (no ``amsgrad``, ``maximize``, ``differentiable``, decoupled weight decay, GradScaler hand-over; float
    hyper-parameters), float parameters, contiguous or channels_last, with dense gradients of their own dtype.
    Anything else -- and CPU parameters, where torch's own step is as fast and keeps runs bit-identical to
    ``torch.optim.Adam`` -- is torch's step. The kernel path needs no host synchronisation and keeps the step
    counters on the device, so a step can be captured in a CUDA graph. A tensor listed twice is an error on the
    kernel path (torch warns).

    ``ema`` (keyword; optional): one tensor per parameter given here (the parameters of every group, in order; e.g.
    ``G_ema.parameters()`` of a copy of the model), each an exponential moving average of its parameter. After each
    step, for every parameter the step updated, ``ema.lerp_(param, ema_weight(t, ema_beta))``, t the parameter's
    step count. On the kernel path inside the update's launch; on torch's path after torch's step. Either way the
    weight comes from the step counter where it lives (the device, for the kernel and torch's fused / capturable
    steps), so nothing waits for the device and a captured CUDA graph replays the ramp right. Only parameters are
    averaged: a model's buffers (BatchNorm's running statistics) are the caller's to copy."""

    _DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

    def __init__(self, params, *args, ema=None, ema_beta: float = 0.999, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.ema_beta = float(ema_beta)
        self._ema = {}
        if ema is None:
            return
        if not 0 <= self.ema_beta < 1:
            raise ValueError(f"ema_beta: expected a number in [0, 1), got {ema_beta!r}")
        params = [p for group in self.param_groups for p in group["params"]]
        ema = list(ema)
        if len(ema) != len(params):
            raise ValueError(f"ema: expected one tensor per parameter ({len(params)}), got {len(ema)}")
        # each average a tensor of its own: one shared with a parameter or another average would be updated twice
        owners = {p.data_ptr(): f"parameter {i}" for i, p in enumerate(params) if p.numel()}
        for i, (p, e) in enumerate(zip(params, ema)):
            if not isinstance(e, torch.Tensor) or e.shape != p.shape or e.dtype != p.dtype or e.device != p.device:
                raise ValueError(f"ema[{i}]: expected a tensor of parameter {i}'s shape {tuple(p.shape)}, dtype "
                                 f"{p.dtype} and device {p.device}, got "
                                 + (f"{tuple(e.shape)}, {e.dtype}, {e.device}" if isinstance(e, torch.Tensor)
                                    else type(e).__name__))
            if e.numel() and e.data_ptr() in owners:
                raise ValueError(f"ema[{i}]: expected a tensor of its own, got the memory of {owners[e.data_ptr()]}")
            if e.numel():
                owners[e.data_ptr()] = f"ema[{i}]"
            self._ema[p] = e

    def _kernel_applies(self) -> bool:
        if _ext.C is None:
            return False
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return False  # GradScaler with fused=True hands the unscaling to the step: torch's fused step does it
        impl = _impl.current()
        cuda_kernels = impl != "torch" and _ext.has_cuda()
        for group in self.param_groups:
            if len({p.device for p in group["params"] if p.grad is not None}) > 1:
                return False  # one launch per group takes one device's tensors; torch's step groups by device
            if (group.get("amsgrad") or group.get("maximize") or group.get("differentiable")
                    or group.get("decoupled_weight_decay")
                    or any(isinstance(group[k], torch.Tensor) for k in ("lr", "eps", "weight_decay"))
                    or any(isinstance(b, torch.Tensor) for b in group["betas"])):
                return False
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if impl == "emu":
                    on_device = p.device.type == "cpu"
                else:
                    on_device = p.is_cuda and cuda_kernels
                if (not on_device or p.dtype not in self._DTYPES or g.layout != torch.strided or g.dtype != p.dtype
                        or not _dense(p) or (p in self._ema and self._ema[p].stride() != p.stride())):
                    return False
        return True

    def _torch_step(self):
        """torch's Adam step, without running the step hooks a second time (torch wraps every optimiser class's
        step with its hook runner: ours already ran them)."""
        base = torch.optim.Adam.step
        if getattr(base, "hooked", False):
            base = getattr(base, "__wrapped__", base)
        return base(self)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # (first: the closure makes the gradients the checks look at)
            with torch.enable_grad():
                loss = closure()
        if not self._kernel_applies():
            self._torch_step()
            self._torch_ema()
            return loss
        for group in self.param_groups:
            params, grads, avgs, avg_sqs, steps, emas = [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # torch's Adam's state, with the step counter on the parameter's device
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                else:  # (a state loaded from elsewhere: the counter on the CPU, moments in another layout)
                    if state["step"].device != p.device or state["step"].dtype != torch.float32:
                        state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
                    for key in ("exp_avg", "exp_avg_sq"):
                        if state[key].stride() != p.stride():
                            state[key] = torch.empty_like(p).copy_(state[key])
                grad = p.grad if p.grad.stride() == p.stride() else torch.empty_like(p).copy_(p.grad)
                params.append(p)
                grads.append(grad)
                avgs.append(state["exp_avg"])
                avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
                if p in self._ema:
                    emas.append(self._ema[p])
            if params:
                beta1, beta2 = group["betas"]
                # (a group's parameters all have averages, or none: a group added later has none)
                torch.ops.fastgan.adam_(params, grads, avgs, avg_sqs, steps, float(group["lr"]), float(beta1),
                                        float(beta2), float(group["eps"]), float(group["weight_decay"]),
                                        emas or None, self.ema_beta)
                # as torch's in-place updates do: a graph that saved a parameter now fails loudly in backward
                torch.autograd.graph.increment_version(params + avgs + avg_sqs + steps + emas)
        return loss

    def _torch_ema(self) -> None:
        """torch's path: the averages of the updated parameters moved toward them. A step counter on the host
        (torch's CPU and foreach steps) gives a host weight, and one ``_foreach_lerp_`` per weight does the rest; one
        on the device (fused / capturable) a weight computed there, one ``lerp_`` per parameter."""
        skipped = getattr(self, "found_inf", None)  # GradScaler's: torch's step left the parameters as they were
        by_weight = {}
        for p in (p for group in self.param_groups for p in group["params"] if p.grad is not None and p in self._ema):
            t, e = self.state[p]["step"], self._ema[p]
            if t.device.type == "cpu":
                if skipped is not None and float(skipped):
                    continue
                es, ps = by_weight.setdefault(ema_weight(float(t), self.ema_beta), ([], []))
                es.append(e)
                ps.append(p)
            else:
                w = ema_weight(t, self.ema_beta)
                if skipped is not None:  # weight 0 on a skipped step, decided on the device (no sync)
                    w = w * (skipped.to(w.device) == 0).to(w.dtype).reshape(())  # (GradScaler sums devices' flags)
                e.lerp_(p, w.to(e.dtype))
        for w, (es, ps) in by_weight.items():
            torch._foreach_lerp_(es, ps, w)

