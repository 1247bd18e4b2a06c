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
    (no ``amsgrad``, ``maximize``, ``differentiable``, decoupled weight decay; a float ``lr``), float parameters with
    dense gradients of their own dtype, contiguous or channels_last. Anything else -- and CPU parameters, where torch's own step is as fast and
    keeps runs bit-identical to ``torch.optim.Adam`` -- is torch's step. The kernel path needs no host
    synchronisation and keeps the step counters on the device, so a step can be captured in a CUDA graph."""

    def _kernel_applies(self) -> bool:
        if _ext.C is None:
            return False
        impl = _impl.current()
        for group in self.param_groups:
            if (group.get("amsgrad") or group.get("maximize") or group.get("differentiable")
                    or group.get("decoupled_weight_decay") or isinstance(group["lr"], torch.Tensor)):
                return False
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                on_device = p.is_cuda if impl != "emu" else p.device.type == "cpu"
                if (impl == "torch" or not on_device or not p.is_floating_point() or g.is_sparse
                        or g.dtype != p.dtype or not _dense(p)):
                    return False
        return True

    @torch.no_grad()
    def step(self, closure=None):
        if not self._kernel_applies():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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
