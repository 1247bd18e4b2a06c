"""The GAN training loop.

One step (``Trainer._step``), with ``b`` = the per-process share of the global batch:

1. ``fake = G(z)``, ``z ~ N(0, I)``.
2. D step: ``logits = D(cat[real, fake.detach()])`` (one forward for both halves; with ``--inst-noise SIGMA``
   both halves get ``N(0, SIGMA^2)`` instance noise); ``loss_D = BCE(logits_real, 1) + BCE(logits_fake, 0)``
   (+ ``gamma/2 * E||grad_x D(x)||^2`` with ``--r1-gamma``, by double backward:
   ``torch.autograd.grad(create_graph=True)``; with ``--r1-every K`` only on every K-th step, weighted ``gamma*K``);
   Adam step on D (learning rate ``--lr-d``, default ``--lr``).
3. G step, against the updated D: ``loss_G = BCE(D(fake), 1)`` (the non-saturating loss; + ``--ms-lambda`` times
   the mode-seeking term, see :meth:`Trainer._mode_seeking`); D's parameters are frozen for this backward (no
   wasted weight gradients) and, under DDP, D does not all-reduce; Adam step on G.
4. With ``--ema-beta`` > 0: ``G_ema`` (an exponential moving average of G's weights, saved in the checkpoint)
   is updated (with fused layers inside G's Adam update: :class:`fastgan.optim.Adam`'s ``ema``); sample grids,
   ``fastgan sample`` and ``fastgan eval`` then use it.

Every BCE takes the label as a Python number: with ``--layers fused`` that is :class:`fastgan.nn.BCEWithLogitsLoss`
(no target tensor is created); with ``--layers stock`` it is ``torch.nn.BCEWithLogitsLoss`` on a ``full_like``
target.

Reproducibility: weights are initialised from ``--seed``; the data order of epoch ``e`` is a permutation drawn from
``(seed, e)``; the noise comes from a dedicated generator whose state is checkpointed. ``--batch-size`` is the
*global* batch: under torchrun every process draws the same global noise and permutation and keeps its own slice,
so N processes compute (up to floating-point summation order) the same step as one.

On CUDA the data set lives on the device, batches are gathered there, and nothing in the step reads a value back
to the host; the per-step metrics stay on the device and are read every ``log_every`` steps, with the step times
from CUDA events. ``--cuda-graph`` captures the whole step (both forwards, backwards and fused Adam updates) in CUDA
graphs, one per kind of step (with and without the lazy R1 penalty), each after two eager warm-up steps of its kind.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist

from .. import _impl
from .. import optim as fg_optim
from .config import _LEGACY, _MUST_MATCH, DEFAULT_EPOCHS, DEFAULTS, TrainConfig
from . import checkpoint as ckpt
from . import distributed
from .data import DataError, load_data
from .models import G_ARCHS, G_INITS, LAYER_KINDS, Z_DIM, build_models, d_loss_r1, make_loss
from .outputs import MetricsLog, plot_losses, read_metrics, save_grid

__all__ = ["TrainConfig", "TrainError", "Trainer", "train", "DEFAULTS", "DEFAULT_EPOCHS"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
LOSSES_NAME = "losses.png"
_FIELDS = ("loss_d", "loss_g", "d_real", "d_fake", "r1")
N_FIXED = 64


# The Adam group settings that say how an update runs, not what it computes (_load_state keeps this run's).
_ADAM_EXEC = ("fused", "capturable", "foreach", "differentiable")


class TrainError(RuntimeError):
    """A problem with the run's configuration or environment, with a message for the user."""


def _warn_if_busy(threads: int) -> None:
    """One line when the load average says the cores are taken: torch's OpenMP threads then wait for each other at
    every op (a step measured 867 ms instead of 33 ms at load 6 on 2 cores)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return
    cores = os.cpu_count() or 1
    if threads > 1 and load > cores - 0.5:
        print(f"fastgan train: warning: the machine is busy (load average {load:.1f} on {cores} cores); "
              f"{threads} torch threads will wait for each other: --threads 1 may be much faster", file=sys.stderr)


def _file_id(path: Path):
    """(device, inode, size, mtime) of a file, None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def _out_lock(out: Path):
    """Held while a run writes into ``out``: a second run started there stops at once instead of mixing its
    checkpoint writes and metrics with this one's (an advisory lock: POSIX only)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    created = not out.exists()
    lock = out / ".fastgan-train.lock"
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
    except OSError as e:
        raise TrainError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise TrainError(f"--out {out}: another fastgan train is writing there; wait for it or choose "
                                 "another --out") from None
            yield
    finally:
        if created and [p.name for p in out.iterdir()] == [lock.name]:  # a run refused before writing anything
            lock.unlink(missing_ok=True)
            out.rmdir()


def _diverged(step: int, what: str) -> TrainError:
    return TrainError(f"training diverged at step {step}: {what}; stopped before the next checkpoint (the last one, "
                      "if any, is from before it). Lower the learning rates (--lr, --lr-d) or add the R1 penalty "
                      "(--r1-gamma)")


def _seed_from(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1))


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        if cfg.layers not in LAYER_KINDS:
            raise TrainError(f"--layers: expected one of {list(LAYER_KINDS)}, got {cfg.layers!r}")
        try:
            self.dist, self.device = distributed.setup(cfg.device)
        except (RuntimeError, ValueError) as e:
            raise TrainError(str(e)) from None
        self.is_main = self.dist.is_main
        try:
            self._setup()
        except BaseException:
            distributed.cleanup(self.dist)
            raise

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, dev = self.cfg, self.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            self.impl = cfg.impl if cfg.impl is not None else _impl.current()  # (FASTGAN_IMPL's, else auto)
        except RuntimeError as e:
            raise TrainError(str(e)) from None
        if self.impl not in _impl.NAMES:
            raise TrainError(f"--impl: unknown implementation {self.impl!r}; expected one of {list(_impl.NAMES)}")
        if self.impl not in _impl.available_impls():
            raise TrainError(f"--impl: implementation {self.impl!r} is not available in this build: "
                             f"{_impl.unavailable_reason(self.impl)}")

        if not str(cfg.out):
            raise TrainError("--out: expected a directory path, got ''")
        if cfg.resume and cfg.overwrite:
            raise TrainError("--resume continues the run in --out and --overwrite starts it again: pass one of them")
        state = None
        mine = self.out / CHECKPOINT_NAME
        self._found = _file_id(mine)  # what --out held when it was checked (run() makes sure it still does)
        if cfg.resume:
            path = mine if cfg.resume == "auto" else Path(cfg.resume)
            state = ckpt.load(path)  # CheckpointError: clear message
            self.resume_path = path
            if mine.exists() and not _same_file(mine, path):  # the continuation would replace another run's
                raise TrainError(f"--resume {path}: {mine} exists and is another run's checkpoint, which this run "
                                 "would overwrite; choose another --out")
        elif mine.exists() and not cfg.overwrite:
            raise TrainError(f"{mine} exists: pass --resume to continue that run, "
                             "--overwrite to start again in the same directory, or choose another --out")
        # a run's pictures without its checkpoint (moved or deleted); a run stopped before its first checkpoint
        # leaves only a metrics file, which starting again replaces
        others = [p.name for p in (self.out / LOSSES_NAME, self.out / "samples")
                  if p.is_file() or any(p.glob("*.png"))]
        if others and not mine.exists() and not cfg.overwrite:
            raise TrainError(f"--out {self.out} holds a run's outputs ({', '.join(others)}) but no {CHECKPOINT_NAME}: "
                             "this run would mix its own with them; "
                             + ("choose another --out" if cfg.resume else "pass --overwrite to replace them, or "
                                "choose another --out"))
        self.hp = self._resolve(state)
        hp = self.hp

        try:
            self.data = load_data(hp["data"])
        except DataError as e:
            if state is None or cfg.data is not None:
                raise
            if state["config"].get("data_digest") is None:  # (--data elsewhere is refused for it: _resolve)
                raise TrainError(f"--resume: the checkpoint's data set cannot be read ({e}); put it back there (the "
                                 "checkpoint is older than the check of its images that lets --data name a new "
                                 "place)") from None
            raise TrainError(f"--resume: the checkpoint's data set cannot be read ({e}); if it moved, pass --data "
                             "with its new place (its images are checked against the checkpoint's)") from None
        world = self.dist.world_size
        B = hp["batch_size"]
        if B % world:
            if state is not None and cfg.batch_size is None:
                raise TrainError(f"the checkpoint's global batch ({B}; it stays as it was on resume) must be "
                                 f"divisible by the number of processes ({world}): continue it with a process "
                                 f"count that divides {B}")
            raise TrainError(f"--batch-size {B} is the global batch and must be divisible by the number of "
                             f"processes ({world})")
        self.local_b = B // world
        if hp["ms_lambda"] > 0 and world > 1 and self.local_b % 2:
            raise TrainError(f"--ms-lambda pairs samples (0, 1), (2, 3), ... within each process: its share of the "
                             f"batch ({B} / {world} processes = {self.local_b}) must be even for the pairs to be "
                             "those of one process")
        self.steps_per_epoch = len(self.data) // B
        if self.steps_per_epoch == 0:
            raise TrainError(f"--batch-size {B} is larger than the data set ({len(self.data)} images)")
        trained = state["config"].get("steps_per_epoch") if state is not None else None
        if trained is not None and trained != self.steps_per_epoch:
            raise TrainError(f"--resume: the data set changed since the checkpoint: {trained} steps per epoch then, "
                             f"{self.steps_per_epoch} now ({self.data.source}: {len(self.data)} images); resume "
                             "with the data it was trained on")
        self.data_digest = self.data.digest()
        trained_on = state["config"].get("data_digest") if state is not None else None
        if trained_on is not None and trained_on != self.data_digest:
            raise TrainError(f"--resume: {self.data.source} holds other images than the checkpoint was trained on; "
                             "resume with the data it was trained on")
        self.total_steps = hp["epochs"] * self.steps_per_epoch
        if hp["max_steps"]:
            self.total_steps = min(self.total_steps, hp["max_steps"])
        if cfg.cuda_graph:
            if dev.type != "cuda":
                raise TrainError("--cuda-graph needs a CUDA device (--device cuda)")
            if self.dist.enabled:
                raise TrainError("--cuda-graph is not supported together with torchrun/DDP; run one process")

        # models, losses, optimisers
        self.G, self.D = build_models(cfg.layers, seed=hp["seed"], device=dev, g_init=hp["g_init"], arch=hp["arch"])
        self.loss = make_loss(cfg.layers)
        # the EMA generator (sampling and evaluation); starts as a copy of G
        self.G_ema = None
        if hp["ema_beta"] > 0:
            self.G_ema = copy.deepcopy(self.G).eval()
            self.G_ema.requires_grad_(False)
        adam = dict(betas=(hp["beta1"], hp["beta2"]))
        if dev.type == "cuda":
            adam.update(fused=True, capturable=cfg.cuda_graph)
        if cfg.layers == "fused":  # fastgan's Adam: on CUDA one launch per update, G's EMA inside G's
            ema = {} if self.G_ema is None else dict(ema=self.G_ema.parameters(), ema_beta=hp["ema_beta"])
            self.optG = fg_optim.Adam(self.G.parameters(), lr=hp["lr"], **adam, **ema)
            self.optD = fg_optim.Adam(self.D.parameters(), lr=hp["lr_d"], **adam)
        else:  # stock: torch's Adam, then G's EMA (_update_ema)
            self.optG = torch.optim.Adam(self.G.parameters(), lr=hp["lr"], **adam)
            self.optD = torch.optim.Adam(self.D.parameters(), lr=hp["lr_d"], **adam)
        self.ema_after_step = self.G_ema is not None and cfg.layers != "fused"

        # noise: a dedicated generator (state checkpointed); fixed noise for the sample grids
        self.noise_gen = torch.Generator(dev).manual_seed(_seed_from(hp["seed"], 1))
        self.fixed_noise = torch.randn(N_FIXED, Z_DIM, generator=torch.Generator().manual_seed(
            _seed_from(hp["seed"], 2)))
        self.step = 0
        if state is not None:
            self._load_state(state)
        self.fixed_noise = self.fixed_noise.to(dev)

        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [dev.index] if dev.type == "cuda" else None
            self.G_ddp = DDP(self.G, device_ids=ids)
            self.D_ddp = DDP(self.D, device_ids=ids)
        else:
            self.G_ddp, self.D_ddp = self.G, self.D

        # the data set on the training device, as D's float inputs in [0, 1] (converted once: a batch is one gather)
        self.images = self.data.images.to(dev).unsqueeze(1).float().div_(255)
        # constants of the step: the backward seed of the losses, the R1 metric of steps without R1
        self._one, self._zero = torch.ones((), device=dev), torch.zeros((), device=dev)
        self._perm_epoch, self._epoch_images = -1, None
        self.r1_one_pass = dev.type == "cuda"  # R1 steps: D once over cat(real, fake) on CUDA (models.d_loss_r1)
        # cuDNN times its algorithms (the choice may differ from run to run) unless determinism was asked for
        deterministic = torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()
        if dev.type == "cuda" and not deterministic:
            torch.backends.cudnn.benchmark = True
        self.log_every = cfg.log_every or (50 if dev.type == "cuda" else 1)
        if self.dist.enabled:
            self._check_same_settings()
        if dev.type == "cpu" and not cfg.quiet and self.is_main:  # (after every check: no error follows this)
            _warn_if_busy(torch.get_num_threads())

    def _check_same_settings(self) -> None:
        """Every process must run the same recipe from the same step (torchrun starts them with the same
        arguments; a hand-made launch may not): different step counts or logging intervals would pair up the
        collectives wrongly and hang, a different seed or batch would train on inconsistent data silently."""
        cfg = self.cfg
        mine = {**{k: v for k, v in self.hp.items() if k != "data"}, "images": len(self.data),
                "data_digest": self.data_digest, "step": self.step,
                "total_steps": self.total_steps, "log_every": self.log_every,
                "checkpoint_every": cfg.checkpoint_every, "layers": cfg.layers, "impl": self.impl}
        every = [None] * self.dist.world_size
        dist.all_gather_object(every, mine)
        diff = [f"{k} " + ", ".join(f"{theirs.get(k)!r} (rank {r})" for r, theirs in enumerate(every))
                for k in mine if any(theirs.get(k) != every[0].get(k) for theirs in every)]
        if diff:  # (the same message on every process)
            # every process leaves the collective before any tears its connections down (one closing them while a
            # peer still finishes the gather aborted that peer at exit: "terminate called without an active
            # exception")
            dist.barrier()
            raise TrainError("the processes were started with different settings: " + "; ".join(diff) +
                             ". Start every process with the same arguments, as torchrun does")

    def _resolve(self, state) -> dict:
        cfg = self.cfg
        saved = state["config"] if state is not None else {}
        hp = {}
        for key, default in DEFAULTS.items():
            given = getattr(cfg, key)
            if key == "data" and given is not None:
                given = os.path.abspath(given)
            if given is None:
                if key in saved:
                    hp[key] = saved[key]
                elif state is not None and key in _LEGACY:  # a checkpoint from before this setting existed
                    hp[key] = saved.get("lr") if _LEGACY[key] == "lr" else _LEGACY[key]
                else:
                    hp[key] = default
            else:
                # (another path to the data is fine when its images are the checkpoint's: checked in _setup)
                moved = key == "data" and saved.get(key) is not None and saved.get("data_digest") is not None
                if key in _MUST_MATCH and state is not None and key in saved and saved[key] != given and not moved:
                    opt = "--" + key.replace("_", "-")
                    was = "the embedded data (no --data)" if key == "data" and saved[key] is None else \
                        f"{opt} {saved[key]!r}"
                    raise TrainError(f"--resume: the checkpoint was trained with {was}, got {opt} {given!r}; drop "
                                     f"{opt} to continue that run exactly")
                hp[key] = given
        for key in ("batch_size", "epochs"):
            if not isinstance(hp[key], int) or hp[key] < 1:
                raise TrainError(f"--{key.replace('_', '-')}: expected a positive integer, got {hp[key]!r}")
        if hp["max_steps"] is None or hp["max_steps"] < 0:
            raise TrainError(f"--max-steps: expected an integer >= 0, got {hp['max_steps']!r}")
        if not (hp["r1_gamma"] >= 0 and math.isfinite(hp["r1_gamma"])):
            raise TrainError(f"--r1-gamma: expected a finite number >= 0, got {hp['r1_gamma']!r}")
        if hp["lr_d"] is None:
            hp["lr_d"] = hp["lr"]
        for key in ("lr", "lr_d"):  # (Adam keeps it in float32)
            if not (isinstance(hp[key], (int, float)) and 0 < hp[key] <= 1e38):
                raise TrainError(f"--{key.replace('_', '-')}: expected a number in (0, 1e38], got {hp[key]!r}")
        if not isinstance(hp["r1_every"], int) or hp["r1_every"] < 1:
            raise TrainError(f"--r1-every: expected a positive integer, got {hp['r1_every']!r}")
        for key in ("ms_lambda", "inst_noise"):
            if not (hp[key] >= 0 and math.isfinite(hp[key])):
                raise TrainError(f"--{key.replace('_', '-')}: expected a finite number >= 0, got {hp[key]!r}")
        if hp["arch"] not in G_ARCHS:
            raise TrainError(f"--arch: expected one of {list(G_ARCHS)}, got {hp['arch']!r}")
        if hp["g_init"] not in G_INITS:
            raise TrainError(f"--g-init: expected one of {list(G_INITS)}, got {hp['g_init']!r}")
        if not 0 <= hp["ema_beta"] < 1:
            raise TrainError(f"--ema-beta: expected a number in [0, 1), got {hp['ema_beta']!r}")
        for b in ("beta1", "beta2"):
            if not 0 <= hp[b] < 1:
                raise TrainError(f"--{b}: expected a number in [0, 1), got {hp[b]!r}")
        hp["z_dim"] = Z_DIM
        return hp

    def _load_state(self, state: dict) -> None:
        path = self.resume_path
        ckpt.load_state_dict(self.G, state["G"], "generator", path)
        ckpt.load_state_dict(self.D, state["D"], "discriminator", path)
        if self.G_ema is not None:  # a checkpoint without one (EMA switched on at resume): start from G
            ckpt.load_state_dict(self.G_ema, state.get("G_ema", state["G"]), "EMA generator", path)
        for opt, key in ((self.optG, "optG"), (self.optD, "optD")):
            # torch.optim's load_state_dict takes every group setting from the checkpoint: how the update runs
            # (fused, capturable for --cuda-graph, ...) stays this run's, and each step counter goes where that
            # setting keeps it (on the parameter's device when fused or capturable), as in a fresh optimiser
            run = [{k: g[k] for k in _ADAM_EXEC if k in g} for g in opt.param_groups]
            try:
                opt.load_state_dict(state[key])
            except (ValueError, KeyError, RuntimeError) as e:
                raise ckpt.CheckpointError(f"{path}: optimiser state does not fit these models ({e})") from None
            for g, mine in zip(opt.param_groups, run):
                g.update(mine)
                for p in g["params"]:
                    st = opt.state.get(p, {})
                    if torch.is_tensor(st.get("step")):
                        st["step"] = st["step"].to(p.device if g.get("fused") or g.get("capturable") else "cpu")
        rng = state["rng"]
        if isinstance(rng.get("torch_cpu"), torch.Tensor):  # the global RNG (unused by the step itself)
            torch.set_rng_state(rng["torch_cpu"])
        noise = rng.get("noise_cuda" if self.device.type == "cuda" else "noise_cpu")
        if noise is not None:
            self.noise_gen.set_state(noise)
        else:  # resumed on another device type: noise continues from a seed derived from the step
            self.noise_gen.manual_seed(_seed_from(self.hp["seed"], 3, int(state["step"])))
            if self.is_main:
                print(f"note: {path} was written on another device type; the noise stream continues from a "
                      "derived seed, so this run will not match an uninterrupted one", file=sys.stderr)
        self.fixed_noise = state["fixed_noise"].float().cpu()
        self.step = int(state["step"])
        if self.step > self.total_steps:
            raise TrainError(f"--resume: the checkpoint is at step {self.step}, past this run's end "
                             f"({self.total_steps} steps); raise --epochs or --max-steps to train further")

    # ------------------------------------------------------------------ the step
    def _set_requires_grad(self, module, flag: bool) -> None:
        for p in module.parameters():
            p.requires_grad_(flag)

    def r1_weight(self, step: int) -> float:
        """The R1 weight gamma of step ``step`` (0-based): lazy R1 applies the penalty on every ``r1_every``-th step,
        weighted by ``r1_every`` (the same penalty on average); 0 on the other steps. The eager step and the CUDA
        graphs (one captured per kind of step) follow this one schedule."""
        gamma, every = self.hp["r1_gamma"], self.hp["r1_every"]
        if every > 1:
            return gamma * every if step % every == 0 else 0.0
        return gamma

    def _step(self, real: torch.Tensor, z: torch.Tensor, eps: Optional[torch.Tensor] = None,
              gamma: Optional[float] = None) -> torch.Tensor:
        """One D update and one G update; returns the step's raw metrics on the device, one vector
        ``[loss_d, loss_g, gamma/2 * r1, D's logits of the real half (b), of the fake half (b)]`` (one launch:
        :meth:`metrics` turns many steps' vectors into (loss_d, loss_g, d_real, d_fake, r1) at once, when they are
        logged).

        ``eps``: instance noise (``2b`` images: the first ``b`` for the real half, the rest for the fake half) added
        to D's inputs, or None. ``gamma``: this step's R1 weight (default: :meth:`r1_weight` of the current step).
        Without R1, D runs once over cat(real, fake); with R1, too on CUDA, while on the CPU it sees the real
        images in a pass of their own, so the double backward runs through the real half only
        (``r1_one_pass``, :func:`fastgan.train.models.d_loss_r1`)."""
        G, D, loss, b = self.G_ddp, self.D_ddp, self.loss, real.shape[0]
        if gamma is None:
            gamma = self.r1_weight(self.step)
        fake = G(z)
        if eps is not None:
            real = real + eps[:b]
        fake_d = fake if eps is None else fake + eps[b:]
        if gamma > 0:
            loss_d, term, logits = d_loss_r1(D, loss, real, fake_d, gamma, one_pass=self.r1_one_pass)
        else:
            # = loss(D(real), 1) + loss(D(fake), 0): one pass, D's head and the loss one op with fused layers
            loss_d, logits = loss.real_fake(D, torch.cat([real, fake_d.detach()]), b)
            term = self._zero
        self.optD.zero_grad(set_to_none=True)
        loss_d.backward(self._one)  # (a cached seed: no ones_like per step)
        self.optD.step()

        self._set_requires_grad(self.D, False)
        try:
            no_sync = D.no_sync() if self.dist.enabled else contextlib.nullcontext()
            with no_sync:
                loss_g = loss.of(D, fake_d, 1.0)[0]
                if self.hp["ms_lambda"] > 0 and b >= 2:
                    loss_g = loss_g + self.hp["ms_lambda"] * self._mode_seeking(fake, z)
                self.optG.zero_grad(set_to_none=True)
                loss_g.backward(self._one)
        finally:
            self._set_requires_grad(self.D, True)
        self.optG.step()
        with torch.no_grad():
            return torch.cat([loss_d.view(1), loss_g.view(1), term.view(1), logits.view(-1)])

    @staticmethod
    def metrics(raw: torch.Tensor, gammas) -> torch.Tensor:
        """Steps' raw metrics (:meth:`_step`'s vectors stacked, ``(k, 3 + 2b)``) as ``(k, 5)``: loss_d, loss_g,
        d_real, d_fake (D's mean probability on the real and the fake half), r1 -- _FIELDS' order. ``gammas``: the
        steps' R1 weights (:meth:`r1_weight`; k numbers): r1 is the penalty term over gamma/2, 0 where gamma is 0."""
        k = raw.shape[0]
        if len(gammas) != k:
            raise ValueError(f"gammas: expected {k} R1 weights (one per step), got {len(gammas)}")
        # (the term is exactly 0 on steps without R1: 0 / 1)
        half = torch.tensor([0.5 * g if g > 0 else 1.0 for g in gammas], dtype=raw.dtype).to(raw.device)
        probs = torch.sigmoid(raw[:, 3:]).view(k, 2, -1).mean(2)
        return torch.cat([raw[:, :2], probs, raw[:, 2:3] / half[:, None]], dim=1)

    @staticmethod
    def _mode_seeking(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The mode-seeking term (Mao et al., CVPR 2019): samples are paired (0, 1), (2, 3), ...;
        ``1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps)``, averaged over the pairs. Small when different noise
        gives different images; large when G ignores z (mode collapse). Adjacent pairs keep the pairing the same
        when DDP splits the batch across processes (each holds whole pairs when its share is even)."""
        h = fake.shape[0] // 2
        d_img = (fake[0:2 * h:2] - fake[1:2 * h:2]).abs().flatten(1).mean(1)
        d_z = (z[0:2 * h:2] - z[1:2 * h:2]).abs().mean(1)
        return (1.0 / (d_img / d_z + 1e-5)).mean()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``G_ema <- beta * G_ema + (1 - beta) * G`` after step ``self.step`` (1-based), with the ramp-up
        ``beta = min(ema_beta, (1 + step) / (10 + step))``: early on, when G changes fast, the average is short.
        With stock layers (``ema_after_step``); fastgan's Adam does the same inside G's update, from G's step
        count (the same number: G is updated once per step)."""
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()),
                             fg_optim.ema_weight(float(self.step), self.hp["ema_beta"]))

    def _graph_step(self, real: torch.Tensor, z: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``_step`` through CUDA graphs: one graph per kind of step (with and without the R1 penalty, as the lazy R1
        schedule asks: :meth:`r1_weight`), each captured after eager warm-up steps of its kind on a side stream, then
        replayed. The graphs share the static inputs and one memory pool; the optimisers are capturable."""
        gamma = self.r1_weight(self.step)
        kind = gamma > 0
        if not hasattr(self, "_static_real"):
            self._static_real = torch.empty_like(real)
            self._static_z = torch.empty_like(z)
            self._static_eps = None if eps is None else torch.empty_like(eps)
            self._graphs, self._static_outs, self._warm = {}, {}, {False: 0, True: 0}
            self._graph_pool = torch.cuda.graph_pool_handle()
        self._static_real.copy_(real)
        self._static_z.copy_(z)
        if eps is not None:
            self._static_eps.copy_(eps)
        if kind not in self._graphs:
            if self._warm[kind] < 2:
                self._warm[kind] += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    out = self._step(self._static_real, self._static_z, self._static_eps, gamma)
                torch.cuda.current_stream().wait_stream(side)
                return out
            self.optD.zero_grad(set_to_none=True)
            self.optG.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._graph_pool):
                self._static_outs[kind] = self._step(self._static_real, self._static_z, self._static_eps, gamma)
            self._graphs[kind] = graph
        self._graphs[kind].replay()
        return self._static_outs[kind].clone()

    def _batch(self, step: int):
        """(real, z, eps) for global step ``step`` (0-based): this process's slice of the global batch; ``eps`` is
        the instance noise for D's inputs (real half, then fake half), None when ``inst_noise`` is 0."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:  # the epoch's images in its order, gathered once: a batch is a slice (a view)
            g = torch.Generator().manual_seed(_seed_from(self.hp["seed"], 0, epoch))
            perm = torch.randperm(len(self.data), generator=g).to(self.device, non_blocking=True)
            self._epoch_images = self.images.index_select(0, perm)  # (a second copy of the data set)
            self._perm_epoch = epoch
        B, b, r = self.hp["batch_size"], self.local_b, self.dist.rank
        real = self._epoch_images[i * B + r * b: i * B + (r + 1) * b]
        z = torch.randn(B, Z_DIM, device=self.device, generator=self.noise_gen)[r * b:(r + 1) * b]
        eps = None
        sigma = self.hp["inst_noise"]
        if sigma > 0:
            eps = torch.randn(2, B, *real.shape[1:], device=self.device, generator=self.noise_gen)
            eps = eps[:, r * b:(r + 1) * b].reshape(2 * b, *real.shape[1:]).mul_(sigma)
        return real, z, eps

    # ------------------------------------------------------------------ outputs
    def state_dict(self) -> dict:
        rng = {"noise_" + self.device.type: self.noise_gen.get_state(), "torch_cpu": torch.get_rng_state()}
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            "optG": self.optG.state_dict(), "optD": self.optD.state_dict(),
            "step": self.step, "epoch": self.step // self.steps_per_epoch,
            "rng": rng, "fixed_noise": self.fixed_noise.cpu(),
            "config": {**{k: self.hp[k] for k in (*DEFAULTS, "z_dim")}, "layers": self.cfg.layers,
                       "world_size": self.dist.world_size, "data_source": self.data.source,
                       "data_digest": self.data_digest,
                       "steps_per_epoch": self.steps_per_epoch},
        }

    def save_checkpoint(self) -> None:
        # weights a diverging update made non-finite (its loss, computed before the update, was still finite) must
        # not replace the last good checkpoint; every process holds the same weights, so all stop
        models = [m for m in (self.G, self.D, self.G_ema) if m is not None]
        if not bool(torch.stack([torch.isfinite(p).all() for m in models for p in m.parameters()]).all()):
            raise _diverged(self.step, "the weights are no longer finite")
        if self.is_main:
            ckpt.save(self.state_dict(), self.out / CHECKPOINT_NAME)

    @torch.no_grad()
    def save_samples(self, path) -> None:
        if self.is_main:
            G = self.G_ema if self.G_ema is not None else self.G
            was_training = G.training
            G.eval()
            imgs = G(self.fixed_noise)
            G.train(was_training)
            save_grid(imgs, path, nrow=8)

    def _pictures(self, missing_only: bool = False) -> None:
        """The sample grid and loss plot due at this step (an epoch's end, the run's last step). ``missing_only``
        (on resume): the grid only if it is missing -- a run stopped between its checkpoint and its pictures -- and
        the plot again."""
        epoch_end = self.step % self.steps_per_epoch == 0
        last = self.step == self.total_steps
        if not self.is_main or self.step == 0 or not (epoch_end or last):
            return
        epoch = (self.step - 1) // self.steps_per_epoch + 1
        grid = self.out / "samples" / (f"epoch_{epoch:04d}.png" if epoch_end else f"step_{self.step:07d}.png")
        if (self.cfg.samples_every_epoch or last) and not (missing_only and grid.exists()):
            self.save_samples(grid)
        if last or epoch % 10 == 0:  # (re-reading and plotting every step's metrics: ~0.3 s)
            plot_losses(read_metrics(self.out / METRICS_NAME), self.out / LOSSES_NAME)

    def _clear_previous_run(self) -> None:
        """--overwrite: the earlier run's checkpoint, metrics, loss plot and sample grids go before this run writes,
        so an interrupted new run never leaves them beside its own files."""
        for f in [self.out / CHECKPOINT_NAME, self.out / LOSSES_NAME, self.out / METRICS_NAME,
                  *self.out.glob("samples/epoch_*.png"), *self.out.glob("samples/step_*.png")]:
            f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        done = False
        try:
            with _out_lock(self.out) if self.is_main else contextlib.nullcontext(), _impl.use_impl(self.impl):
                if self.is_main and _file_id(self.out / CHECKPOINT_NAME) != self._found:
                    raise TrainError(f"--out {self.out}: its checkpoint changed since this run was set up (another "
                                     "run?); set it up again")
                summary = self._run()
            done = True
            return summary
        finally:
            distributed.cleanup(self.dist, barrier=done)

    def _run(self) -> dict:
        cfg, dev, main = self.cfg, self.device, self.is_main
        resumed_from = self.step if cfg.resume else None
        # the pictures of the checkpoint's step, where a run stopped right after its checkpoint missed them (only
        # for --out's own checkpoint: a continuation into another folder starts that folder's pictures afresh)
        in_place = resumed_from is not None and _same_file(self.resume_path, self.out / CHECKPOINT_NAME)
        if resumed_from is not None and self.step >= self.total_steps:
            if in_place:
                self._pictures(missing_only=True)
            epochs = self.step // self.steps_per_epoch
            if main and not cfg.quiet:
                longer = (f"--max-steps {self.step + 1000} (or 0: no step limit)"
                          if self.hp["max_steps"] and self.total_steps == self.hp["max_steps"]
                          else f"--epochs {epochs + 30} (or more)")
                print(f"fastgan train: the run in {self.out} is complete ({self.step} steps, {epochs} epoch"
                      f"{'s' * (epochs != 1)}); to train it longer: fastgan train --out {self.out} --resume {longer}")
            return {"steps": self.step, "elapsed": 0.0, "complete": True, "epochs": [],
                    "checkpoint": str(self.out / CHECKPOINT_NAME), "world_size": self.dist.world_size,
                    "rank": self.dist.rank}
        if main and cfg.overwrite:
            self._clear_previous_run()
        log = MetricsLog(self.out / METRICS_NAME, resume_step=resumed_from) if main else None
        if in_place:  # (after the metrics past the checkpoint are dropped: the plot shows the resumed run's)
            self._pictures(missing_only=True)
        show = main and not cfg.quiet
        bar = None
        if main:
            from tqdm.auto import tqdm
            enabled = cfg.progress if cfg.progress is not None else (not cfg.quiet and sys.stderr.isatty())
            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       disable=not enabled, desc="train")
        say = (bar.write if bar is not None and not bar.disable else print) if show else (lambda *_: None)
        if show:
            what = f"resuming at step {self.step}" if resumed_from is not None else "starting"
            say(f"fastgan train: {what}; layers={cfg.layers} impl={_impl.current()} device={dev} "
                f"world={self.dist.world_size} data={self.data.source} ({len(self.data)} images) "
                f"batch={self.hp['batch_size']} {self.steps_per_epoch} steps/epoch, {self.total_steps} steps "
                f"-> {self.out}")

        cuda = dev.type == "cuda"
        step_fn = self._graph_step if cfg.cuda_graph else self._step
        pending: List[tuple] = []  # (step, metrics tensor, t_start, t_end or events)
        times: List[float] = []
        epoch_t0 = time.perf_counter()
        run_t0 = epoch_t0
        epoch_summaries = []
        last_rec: dict = {}

        def flush():
            if not pending:
                return
            vals = self.metrics(torch.stack([p[1] for p in pending]), [self.r1_weight(p[0] - 1) for p in pending])
            if self.dist.enabled:
                dist.all_reduce(vals)
                vals /= self.dist.world_size
            vals = vals.cpu().tolist()
            if main:
                recs = []
                for (s, _, t0, t1), v in zip(pending, vals):
                    dt = t0.elapsed_time(t1) / 1000.0 if cuda else t1 - t0
                    times.append(dt)
                    rec = {"step": s, "epoch": (s - 1) // self.steps_per_epoch + 1}
                    rec.update({k: round(x, 6) for k, x in zip(_FIELDS, v)
                                if k != "r1" or self.hp["r1_gamma"] > 0})
                    rec["step_time"] = round(dt, 6)
                    recs.append(rec)
                log.write(recs)
                last_rec.update(recs[-1])
                bar.set_postfix(loss_d=f"{last_rec['loss_d']:.3f}", loss_g=f"{last_rec['loss_g']:.3f}",
                                d_x=f"{last_rec['d_real']:.2f}", d_gz=f"{last_rec['d_fake']:.2f}", refresh=False)
                bar.update(len(recs))
            steps = [p[0] for p in pending]
            pending.clear()
            # a diverged run stops before its next checkpoint would replace the last good one with NaN weights (every
            # process sees the same averaged values, so all stop)
            for s, v in zip(steps, vals):
                if not (math.isfinite(v[0]) and math.isfinite(v[1])):
                    raise _diverged(s, f"loss_D {v[0]}, loss_G {v[1]}")

        try:
            while self.step < self.total_steps:
                real, z, eps = self._batch(self.step)
                # the step's time includes the EMA update, which fastgan's Adam makes inside the step and the
                # stock layers after it
                if cuda:
                    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    t0.record()
                else:
                    t0 = time.perf_counter()
                m = step_fn(real, z, eps)
                self.step += 1
                if self.ema_after_step:
                    self._update_ema()
                if cuda:
                    t1.record()
                else:
                    t1 = time.perf_counter()
                pending.append((self.step, m, t0, t1))
                epoch_end = self.step % self.steps_per_epoch == 0
                last = self.step == self.total_steps
                ck = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                if len(pending) >= self.log_every or epoch_end or last or ck:
                    flush()
                if epoch_end or last or ck:  # the checkpoint first: a failed picture must not cost it
                    log and log.flush()
                    self.save_checkpoint()
                self._pictures()
                if main and (epoch_end or last):
                    epoch = (self.step - 1) // self.steps_per_epoch + 1
                    now = time.perf_counter()
                    n_ep = (self.step - 1) % self.steps_per_epoch + 1
                    ep = {"epoch": epoch, "step": self.step, "seconds": now - epoch_t0,
                          "step_time_mean": float(np.mean(times[-n_ep:])) if times else float("nan"),
                          **{k: last_rec[k] for k in ("loss_d", "loss_g", "d_real", "d_fake")}}
                    epoch_summaries.append(ep)
                    say(f"epoch {epoch} step {self.step}/{self.total_steps}: loss_D {ep['loss_d']:.3f} "
                        f"loss_G {ep['loss_g']:.3f} D(x) {ep['d_real']:.2f} D(G(z)) {ep['d_fake']:.2f}  "
                        f"{ep['seconds']:.1f} s ({ep['step_time_mean'] * 1000:.0f} ms/step)")
                    epoch_t0 = now
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        elapsed = time.perf_counter() - run_t0
        summary = {"steps": self.step, "elapsed": elapsed,
                   "step_time_mean": float(np.mean(times)) if times else float("nan"),
                   "step_time_median": float(np.median(times)) if times else float("nan"),
                   "epochs": epoch_summaries, "checkpoint": str(self.out / CHECKPOINT_NAME),
                   "world_size": self.dist.world_size, "rank": self.dist.rank}
        if show:
            say(f"done: {self.step} steps, {elapsed:.1f} s this run; median step "
                f"{summary['step_time_median'] * 1000:.1f} ms. Checkpoint {self.out / CHECKPOINT_NAME}, "
                f"samples {self.out / 'samples'}, "
                f"losses {self.out / LOSSES_NAME}, metrics {self.out / METRICS_NAME}. "
                f"Score it: fastgan eval --checkpoint {self.out / CHECKPOINT_NAME}")
        return summary


def train(cfg: TrainConfig) -> dict:
    """Build a :class:`Trainer` from ``cfg`` and run it; returns a summary dict."""
    return Trainer(cfg).run()
