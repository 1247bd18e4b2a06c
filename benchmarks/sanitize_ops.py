"""Every fused op once, forward and backward, on small awkward shapes: the workload that
``benchmarks/gpu_check.sh`` runs under compute-sanitizer (memcheck, racecheck).

    python benchmarks/sanitize_ops.py [--device cuda|cpu]

Covers every kernel family and mode the ops launch: bias + activation (each activation, a bias along dim 1
and along the last dim, an odd size for the vector tail, channels_last, a non-contiguous view, float32,
float16, bfloat16), dense (M = 1, N = 1, K not a multiple of a tile), conv2d (strided, padded, grouped,
channels_last), sigmoid + BCE (constant label, target tensor, weight and pos_weight, every reduction), one
double backward (the R1 penalty path) and fastgan's Adam (two launches of tensors, the step counters). Each result
is compared with the pure-PyTorch reference as well, so a kernel that writes the wrong place fails here even where
the sanitizer cannot see it. Prints one line per check and exits 1 on any mismatch.

Run it with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` under the sanitizer: with PyTorch's caching allocator a read
past the end of a tensor usually lands inside a larger cached block and memcheck cannot see it.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the source tree's fastgan
import fastgan  # noqa: E402
import fastgan.functional as FF  # noqa: E402

FAILED = []
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}


def rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


def check(name, fn, inputs, dtype=torch.float32, grad=True):
    """fn(*inputs) with the fused kernels and with the reference (float64 on the CPU): outputs and gradients."""
    ins = [t.detach().clone().requires_grad_(grad and t.is_floating_point()) for t in inputs]
    with fastgan.use_impl("native"):
        y = fn(*ins)
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, [t for t in ins if t.requires_grad], gy) if grad else ()
    if y.is_cuda:
        torch.cuda.synchronize()
    refs = [t.detach().cpu().double().requires_grad_(grad and t.is_floating_point()) for t in inputs]
    with fastgan.use_impl("torch"):
        ry = fn(*refs)
        rgrads = torch.autograd.grad(ry, [t for t in refs if t.requires_grad], gy.cpu().double()) if grad else ()
    errs = [rel(y, ry)] + [rel(g, r) for g, r in zip(grads, rgrads)]
    err = max(errs)
    ok = err <= TOL[dtype]
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max relative error {err:.2e}", flush=True)
    if not ok:
        FAILED.append(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(p.parse_args(argv).device)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # plain float32 everywhere, so the comparison is crisp
    torch.backends.cudnn.allow_tf32 = False
    if "native" not in fastgan.available_impls():
        print("fastgan._C not loaded: nothing to check", file=sys.stderr)
        return 1
    r = lambda *s, dt=torch.float32: torch.randn(*s, device=dev).to(dt)  # noqa: E731

    # bias + activation
    for act in ("linear", "relu", "lrelu", "sigmoid", "tanh"):
        check(f"bias_act {act} 3x37x5x7", lambda x, b: FF.bias_act(x, b, act=act), [r(3, 37, 5, 7), r(37)])
    for dt in (torch.float16, torch.bfloat16):
        check(f"bias_act lrelu {dt} 2x5x33", lambda x, b: FF.bias_act(x, b, act="lrelu", clamp=1.0),
              [r(2, 5, 33, dt=dt), r(5, dt=dt)], dt)
    check("bias_act dim=-1 odd", lambda x, b: FF.bias_act(x, b, dim=-1, act="tanh", gain=2.0), [r(7, 13), r(13)])
    check("bias_act channels_last", lambda x, b: FF.bias_act(x, b, act="lrelu"),
          [r(2, 6, 5, 3).to(memory_format=torch.channels_last), r(6)])
    check("bias_act strided view", lambda x, b: FF.bias_act(x[:, ::2, :, 1:4], b, act="sigmoid"),
          [r(2, 8, 3, 5), r(4)])
    check("bias_act no bias, 1 element", lambda x: FF.bias_act(x, None, act="relu"), [r(1)])
    check("bias_act large odd 1x3x1000x1001", lambda x, b: FF.bias_act(x, b, act="lrelu"), [r(1, 3, 1000, 1001), r(3)])

    # dense
    for (M, K, N) in ((1, 5, 3), (7, 33, 1), (128, 2048, 1), (65, 100, 129), (3, 1, 17)):
        check(f"dense {M}x{K}->{N} lrelu", lambda x, w, b: FF.linear(x, w, b, act="lrelu", alpha=0.2),
              [r(M, K), r(N, K) / K ** 0.5, r(N)])
    check("dense no bias sigmoid 3-D", lambda x, w: FF.linear(x, w, act="sigmoid"), [r(2, 3, 9), r(4, 9)])
    check("dense bf16", lambda x, w, b: FF.linear(x, w, b, act="tanh"),
          [r(17, 40, dt=torch.bfloat16), r(9, 40, dt=torch.bfloat16) / 6, r(9, dt=torch.bfloat16)], torch.bfloat16)

    # conv2d
    check("conv 3x3 s2 p1 lrelu", lambda x, w, b: FF.conv2d(x, w, b, 2, 1, act="lrelu", alpha=0.2),
          [r(4, 3, 13, 11), r(8, 3, 3, 3) / 5, r(8)])
    check("conv 1->32 28px s2 (D.conv1)", lambda x, w, b: FF.conv2d(x, w, b, 2, 1, act="lrelu", alpha=0.2),
          [r(3, 1, 28, 28), r(32, 1, 3, 3) / 3, r(32)])
    check("conv groups=2 dilation=2 no bias", lambda x, w: FF.conv2d(x, w, None, 1, 2, 2, 2, act="sigmoid"),
          [r(2, 4, 9, 9), r(6, 2, 3, 3) / 4])
    check("conv channels_last 5x5", lambda x, w, b: FF.conv2d(x, w, b, 1, 2, act="tanh"),
          [r(2, 5, 8, 7).to(memory_format=torch.channels_last), r(3, 5, 5, 5) / 10, r(3)])

    # sigmoid + BCE
    for red in ("mean", "sum", "none"):
        check(f"bce label 0.9 {red} 1001", lambda x: FF.binary_cross_entropy_with_logits(x, 0.9, reduction=red),
              [r(1001) * 3])
    check("bce target weight pos_weight", lambda x, t, w, pw: FF.binary_cross_entropy_with_logits(
        x, t, w, pos_weight=pw), [r(5, 7) * 3, torch.rand(5, 7, device=dev), torch.rand(5, 7, device=dev),
                                  torch.rand(7, device=dev) + 0.5])
    check("bce 128 logits (GAN head)", lambda x: FF.binary_cross_entropy_with_logits(x, 1.0), [r(128) * 3])
    # the head + loss op: 300 rows (10 row blocks), 700 features (3 column blocks), logits used too
    tgt, lw = (torch.arange(300) % 2).float(), torch.rand(300)

    def head(x, w, b):
        loss, logits = FF.linear_bce_with_logits(x, w, b, tgt.to(x), loss_weight=lw.to(x), reduction="sum")
        return (loss + logits.sum()).reshape(1)
    check("linear_bce 300x700 target weight sum", head, [r(300, 700), r(1, 700) / 26, r(1)])

    # a penalty's squared norm: several reduction blocks
    check("sum_squares 70000", lambda x: FF.sum_squares(x, 0.37).reshape(1), [r(70000)])

    # double backward (R1 penalty): grad of the grad through conv + bias_act + dense + BCE
    def r1(x, w, b, wd):
        h = FF.conv2d(x, w, b, 2, 1, act="lrelu", alpha=0.2)
        logit = FF.linear(h.flatten(1), wd)
        (g,) = torch.autograd.grad(FF.binary_cross_entropy_with_logits(logit.squeeze(1), 1.0), x, create_graph=True)
        return FF.sum_squares(g).reshape(1)
    check("R1 double backward", r1, [r(3, 2, 8, 8), r(4, 2, 3, 3) / 4, r(4), r(1, 64) / 8])

    # Adam: three steps over 40 tensors (two launches of up to 32), an empty one and a channels_last one included,
    # with a moving average of the parameters in the same launch (ema_beta 0.25: the ramp at t = 1, then 0.25),
    # against torch.optim.Adam + torch.lerp in float64 on the CPU
    from fastgan.optim import Adam
    shapes = [(i % 7 + 1, 5) for i in range(37)] + [(0,), (1000,), (4, 3, 3, 3)]
    ps = [torch.randn(s, device=dev).requires_grad_() for s in shapes]
    ps[-1] = ps[-1].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    emas = [torch.randn_like(p).detach() for p in ps]
    qs = [p.detach().cpu().double().requires_grad_() for p in ps]
    want = [e.cpu().double() for e in emas]
    ours, ref = Adam(ps, lr=1e-2, betas=(0.5, 0.99), weight_decay=0.01, ema=emas, ema_beta=0.25), \
        torch.optim.Adam(qs, lr=1e-2, betas=(0.5, 0.99), weight_decay=0.01)
    with fastgan.use_impl("native"):
        for t in range(1, 4):
            for p, q in zip(ps, qs):
                p.grad = torch.randn_like(p)
                q.grad = p.grad.detach().cpu().double()
            ours.step()
            ref.step()
            with torch.no_grad():
                for e, q in zip(want, qs):
                    e.lerp_(q, 1 - min(0.25, (1 + t) / (10 + t)))
    err = max(max(rel(p, q), rel(e, w)) for p, q, e, w in zip(ps, qs, emas, want) if p.numel())
    steps_ok = all(ours.state[p]["step"].item() == 3 for p in ps)
    ok = err <= TOL[torch.float32] and steps_ok
    print(f"{'ok  ' if ok else 'FAIL'} adam + EMA 40 tensors x 3 steps: max relative error {err:.2e}, step counters "
          f"{'3' if steps_ok else 'WRONG'}", flush=True)
    if not ok:
        FAILED.append("adam")

    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"{'FAILED: ' + ', '.join(FAILED) if FAILED else 'all checks passed'} ({dev})")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
