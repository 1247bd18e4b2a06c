"""fastgan.optim: :class:`Adam`, ``torch.optim.Adam`` whose update of all parameters is one fastgan kernel launch.

torch's fused Adam is two launches per step (its step counters are advanced by a launch of their own); this one
advances them inside the update's launch (``torch.ops.fastgan.adam_``, csrc/kernels/adam.cu). The state and
``state_dict`` are torch's Adam's, so checkpoints load either way.
"""
from __future__ import annotations

import torch

from . import _ext, _impl

__all__ = ["Adam"]


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
    kernel path (torch warns)."""

    _DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

    def _kernel_applies(self) -> bool:
        if _ext.C is None:
            return False
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return False  # GradScaler with fused=True hands the unscaling to the step: torch's fused step does it
        impl = _impl.current()
        cuda_kernels = impl != "torch" and _ext.has_cuda()
        for group in self.param_groups:
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
                        or not _dense(p)):
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
            return loss
        for group in self.param_groups:
            params, grads, avgs, avg_sqs, steps = [], [], [], [], []
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
            if params:
                beta1, beta2 = group["betas"]
                torch.ops.fastgan.adam_(params, grads, avgs, avg_sqs, steps, float(group["lr"]), float(beta1),
                                        float(beta2), float(group["eps"]), float(group["weight_decay"]))
                # as torch's in-place updates do: a graph that saved a parameter now fails loudly in backward
                torch.autograd.graph.increment_version(params + avgs + avg_sqs + steps)
        return loss
