"""The benchmark cases and variants: one definition used by ``fastgan bench``, ``benchmarks/test_bench.py``
(pytest-benchmark) and ``tests/test_bench_smoke.py``.

A *case* is one unit of work at fixed shapes (an op's forward, its forward + backward, or the whole GAN training
step) with its counted work: FLOPs of the matrix products / convolutions (``torch.utils.flop_counter`` rules;
elementwise work is not counted) and the minimal bytes it must move (each input read once, each output written
once, float32). A *variant* is one way of computing it:

==============  =========================================================================================
``fastgan``     the fused ops (``fastgan.use_impl("native")``; the step: ``--layers fused``)
``fastgan-kernels`` / ``fastgan-aten``  dense and conv2d, CUDA: ``fastgan`` with the routing of products forced
                (``fastgan.cuda_gemm_route``): all on fastgan's kernels / all on cuBLAS-cuDNN + the fused
                epilogue pass. Side by side with ``fastgan`` they show which way each routing decision should go
``eager``       the baseline. Ops: the stock torch composition in :mod:`fastgan.reference` (the tests'
                oracle) through ``use_impl("torch")``. Step: the trainer's ``--layers stock`` models
                (``torch.nn`` layers + separate activation modules + ``nn.BCEWithLogitsLoss``).
``eager-ref``   step only: the fused layers on the reference path (``use_impl("torch")``)
``eager-nchw``  step only, CPU: ``eager`` with D in the default NCHW layout. The trainer (and so ``fastgan``
                and ``eager``) keeps D in channels_last on the CPU; this row shows what that layout is worth
``stock``       ops only: the idiomatic ``torch.nn.functional`` composition a user would write
                (``F.linear``/``F.conv2d`` with bias, then ``F.leaky_relu``/``torch.sigmoid``; BCE:
                ``F.binary_cross_entropy_with_logits`` against a ``full_like`` target); informative, often
                faster than the reference's explicit formulas (the softplus form of BCE)
``bare``        dense / conv forward only: the product with its bias and no activation (``F.linear`` /
                ``F.conv2d``), the lower bound for a fused epilogue
``compile``     ``torch.compile`` (mode default) of the eager baseline; ``compile-ro``: mode
                ``reduce-overhead`` (CUDA); ``compile-ma``: mode ``max-autotune`` (CUDA)
``eager+graph`` step, CUDA: the stock eager step (fused, capturable Adam) captured in one CUDA graph
``fastgan+graph`` step, CUDA: the fused step captured in one CUDA graph
==============  =========================================================================================

Every variant is built as a :class:`Runner`: ``runner.step()`` runs one iteration on the next of a set of
rotating input sets, inside ``with fastgan.use_impl(runner.impl)`` which the caller enters (so the timing loop
does not pay for it per call); ``runner.check()`` runs once on input set 0 and returns what the comparison with
the baseline looks at.
"""
from __future__ import annotations

import fnmatch
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .. import _ext, _impl
from .. import functional as FF

__all__ = ["Case", "OpCase", "StepCase", "Runner", "VARIANTS", "BASELINE", "build_cases", "select_cases",
           "default_variants", "variant_available", "make_runner", "cache_bytes", "rel_err", "CHECK_TOL"]

BATCH = 128
LRELU = 0.2
R1_GAMMA = 4.0  # the trainer's default lazy R1: gamma 1 applied with weight 4 on every 4th step
BASELINE = "eager"
VARIANTS = ("fastgan", "fastgan-kernels", "fastgan-aten", "fastgan+graph", "eager", "eager+graph", "eager-ref",
            "eager-nchw", "stock", "bare",
            "compile", "compile-ro", "compile-ma")
COMPILE_MODES = {"compile": "default", "compile-ro": "reduce-overhead", "compile-ma": "max-autotune"}
# fastgan with the CUDA routing policy forced (fastgan.cuda_gemm_route): both sides of every routing decision
ROUTES = {"fastgan-kernels": "kernels", "fastgan-aten": "aten"}


def _routed(fn: Callable, route: str) -> Callable:
    """fn with the CUDA routing forced to ``route`` for each call (restored after)."""
    return _impl.cuda_gemm_route(route)(fn)
# relative error (max-abs over max-abs, float64) allowed between a variant and the baseline in `check`
CHECK_TOL = {"cpu": 1e-4, "cuda": 2e-3}  # cuda: cuDNN may run float32 convolutions in TF32 (cudnn.allow_tf32)


def rel_err(out, ref) -> float:
    """max |out - ref| / max |ref| over a tensor or a tuple of tensors (the worst); NaN/inf gives inf."""
    if isinstance(out, (tuple, list)):
        return max((rel_err(o, r) for o, r in zip(out, ref)), default=0.0)
    out = out.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if out.shape != ref.shape:
        return float("inf")
    if out.numel() == 0:
        return 0.0
    if not torch.isfinite(out).all():
        return float("inf")
    return (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)


def cache_bytes(device: torch.device) -> int:
    """Size of the last-level cache that repeated runs would otherwise be served from (L2 on a GPU)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50 << 20)
    best = 0
    import glob
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            s = open(path).read().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:].upper(), 1)
        try:
            best = max(best, int(s.rstrip("KMGkmg")) * mult)
        except ValueError:
            pass
    return best or 32 << 20


# ------------------------------------------------------------------------------------------------- runner
@dataclass
class Runner:
    """One variant of one case, ready to run. ``step()``: one iteration on the next input set;
    ``check()``: one iteration on input set 0, returning the tensors to compare with the baseline."""
    variant: str
    impl: str  # the fastgan implementation to select around calls ("native" | "torch")
    step: Callable[[], object]
    check: Callable[[], object]
    sets: int = 1
    info: dict = field(default_factory=dict)
    compiled: bool = False


# -------------------------------------------------------------------------------------------------- cases
class Case:
    name: str
    family: str
    mode: str
    size: str
    desc: str
    flops: float
    bytes: float
    variants_supported: tuple

    def supports(self, variant: str, device: torch.device) -> bool:
        if variant not in self.variants_supported:
            return False
        if variant.endswith("+graph") or variant in ("compile-ro", "compile-ma"):
            return device.type == "cuda"
        if variant == "eager-nchw":  # D is NCHW on CUDA already (build_models)
            return device.type == "cpu"
        if variant in ROUTES:  # the CUDA routing policy does not apply elsewhere
            return device.type == "cuda"
        return True

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "mode": self.mode, "size": self.size,
                "desc": self.desc, "flops": self.flops, "bytes": self.bytes}


def _rnd(shape, device, gen, scale=1.0):
    t = torch.randn(shape, generator=gen, dtype=torch.float32, device=device)
    return t.mul_(scale) if scale != 1.0 else t


class OpCase(Case):
    """One fused op at fixed shapes, forward (``fwd``) or forward + backward of every input (``fwdbwd``).

    Forward cases run on inputs that do not require grad (no autograd graph is recorded); backward cases
    take ``torch.autograd.grad`` of the output w.r.t. every input with a random upstream gradient."""

    def __init__(self, family: str, label: str, mode: str, size: str, dims: dict, act: str = "lrelu"):
        self.family, self.label, self.mode, self.size, self.dims, self.act = family, label, mode, size, dims, act
        self.alpha = LRELU if act == "lrelu" else None
        self.name = f"{family}/{label}/{mode}"
        self.variants_supported = ("fastgan", "eager", "stock", "compile", "compile-ro", "compile-ma") + (
            ("bare",) if family in ("dense", "conv2d") and mode == "fwd" else ()) + (
            tuple(ROUTES) if family in ("dense", "conv2d") else ())
        d = dims
        if family == "dense":
            M, K, N = d["M"], d["K"], d["N"]
            self.desc = f"linear {M}x{K} -> {N}, {act}"
            self.in_shapes = {"x": (M, K), "w": (N, K), "b": (N,)}
            self.out_numel = M * N
            mm = 2 * M * K * N
            fwd_b = M * K + N * K + N + M * N
            bwd_b = 2 * M * N + 2 * M * K + 2 * N * K + N  # read dy, y, x, w; write dx, dw, db
            self.flops = float(mm if mode == "fwd" else 3 * mm)
        elif family == "conv2d":
            N, C, H, W, O, k, s, p = (d[key] for key in ("N", "C", "H", "W", "O", "k", "s", "p"))
            Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
            self.desc = f"conv {N}x{C}x{H}x{W} -> {O}x{Ho}x{Wo}, {k}x{k} s{s} p{p}, {act}"
            self.in_shapes = {"x": (N, C, H, W), "w": (O, C, k, k), "b": (O,)}
            self.out_numel = N * O * Ho * Wo
            mm = 2 * N * O * Ho * Wo * C * k * k
            xn, wn, yn = N * C * H * W, O * C * k * k, self.out_numel
            fwd_b = xn + wn + O + yn
            bwd_b = 2 * yn + 2 * xn + 2 * wn + O
            self.flops = float(mm if mode == "fwd" else 3 * mm)
        elif family == "bias_act":
            shape = tuple(d["shape"])
            C = shape[1]
            self.desc = f"bias + {act}, {'x'.join(map(str, shape))}"
            self.in_shapes = {"x": shape, "b": (C,)}
            n = math.prod(shape)
            self.out_numel = n
            fwd_b = 2 * n + C
            bwd_b = 3 * n + C  # read dy, y; write dx, db
            self.flops = 0.0
        elif family == "bce":
            n = d["n"]
            self.desc = f"sigmoid + BCE, {n} logits, constant label, mean"
            self.in_shapes = {"x": (n,)}
            self.out_numel = 1
            fwd_b = n + 1
            bwd_b = 2 * n + 1  # read x (+ the scalar grad); write dx
            self.flops = 0.0
        else:
            raise ValueError(family)
        self.bytes = 4.0 * (fwd_b if mode == "fwd" else fwd_b + bwd_b)
        self.set_bytes = 4 * (sum(math.prod(s) for s in self.in_shapes.values())
                              + (self.out_numel if mode == "fwdbwd" and family != "bce" else 0))

    # -- the computation, through fastgan.functional: the implementation is whatever use_impl selected
    def _fn(self) -> Callable:
        act, alpha, d = self.act, self.alpha, self.dims
        if self.family == "dense":
            return lambda x, w, b: FF.linear(x, w, b, act=act, alpha=alpha)
        if self.family == "conv2d":
            s, p = d["s"], d["p"]
            return lambda x, w, b: FF.conv2d(x, w, b, s, p, act=act, alpha=alpha)
        if self.family == "bias_act":
            return lambda x, b: FF.bias_act(x, b, 1, act, alpha, 1.0)
        return lambda x: FF.binary_cross_entropy_with_logits(x, 1.0)

    def _stock_fn(self) -> Callable:
        act, alpha, d = self.act, self.alpha, self.dims
        a = {"linear": lambda y: y, "relu": F.relu, "lrelu": lambda y: F.leaky_relu(y, alpha),
             "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act]
        if self.family == "dense":
            return lambda x, w, b: a(F.linear(x, w, b))
        if self.family == "conv2d":
            return lambda x, w, b: a(F.conv2d(x, w, b, d["s"], d["p"]))
        if self.family == "bias_act":
            return lambda x, b: a(x + b.view(1, -1, *([1] * (x.ndim - 2))))
        return lambda x: F.binary_cross_entropy_with_logits(x, torch.full_like(x, 1.0))

    def _bare_fn(self) -> Callable:
        d = self.dims
        if self.family == "dense":
            return lambda x, w, b: F.linear(x, w, b)
        return lambda x, w, b: F.conv2d(x, w, b, d["s"], d["p"])

    def make_inputs(self, device: torch.device, sets: int, seed: int = 0) -> List[dict]:
        gen = torch.Generator(device).manual_seed(seed)  # on the device: thousands of small sets stay cheap
        grad = self.mode == "fwdbwd"
        out = []
        for _ in range(sets):
            t = {}
            for key, shape in self.in_shapes.items():
                scale = 1.0
                if key == "w":
                    scale = 1.0 / math.sqrt(math.prod(shape[1:]))
                elif self.family == "bce":
                    scale = 3.0
                t[key] = _rnd(shape, device, gen, scale).requires_grad_(grad)
            dy = None
            if grad and self.family != "bce":
                oshape = self._out_shape()
                dy = _rnd(oshape, device, gen)
            out.append((t, dy))
        return out

    def _out_shape(self):
        d = self.dims
        if self.family == "dense":
            return (d["M"], d["N"])
        if self.family == "conv2d":
            Ho = (d["H"] + 2 * d["p"] - d["k"]) // d["s"] + 1
            Wo = (d["W"] + 2 * d["p"] - d["k"]) // d["s"] + 1
            return (d["N"], d["O"], Ho, Wo)
        if self.family == "bias_act":
            return tuple(d["shape"])
        return ()

    def make(self, variant: str, device: torch.device, sets: int = 1, seed: int = 0,
             inputs: Optional[list] = None) -> Runner:
        """``inputs``: input sets from ``make_inputs`` to use instead of new ones (``fastgan bench`` gives every
        variant of a case the same sets, so that where they lie in memory is the same for all); ``sets`` and
        ``seed`` then play no part."""
        fn = {"bare": self._bare_fn, "stock": self._stock_fn}.get(variant, self._fn)()
        impl = "native" if variant.startswith("fastgan") else "torch"
        compiled = variant in COMPILE_MODES
        if compiled:
            fn = torch.compile(fn, mode=COMPILE_MODES[variant], dynamic=False)
        if inputs is None:
            inputs = self.make_inputs(device, sets, seed)
        grad = self.mode == "fwdbwd"

        def once(t, dy):
            y = fn(**t)
            if grad:
                return torch.autograd.grad(y, list(t.values()), dy)
            return y

        if variant in ROUTES:  # the CUDA routing forced one way for this call (process-wide: the backward's
            once = _routed(once, ROUTES[variant])  # autograd thread sees it too)

        cyc = itertools.cycle(inputs)

        def step():
            return once(*next(cyc))

        def check():
            with _impl.use_impl(impl):
                return once(*inputs[0])

        return Runner(variant, impl, step, check, sets=len(inputs), compiled=compiled)


def _step_flops_and_bytes(batch: int, r1_gamma: float = 0.0):
    """FLOPs of one GAN step (matrix products and convolutions, counted by torch's FlopCounterMode on the stock
    step) and its minimal bytes: the inputs (images, noise) read once, every activation saved for backward
    written once and read once, and Adam's traffic (parameter, gradient, two moments: read and write each); with
    R1, D's activations on the real half once more (the input-gradient pass whose graph is kept). Counted as the
    CPU computes R1 (the real half in a pass of its own): on CUDA, where D runs once over both halves, the kernels do
    more work than this count, so a CUDA rate is of the useful FLOPs, never above the work done."""
    from torch.utils.flop_counter import FlopCounterMode
    from ..train.models import build_models, make_loss
    with torch.random.fork_rng(devices=[]):
        G, D = build_models("stock", seed=0)
        loss = make_loss("stock")
        real, z = torch.rand(batch, 1, 28, 28), torch.randn(batch, G.z_dim)
        fc = FlopCounterMode(display=False)
        with fc:
            _gan_step(G, D, D, loss, None, None, real, z, r1_gamma, counting=True)
    flops = float(fc.get_total_flops())
    n_params = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in D.parameters())
    g_act = batch * (128 + 256 + 784)
    d_act = 32 * 14 * 14 + 64 * 7 * 7 + 128 * 4 * 4 + 1  # per image
    acts = g_act + 2 * batch * d_act + batch * d_act  # G; D on real+fake; D on fake (G step)
    if r1_gamma > 0:
        acts += batch * d_act
    inputs = batch * (28 * 28 + G.z_dim)
    nbytes = 4.0 * (inputs + 2 * acts + 8 * n_params)
    return flops, nbytes, n_params


class StepCase(Case):
    """The whole training step of the seed GAN (D step + G step with Adam, batch 128), as the trainer runs it.

    ``r1=True``: the D step also takes the R1 penalty (gamma/2 * E||grad_x D(x)||^2 on the real half, by double
    backward through D), as the trainer's default lazy R1 does on every 4th step. No torch.compile or CUDA-graph
    variants for it: torch.compile does not take double backward through a compiled module."""

    def __init__(self, batch: int = BATCH, r1: bool = False):
        self.batch, self.r1 = batch, r1
        self.family, self.size, self.label = "step", "seed", f"gan-b{batch}"
        self.mode = "train-r1" if r1 else "train"
        self.name = f"step/{self.label}/{self.mode}"
        self.desc = (f"MNIST GAN training step, batch {batch}: G 100-128-256-784 MLP, D conv 32-64-128 + dense "
                     f"2048-1; D update on real+fake{' with the R1 penalty (double backward)' if r1 else ''}, "
                     f"G update; Adam")
        self.variants_supported = ("fastgan", "eager", "eager-ref", "eager-nchw") + (
            () if r1 else ("fastgan+graph", "eager+graph", "compile", "compile-ro", "compile-ma"))
        self._counted = None
        self.set_bytes = 4 * batch * (28 * 28 + 100)

    def _count(self):
        if self._counted is None:
            self._counted = _step_flops_and_bytes(self.batch, R1_GAMMA if self.r1 else 0.0)
        return self._counted

    @property
    def flops(self):
        return self._count()[0]

    @property
    def bytes(self):
        return self._count()[1]

    def make_inputs(self, device: torch.device, sets: int, seed: int = 0):
        gen = torch.Generator(device).manual_seed(seed)
        return [(torch.rand((self.batch, 1, 28, 28), generator=gen, device=device),
                 torch.randn((self.batch, 100), generator=gen, device=device)) for _ in range(sets)]

    def make(self, variant: str, device: torch.device, sets: int = 1, seed: int = 0,
             inputs: Optional[list] = None) -> Runner:
        from ..train.models import build_models, make_loss
        layers = "fused" if variant.startswith("fastgan") or variant == "eager-ref" else "stock"
        impl = "native" if variant.startswith("fastgan") else "torch"
        graph = variant.endswith("+graph")
        G, D = build_models(layers, seed=0, device=device, channels_last=False if variant == "eager-nchw" else None)
        loss = make_loss(layers)
        adam = dict(lr=2e-4, betas=(0.5, 0.999))
        if device.type == "cuda":
            adam.update(fused=True, capturable=graph)
        from ..optim import Adam as FgAdam  # the trainer's choice: fastgan's Adam with the fused layers
        Adam = FgAdam if layers == "fused" else torch.optim.Adam
        optG = Adam(G.parameters(), **adam)
        optD = Adam(D.parameters(), **adam)
        Gm, Dm = G, D
        compiled = variant in COMPILE_MODES
        if compiled:
            Gm = torch.compile(G, mode=COMPILE_MODES[variant])
            Dm = torch.compile(D, mode=COMPILE_MODES[variant])
        # D's parameters are toggled through the original module (the compiled wrapper shares them)
        if inputs is None:
            inputs = self.make_inputs(device, sets, seed)
        cyc = itertools.cycle(inputs)

        r1_gamma = R1_GAMMA if self.r1 else 0.0

        def eager_step(real, z):
            return _gan_step(Gm, Dm, D, loss, optG, optD, real, z, r1_gamma)

        info = {"layers": layers, "adam": {k: v for k, v in adam.items() if k != "betas"}}
        if not graph:
            first = {}

            def check():
                if "out" not in first:  # the first step from the seeded initial weights
                    with _impl.use_impl(impl):
                        first["out"] = eager_step(*inputs[0])
                return first["out"]

            return Runner(variant, impl, lambda: eager_step(*next(cyc)), check, sets=len(inputs), info=info,
                          compiled=compiled)

        # CUDA graph: 3 eager warm-up steps on a side stream, then capture (as Trainer._graph_step); each replay
        # first copies the next input set into the static buffers (the trainer does the same copy).
        static_real, static_z = inputs[0][0].clone(), inputs[0][1].clone()
        state = {}

        def build():
            with _impl.use_impl(impl):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for i in range(3):
                        out = eager_step(static_real, static_z)
                        if i == 0:
                            state["first"] = tuple(t.clone() for t in out)
                torch.cuda.current_stream().wait_stream(side)
                optD.zero_grad(set_to_none=True)
                optG.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                torch.cuda.empty_cache()  # as torch.cuda.graph does on entry: the pool's growth is then the graph's
                before = torch.cuda.memory_reserved()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    state["out"] = eager_step(static_real, static_z)
                torch.cuda.synchronize()
                info["graph_pool_bytes"] = torch.cuda.memory_reserved() - before
                state["graph"] = g

        def step():
            if "graph" not in state:
                build()
            real, z = next(cyc)
            static_real.copy_(real)
            static_z.copy_(z)
            state["graph"].replay()
            return state["out"]

        def check():
            if "graph" not in state:
                build()
            return state["first"]

        return Runner(variant, impl, step, check, sets=len(inputs), info=info)


def _gan_step(Gm, Dm, D, loss, optG, optD, real, z, r1_gamma: float = 0.0, counting: bool = False):
    """One D update and one G update, as ``fastgan.train.trainer.Trainer._step`` (without metrics, EMA, mode seeking
    or DDP; R1 when ``r1_gamma`` > 0, as the trainer computes it); ``Gm``/``Dm`` may be compiled wrappers of G and
    ``D`` (whose parameters are frozen for the G step). Returns (loss_d, loss_g) detached. ``optG``/``optD`` None:
    no parameter update (FLOP counting). ``counting``: under torch's FlopCounterMode, whose module tracker cannot
    hook a leaf tensor that autograd.grad differentiates: D then sees the real images through a no-FLOP view."""
    b = real.shape[0]
    fake = Gm(z)
    if r1_gamma > 0:  # as the trainer (on the CPU the real images in a pass of their own, on CUDA one pass)
        from ..train.models import d_loss_r1
        loss_d = d_loss_r1((lambda x: Dm(x.view_as(x))) if counting else Dm, loss, real, fake, r1_gamma,
                           one_pass=real.is_cuda)[0]
    else:  # one pass over cat(real, fake); D's head and the loss one op with fused layers
        loss_d = loss.real_fake(Dm, torch.cat([real, fake.detach()]), b)[0]
    if optD is not None:
        optD.zero_grad(set_to_none=True)
    loss_d.backward()
    if optD is not None:
        optD.step()
    for p in D.parameters():
        p.requires_grad_(False)
    try:
        loss_g = loss.of(Dm, fake, 1.0)[0]
        if optG is not None:
            optG.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        for p in D.parameters():
            p.requires_grad_(True)
    if optG is not None:
        optG.step()
    return loss_d.detach(), loss_g.detach()


# ------------------------------------------------------------------------------------------- the case list
def _op_cases(device: torch.device, sizes: Sequence[str]) -> List[OpCase]:
    B = BATCH
    cuda = device.type == "cuda"
    specs = []
    if "seed" in sizes:
        specs += [
            ("dense", "G.fc1", dict(M=B, K=100, N=128), "lrelu"),
            ("dense", "G.fc2", dict(M=B, K=128, N=256), "lrelu"),
            ("dense", "G.fc3", dict(M=B, K=256, N=784), "sigmoid"),
            ("dense", "D.fc", dict(M=B, K=2048, N=1), "linear"),
            ("conv2d", "D.conv1", dict(N=B, C=1, H=28, W=28, O=32, k=3, s=2, p=1), "lrelu"),
            ("conv2d", "D.conv2", dict(N=B, C=32, H=14, W=14, O=64, k=3, s=2, p=1), "lrelu"),
            ("conv2d", "D.conv3", dict(N=B, C=64, H=7, W=7, O=128, k=3, s=2, p=1), "lrelu"),
            ("bias_act", "D.conv1.out", dict(shape=(B, 32, 14, 14)), "lrelu"),
            ("bias_act", "D.conv3.out", dict(shape=(B, 128, 4, 4)), "lrelu"),
            ("bias_act", "G.fc3.out", dict(shape=(B, 784)), "sigmoid"),
            ("bce", "D.head", dict(n=B), None),
        ]
    if "large" in sizes:  # bandwidth-bound elementwise ops well past the last-level cache; big products
        specs += [
            ("bias_act", "large", dict(shape=(32, 256, 64, 64) if cuda else (16, 256, 64, 64)), "lrelu"),
            ("bce", "large", dict(n=(1 << 25) if cuda else (1 << 24)), None),
            ("dense", "large", dict(M=16384, K=2048, N=2048) if cuda else dict(M=4096, K=1024, N=1024), "lrelu"),
            ("conv2d", "large", dict(N=64, C=128, H=64, W=64, O=128, k=3, s=1, p=1) if cuda
             else dict(N=16, C=64, H=32, W=32, O=64, k=3, s=1, p=1), "lrelu"),
        ]
    cases = []
    for family, label, dims, act in specs:
        for mode in ("fwd", "fwdbwd"):
            cases.append(OpCase(family, label, mode, "large" if label == "large" else "seed", dims, act or "linear"))
    return cases


def build_cases(device, sizes: Sequence[str] = ("seed", "large"), step: bool = True) -> List[Case]:
    """Every case for ``device``: the training step (plain, then with R1) first, then the ops at the seed shapes,
    then large shapes."""
    device = torch.device(device)
    return ([StepCase(), StepCase(r1=True)] if step else []) + _op_cases(device, sizes)


def select_cases(cases: Sequence[Case], patterns: Optional[str]) -> List[Case]:
    """Cases whose name matches any comma-separated pattern: a glob (``dense/*``) or, without glob
    characters, a substring (``conv``); in the order of the first pattern each matches, so under a time budget
    ``step,*/large/*,*`` runs the large shapes before the rest."""
    if not patterns:
        return list(cases)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]

    def first_match(c):
        for i, p in enumerate(pats):
            if (any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(c.name, p)) or (
                    not any(ch in p for ch in "*?[") and p in c.name):
                return i
        return None

    ranked = [(first_match(c), c) for c in cases]
    return [c for i, c in sorted((r for r in ranked if r[0] is not None), key=lambda r: r[0])]


def default_variants(case: Case, device: torch.device, quick: bool) -> List[str]:
    """The variants ``fastgan bench`` runs for ``case`` (see the module docstring); --quick drops the
    torch.compile variants of the ops everywhere, and every torch.compile variant on the CPU (compiling with
    inductor's C++ backend takes minutes on 2 cores)."""
    cuda = device.type == "cuda"
    if isinstance(case, StepCase):
        v = ["fastgan", "eager", "eager-nchw"]
        if cuda:
            v = ["fastgan", "fastgan+graph", "eager", "eager+graph"]
        if case.r1:  # no graph / compile variants (see StepCase); supports() filters the rest
            v = ["fastgan", "eager", "eager-nchw"] + ([] if quick else ["eager-ref"])
            return [x for x in v if case.supports(x, device)]
        if not quick:
            v.append("eager-ref")
        if cuda:
            v += ["compile", "compile-ro", "compile-ma"]
        elif not quick:
            v.append("compile")
    else:
        v = ["fastgan", "eager", "stock"]
        if "bare" in case.variants_supported:
            v.append("bare")
        v += list(ROUTES)  # (CUDA only: supports() drops them elsewhere)
        if not quick:
            v += ["compile"] + (["compile-ro", "compile-ma"] if cuda else [])
    return [x for x in v if case.supports(x, device)]


def variant_available(variant: str, device: torch.device) -> Optional[str]:
    """None when ``variant`` can run on ``device``, else the reason it cannot."""
    if variant.startswith("fastgan"):
        if _ext.C is None:
            return f"fastgan._C not loaded: {_ext.load_error}"
        if device.type == "cuda" and not _ext.has_cuda():
            return "fastgan._C built without CUDA kernels"
    if variant.endswith("+graph") and device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    return None


def make_runner(case: Case, variant: str, device, sets: int = 1, seed: int = 0) -> Runner:
    return case.make(variant, torch.device(device), sets, seed)
