"""Tests of ``fastgan train`` / ``sample`` / ``eval`` (CPU; CUDA-only tests skip without a GPU).

Kept short for 2-core CI: tiny data sets (IDX files written from the embedded subset), a few steps per run.
"""
from __future__ import annotations

import copy
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import fastgan
from fastgan.cli import main as cli_main
from fastgan.train import checkpoint as ckpt
from fastgan.train.data import DataError, load_embedded, load_idx_dir, read_idx
from fastgan.train.models import Discriminator, Generator, build_models, make_loss
from fastgan.train.trainer import TrainConfig, TrainError, Trainer, train

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
pytestmark = pytest.mark.filterwarnings("ignore:fastgan. using the pure-PyTorch reference path")


# ----------------------------------------------------------------------------------------------- helpers
def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = struct.pack(">I", (0x08 << 8) | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist(root: Path, n: int, gz: bool = False, sub: str = "") -> Path:
    d = load_embedded()
    write_idx(root / sub / "train-images-idx3-ubyte", d.images[:n].numpy(), gz)
    write_idx(root / sub / "train-labels-idx1-ubyte", d.labels[:n].numpy().astype(np.uint8), gz)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """96 MNIST images as IDX files: 3 steps per epoch at batch 32."""
    return str(write_mnist(tmp_path_factory.mktemp("tiny"), 96))


def run_cli(*argv) -> int:
    return cli_main([str(a) for a in argv])


def records(out) -> list:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


LOSS_KEYS = ("loss_d", "loss_g", "d_real", "d_fake")


# ----------------------------------------------------------------------------------------------- models
def test_models_shapes_names_and_identical_init():
    Gf, Df = build_models("fused", seed=3)
    Gs, Ds = build_models("stock", seed=3)
    assert isinstance(Gf.fc1, fastgan.nn.FusedLinear) and isinstance(Df.conv1, fastgan.nn.FusedConv2d)
    assert type(Gs.fc1) is torch.nn.Linear and type(Ds.conv1) is torch.nn.Conv2d
    for a, b in ((Gf, Gs), (Df, Ds)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert list(Df.state_dict()) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
                                     "conv3.bias", "fc.weight", "fc.bias"]
    assert Df.fc.in_features == 2048 and Gf.fc3.out_features == 784
    z = torch.randn(5, 100)
    with fastgan.use_impl("torch"):
        x = Gf(z)
        assert x.shape == (5, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
        torch.testing.assert_close(x, Gs(z))
        torch.testing.assert_close(Df(x), Ds(x))
        assert Df(x).shape == (5,)
    # a different seed gives different weights
    assert not torch.equal(build_models("fused", seed=4)[0].fc1.weight, Gf.fc1.weight)


@pytest.mark.parametrize("layers", ["fused", "stock"])
def test_channels_last_discriminator_matches_nchw(layers):
    """On the CPU, D runs channels_last and its head reads the last feature map in memory order with a permuted
    weight (no NCHW copy): same logits and gradients (input and every parameter, in their own layouts) as NCHW."""
    _, Dn = build_models(layers, seed=5, channels_last=False)
    _, Dc = build_models(layers, seed=5, channels_last=True)
    assert Dc.conv3.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(6, 1, 28, 28)
    xn, xc = x.clone().requires_grad_(), x.to(memory_format=torch.channels_last).requires_grad_()
    yn, yc = Dn(xn), Dc(xc)
    torch.testing.assert_close(yc, yn, rtol=1e-5, atol=1e-6)
    gy = torch.randn(6)
    gn = torch.autograd.grad(yn, [xn, *Dn.parameters()], gy)
    gc = torch.autograd.grad(yc, [xc, *Dc.parameters()], gy)
    for name, a, b in zip(["x"] + [n for n, _ in Dn.named_parameters()], gc, gn):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("layers", ["fused", "stock"])
def test_channels_last_head_respects_hooks_on_fc(layers):
    """The channels_last head calls the head's function directly only for a plain layer: with spectral_norm (a
    forward pre-hook that recomputes the weight) or a forward hook on D.fc, the module itself runs, as in NCHW."""
    _, Dn = build_models(layers, seed=6, channels_last=False)
    _, Dc = build_models(layers, seed=6, channels_last=True)
    for D in (Dn, Dc):
        torch.nn.utils.spectral_norm(D.fc)
    x = torch.rand(4, 1, 28, 28)
    yn, yc = Dn(x), Dc(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(yc, yn, rtol=1e-5, atol=1e-6)
    yn.sum().backward()
    yc.sum().backward()
    assert Dc.fc.weight_orig.grad is not None
    torch.testing.assert_close(Dc.fc.weight_orig.grad, Dn.fc.weight_orig.grad, rtol=1e-5, atol=1e-6)
    seen = []
    _, D = build_models(layers, seed=6, channels_last=True)
    D.fc.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    D(x.to(memory_format=torch.channels_last))
    assert seen == [(4, 2048)]


def test_losses_match_stock():
    logits = torch.randn(7)
    for label in (0.0, 1.0, 0.9):
        want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))
        with fastgan.use_impl("torch"):
            torch.testing.assert_close(make_loss("fused")(logits, label), want)
        torch.testing.assert_close(make_loss("stock")(logits, label), want)


def test_bad_layer_kind():
    with pytest.raises(ValueError, match="layers"):
        Generator("cudnn")
    with pytest.raises(ValueError, match="layers"):
        Discriminator("x")


# ----------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("layers", ["fused", "stock"])
def test_few_steps_writes_all_outputs(tmp_path, tiny, layers, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--epochs", 2, "--max-steps", 4,
                   "--layers", layers) == 0
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [r["epoch"] for r in recs] == [1, 1, 1, 2]
    for r in recs:
        assert all(np.isfinite(r[k]) for k in LOSS_KEYS) and r["step_time"] > 0
        assert 0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1
    assert (out / "samples" / "epoch_0001.png").stat().st_size > 0
    assert (out / "samples" / "step_0000004.png").stat().st_size > 0
    assert (out / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 4 and state["config"]["layers"] == layers
    assert set(state["G"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    stdout = capsys.readouterr().out
    assert "epoch 1 step 3/4" in stdout and "done: 4 steps" in stdout


def test_quiet_prints_nothing_and_no_bar_without_tty(tmp_path, tiny, capsys):
    assert run_cli("train", "--out", tmp_path, "--data", tiny, "--batch-size", 32, "--max-steps", 2, "--quiet") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "step/s" not in captured.err and "it/s" not in captured.err


def test_fused_and_stock_agree_step_for_step(tmp_path, tiny):
    runs = {}
    for layers in ("fused", "stock"):
        # The seed network and beta1 0.5, not the defaults (wide G, beta1 0): without momentum Adam's first updates
        # are +-lr per element whatever the gradient's size, so a gradient at rounding level near 0 moves a weight
        # by a whole step in one run and not in the other; with the wider G's longer sums that happens within six
        # steps (loss_g 1.3935 vs 1.3931 at step 4, measured 2026-12-05). The layers are what is compared here.
        cfg = TrainConfig(out=str(tmp_path / layers), data=tiny, batch_size=32, max_steps=6, layers=layers,
                          impl="torch", quiet=True, seed=7, beta1=0.5, arch="seed")
        t = Trainer(cfg)
        t.run()
        runs[layers] = (records(cfg.out), t.G.state_dict(), t.D.state_dict())
    (rf, gf, df), (rs, gs, ds) = runs["fused"], runs["stock"]
    for a, b in zip(rf, rs):
        for k in LOSS_KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
    # Weights: Adam normalises each update to ~lr (2e-4), so an element whose gradient is ~0 can move by a
    # visible fraction of lr on rounding differences alone; allow a quarter of one step.
    for sa, sb in ((gf, gs), (df, ds)):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=5e-5)


def test_checkpoints_load_in_either_layer_kind(tmp_path, tiny):
    assert run_cli("train", "--out", tmp_path, "--data", tiny, "--batch-size", 32, "--max-steps", 2,
                   "--layers", "stock", "-q") == 0
    z = torch.randn(4, 100)
    with fastgan.use_impl("torch"):
        Gs, Ds, _ = ckpt.load_models(tmp_path / "checkpoint.pt", layers="stock")
        Gf, Df, _ = ckpt.load_models(tmp_path / "checkpoint.pt", layers="fused")
        assert isinstance(Gf.fc1, fastgan.nn.FusedLinear)
        torch.testing.assert_close(Gf(z), Gs(z))
        torch.testing.assert_close(Df(Gf(z)), Ds(Gs(z)))
    # and a run resumes across layer kinds
    assert run_cli("train", "--out", tmp_path, "--resume", "--max-steps", 3, "--layers", "fused", "-q") == 0
    assert ckpt.load(tmp_path / "checkpoint.pt")["step"] == 3


def test_seed_repeatable(tmp_path, tiny):
    for name in ("a", "b"):
        assert run_cli("train", "--out", tmp_path / name, "--data", tiny, "--batch-size", 32, "--max-steps", 3,
                       "--seed", 5, "-q") == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "step_time"} for r in rs]  # noqa: E731
    assert strip(records(tmp_path / "a")) == strip(records(tmp_path / "b"))


def test_resume_equals_uninterrupted(tmp_path, tiny):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ("--data", tiny, "--batch-size", 32, "--epochs", 3, "--seed", 11, "--checkpoint-every", 2, "-q")
    assert run_cli("train", "--out", full, *common) == 0  # 9 steps, across two epoch boundaries
    assert run_cli("train", "--out", part, *common, "--max-steps", 4) == 0  # stops mid-epoch 2
    assert ckpt.load(part / "checkpoint.pt")["step"] == 4
    assert run_cli("train", "--out", part, "--resume", "--max-steps", 0, "-q") == 0  # settings from the checkpoint
    a, b = records(full), records(part)
    assert [r["step"] for r in b] == list(range(1, 10))
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in LOSS_KEYS} == {k: rb[k] for k in LOSS_KEYS}, ra["step"]
    sa, sb = ckpt.load(full / "checkpoint.pt"), ckpt.load(part / "checkpoint.pt")
    for net in ("G", "D"):
        for k in sa[net]:
            assert torch.equal(sa[net][k], sb[net][k])


@pytest.mark.parametrize("layers", ["stock", "fused"])
def test_resume_keeps_this_runs_optimiser_execution_settings(tmp_path, tiny, layers):
    """A checkpoint written with other Adam settings (a CUDA run's fused=True, --cuda-graph's capturable=True):
    torch.optim's load_state_dict would take them from the file (a non-capturable state then fails a CUDA graph
    capture); the resumed optimisers keep this run's settings, their step counters where those settings keep them,
    and the resumed run computes what it does from a checkpoint with its own settings."""
    assert run_cli("train", "--out", tmp_path / "a", "--data", tiny, "--batch-size", 32, "--max-steps", 2,
                   "--layers", layers, "-q") == 0
    state = ckpt.load(tmp_path / "a" / "checkpoint.pt")
    for key in ("optG", "optD"):
        for g in state[key]["param_groups"]:
            g.update(fused=True, capturable=True, foreach=False)
    (tmp_path / "b").mkdir()
    ckpt.save(state, tmp_path / "b" / "checkpoint.pt")
    runs = {}
    for name in ("a", "b"):
        t = Trainer(TrainConfig(out=str(tmp_path / name), resume="auto", max_steps=3, quiet=True))
        for opt in (t.optG, t.optD):
            fresh = type(opt)(opt.param_groups[0]["params"])  # what this run would make (CPU: torch's defaults)
            for g in opt.param_groups:
                assert {k: g[k] for k in ("fused", "capturable", "foreach")} == \
                    {k: fresh.param_groups[0][k] for k in ("fused", "capturable", "foreach")}
            assert all(st["step"].device.type == "cpu" for st in opt.state.values())
        t.run()
        runs[name] = ckpt.load(tmp_path / name / "checkpoint.pt")
    assert runs["b"]["step"] == 3
    for net in ("G", "D"):
        for k in runs["a"][net]:
            assert torch.equal(runs["a"][net][k], runs["b"][net][k]), (net, k)


def test_resume_refuses_changed_trajectory_settings(tmp_path, tiny, capsys):
    assert run_cli("train", "--out", tmp_path, "--data", tiny, "--batch-size", 32, "--max-steps", 2, "-q") == 0
    assert run_cli("train", "--out", tmp_path, "--resume", "--batch-size", 64, "--max-steps", 3) == 1
    assert "trained with --batch-size 32" in capsys.readouterr().err
    # a second fresh run into the same directory would overwrite the checkpoint: refused
    assert run_cli("train", "--out", tmp_path, "--data", tiny, "--batch-size", 32, "--max-steps", 2, "-q") == 1
    assert "--resume" in capsys.readouterr().err
    assert run_cli("train", "--out", tmp_path, "--data", tiny, "--batch-size", 32, "--max-steps", 1, "-q",
                   "--overwrite") == 0
    # resuming at or past the end
    assert run_cli("train", "--out", tmp_path, "--resume", "--max-steps", 0, "--epochs", 1, "-q") == 0
    assert ckpt.load(tmp_path / "checkpoint.pt")["step"] == 3


def test_step_metrics_from_the_raw_vector():
    """Trainer.metrics: [loss_d, loss_g, gamma/2 * r1, logits real (b), logits fake (b)] per step -> (loss_d,
    loss_g, d_real, d_fake, r1), D's probabilities averaged per half, r1 = the term / (gamma/2) (0 without R1)."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(3, 3 + 2 * 5, generator=g)
    raw[1, 2] = 0.0  # a step without R1: its term is 0
    gammas = [4.0, 0.0, 10.0]
    m = Trainer.metrics(raw, gammas)
    assert m.shape == (3, 5)
    for i in range(3):
        r1 = raw[i, 2] / (gammas[i] / 2) if gammas[i] else torch.tensor(0.0)
        want = [raw[i, 0], raw[i, 1], torch.sigmoid(raw[i, 3:8]).mean(), torch.sigmoid(raw[i, 8:]).mean(), r1]
        torch.testing.assert_close(m[i], torch.stack(want))
    with pytest.raises(ValueError, match="gammas: expected 3 R1 weights"):
        Trainer.metrics(raw, [1.0])


def test_r1_penalty_runs_and_flows(tiny, tmp_path):
    t = Trainer(TrainConfig(out=str(tmp_path), data=tiny, batch_size=32, max_steps=2, r1_gamma=10.0, quiet=True))
    real, z, _ = t._batch(0)
    d_before = [p.detach().clone() for p in t.D.parameters()]
    m = t._step(real, z)
    assert torch.isfinite(m).all() and Trainer.metrics(m[None], [t.r1_weight(0)])[0, 4] > 0  # the penalty itself
    assert all(not torch.equal(a, p) for a, p in zip(d_before, t.D.parameters()))
    # the penalty's gradient reaches every D weight (double backward through the fused layers; biases only move
    # the piecewise-linear lrelu's kinks, so ||grad_x D|| does not depend on them)
    real = real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(t.D(real).sum(), real, create_graph=True)
    weights = [p for name, p in t.D.named_parameters() if name.endswith("weight")]
    grads = torch.autograd.grad(g.square().sum(), weights)
    assert len(grads) == 4 and all(torch.isfinite(x).all() and x.abs().sum() > 0 for x in grads)
    t.run()
    assert "r1" in records(tmp_path)[-1]


def test_lazy_r1_penalises_every_kth_step_with_weight_k(tiny, tmp_path):
    t = Trainer(TrainConfig(out=str(tmp_path), data=tiny, batch_size=32, max_steps=6, r1_gamma=2.0, r1_every=3,
                            quiet=True))
    t.run()
    r1 = [r["r1"] for r in records(tmp_path)]
    assert all(v > 0 for v in r1[0::3]) and all(v == 0 for i, v in enumerate(r1) if i % 3), r1
    # the penalty term of a lazy step is gamma * k: the same D step as gamma * k applied every step
    real, z, eps = t._batch(6)
    t.step = 6
    saved = [(m, copy.deepcopy(m.state_dict())) for m in (t.G, t.D, t.optG, t.optD)]
    t._step(real, z, eps)
    lazy = {k: v.clone() for k, v in t.D.state_dict().items()}
    for m, sd in saved:
        m.load_state_dict(sd)
    t.hp.update(r1_gamma=6.0, r1_every=1)
    t._step(real, z, eps)
    for k, v in t.D.state_dict().items():
        torch.testing.assert_close(v, lazy[k])


def test_ema_generator_is_saved_used_and_optional(tmp_path, tiny, capsys):
    out = tmp_path / "ema"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 4, "--ema-beta", 0.9,
                   "--lr", 1e-3, "-q") == 0
    state = ckpt.load(out / "checkpoint.pt")
    assert state["config"]["ema_beta"] == 0.9 and set(state["G_ema"]) == set(state["G"])
    # with the ramp-up, beta_t = min(0.9, (1 + t) / (10 + t)) = (1 + t) / (10 + t) for t = 1..4: replay it
    t = Trainer(TrainConfig(out=str(tmp_path / "replay"), data=tiny, batch_size=32, max_steps=4, ema_beta=0.9,
                            lr=1e-3, quiet=True))
    G0, _ = build_models("fused", seed=0, g_init=t.hp["g_init"], arch=t.hp["arch"])
    ema = {k: v.clone() for k, v in G0.state_dict().items()}
    for step in range(4):
        t._step(*t._batch(step))
        t.step += 1
        beta = (1 + t.step) / (10 + t.step)
        ema = {k: beta * ema[k] + (1 - beta) * v for k, v in t.G.state_dict().items()}
    for k in ema:
        torch.testing.assert_close(state["G_ema"][k], ema[k])
        assert not torch.equal(state["G_ema"][k], state["G"][k])
    # sample/eval use the EMA generator unless --no-ema; load_models likewise
    G_ema, _, _ = ckpt.load_models(out / "checkpoint.pt")
    G_raw, _, _ = ckpt.load_models(out / "checkpoint.pt", ema=False)
    assert torch.equal(G_ema.fc1.weight, state["G_ema"]["fc1.weight"])
    assert torch.equal(G_raw.fc1.weight, state["G"]["fc1.weight"])
    fids = {}
    for extra in ([], ["--no-ema"]):
        assert run_cli("eval", "--checkpoint", out / "checkpoint.pt", "--n", 80, "--json", "-", *extra) == 0
        res = json.loads(capsys.readouterr().out)
        fids[res["generator"]] = res["fid"]
    assert set(fids) == {"ema", "raw"} and fids["ema"] != fids["raw"]
    # FID of 64 features from fewer than 65 samples: a singular covariance, refused before any work
    assert run_cli("eval", "--checkpoint", out / "checkpoint.pt", "--n", 64) == 1
    assert "--n: expected at least 65" in capsys.readouterr().err
    from fastgan.train.metrics import evaluate_images
    with pytest.raises(ValueError, match="40 real images: FID needs at least 65"):
        evaluate_images(torch.rand(80, 1, 28, 28), torch.rand(40, 1, 28, 28))
    # --ema-beta 0: no EMA generator in the checkpoint
    assert run_cli("train", "--out", tmp_path / "raw", "--data", tiny, "--batch-size", 32, "--max-steps", 1,
                   "--ema-beta", 0, "-q") == 0
    assert "G_ema" not in ckpt.load(tmp_path / "raw" / "checkpoint.pt")


def test_mode_seeking_term_and_instance_noise(tmp_path, tiny):
    z = torch.randn(8, 100)
    same = torch.rand(1, 1, 28, 28).expand(8, 1, 28, 28)
    varied = torch.rand(8, 1, 28, 28)
    assert Trainer._mode_seeking(same, z) > 1e4 > 100 > Trainer._mode_seeking(varied, z) > 0
    t = Trainer(TrainConfig(out=str(tmp_path), data=tiny, batch_size=32, max_steps=3, ms_lambda=0.1, inst_noise=0.1,
                            quiet=True))
    real, z, eps = t._batch(0)
    assert eps.shape == (64, 1, 28, 28) and 0.09 < float(eps.std()) < 0.11
    t.run()
    assert all(np.isfinite(r[k]) for r in records(tmp_path) for k in LOSS_KEYS)
    cfg = ckpt.load(tmp_path / "checkpoint.pt")["config"]
    assert (cfg["ms_lambda"], cfg["inst_noise"]) == (0.1, 0.1)
    # off by default: no noise drawn, so the data/noise stream of older runs is unchanged
    t = Trainer(TrainConfig(out=str(tmp_path / "plain"), data=tiny, batch_size=32, max_steps=1, quiet=True))
    assert t._batch(0)[2] is None


def test_arch_widens_g_only_and_is_recorded(tmp_path, tiny):
    """--arch: "wide" (the default) doubles G's hidden layers, "seed" is the classic 128/256; D is the same. The
    checkpoint records it (sample/eval rebuild that G), a resume with another --arch is refused, and a checkpoint
    from before --arch existed is the seed network."""
    shapes = {}
    for arch in ("wide", "seed"):
        out = tmp_path / arch
        assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 2, "--arch", arch,
                       "-q") == 0
        G, D, state = ckpt.load_models(out / "checkpoint.pt")
        assert state["config"]["arch"] == arch
        shapes[arch] = ([tuple(p.shape) for p in G.parameters()], [tuple(p.shape) for p in D.parameters()])
    assert [s[0] for s in shapes["wide"][0][::2]] == [256, 512, 784]
    assert [s[0] for s in shapes["seed"][0][::2]] == [128, 256, 784]
    assert shapes["wide"][1] == shapes["seed"][1]
    with pytest.raises(TrainError, match="trained with --arch 'seed'"):
        Trainer(TrainConfig(out=str(tmp_path / "seed"), resume="auto", max_steps=3, arch="wide", quiet=True))
    old = ckpt.load(tmp_path / "seed" / "checkpoint.pt")
    del old["config"]["arch"]
    ckpt.save({k: v for k, v in old.items() if k not in ("format", "version")}, tmp_path / "seed" / "checkpoint.pt")
    assert Trainer(TrainConfig(out=str(tmp_path / "seed"), resume="auto", max_steps=3, quiet=True)).hp["arch"] == "seed"
    G, _, _ = ckpt.load_models(tmp_path / "seed" / "checkpoint.pt")
    assert G.fc1.weight.shape[0] == 128


def test_resume_checkpoint_from_before_the_new_settings(tmp_path, tiny):
    """A checkpoint written before --lr-d/--r1-every/--ema-beta existed resumes with what it was trained with."""
    full, part = tmp_path / "full", tmp_path / "part"
    legacy = ("--data", tiny, "--batch-size", 32, "--max-steps", 5, "--seed", 2, "--lr", 3e-4, "--r1-gamma", 0.5,
              "--r1-every", 1, "--ema-beta", 0, "-q")
    assert run_cli("train", "--out", full, *legacy) == 0
    assert run_cli("train", "--out", part, *legacy[:-1], "--max-steps", 3, "-q") == 0
    old = ckpt.load(part / "checkpoint.pt")
    for key in ("lr_d", "r1_every", "ema_beta"):
        del old["config"][key]
    ckpt.save({k: v for k, v in old.items() if k not in ("format", "version")}, part / "checkpoint.pt")
    # switching the EMA on at resume is allowed (the old checkpoint records no --ema-beta): it starts from G
    t = Trainer(TrainConfig(out=str(part), resume="auto", max_steps=5, ema_beta=0.99, quiet=True))
    assert torch.equal(t.G_ema.fc1.weight, t.G.fc1.weight) and not t.G_ema.fc1.weight.requires_grad
    t = Trainer(TrainConfig(out=str(part), resume="auto", max_steps=5, quiet=True))
    assert (t.hp["lr_d"], t.hp["r1_every"], t.hp["ema_beta"]) == (3e-4, 1, 0.0) and t.G_ema is None
    t.run()
    a, b = ckpt.load(full / "checkpoint.pt"), ckpt.load(part / "checkpoint.pt")
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k])
    assert b["config"]["lr_d"] == 3e-4 and "G_ema" not in b
    # a changed setting that the checkpoint records is refused
    with pytest.raises(TrainError, match="trained with --lr-d 0.0003"):
        Trainer(TrainConfig(out=str(part), resume="auto", max_steps=6, lr_d=1e-3, quiet=True))


# ----------------------------------------------------------------------------------------------- checkpoints
def _state(step=1):
    G, D = build_models("fused", seed=0)
    return {"G": G.state_dict(), "D": D.state_dict(), "optG": {}, "optD": {}, "step": step, "config": {},
            "rng": {}, "fixed_noise": torch.zeros(2, 100)}


def test_checkpoint_write_failing_midway_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save(_state(1), path)
    real_save = torch.save

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")  # some bytes reach the temporary file, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(_state(2), path)

    def torch_writer_fails(obj, f, *a, **k):  # what torch's zip writer raises on a full disk
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt.torch, "save", torch_writer_fails)
    with pytest.raises(OSError, match="writing .*checkpoint.pt failed"):  # the CLI's '--out: cannot write there'
        ckpt.save(_state(2), path)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_checkpoint_process_killed_midway_keeps_the_old_one(tmp_path):
    """A real SIGKILL after the new file is written but before the rename."""
    path = tmp_path / "checkpoint.pt"
    ckpt.save(_state(1), path)
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from fastgan.train import checkpoint as ckpt
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save({{"G": {{"w": torch.ones(1000)}}, "step": 2}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert ckpt.load(path)["step"] == 1
    leftovers = [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert leftovers and leftovers[0].name.endswith(".tmp")  # the dead writer's temporary file
    ckpt.save(_state(3), path)  # the next save cleans it up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert ckpt.load(path)["step"] == 3


def test_corrupt_or_incompatible_checkpoints(tmp_path, capsys):
    good = tmp_path / "good.pt"
    ckpt.save(_state(5), good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "not a fastgan checkpoint, or a damaged one"),
        "garbage.pt": (os.urandom(2000), "not a fastgan checkpoint, or a damaged one"),
        "empty.pt": (b"", "not a fastgan checkpoint, or a damaged one"),
        # a pickle with an arbitrary object: torch's text says weights_only=False "will likely succeed"
        "pickled.pt": (__import__("pickle").dumps(__import__("collections").OrderedDict), "not a fastgan checkpoint"),
    }
    for name, (blob, msg) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ckpt.CheckpointError, match=msg) as e:
            ckpt.load(tmp_path / name)
        assert name in str(e.value)
        assert "weights_only" not in str(e.value)  # never the advice to load unsafely
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a fastgan GAN checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    torch.save({"format": ckpt.FORMAT, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ckpt.CheckpointError, match="version 99"):
        ckpt.load(tmp_path / "future.pt")
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "G": {}}, tmp_path / "partial.pt")
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load(tmp_path / "partial.pt")
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load(tmp_path / "nope.pt")
    for key, value in (("config", [1]), ("step", "5"), ("step", -1), ("fixed_noise", torch.zeros(3))):
        ckpt.save({**_state(5), key: value}, tmp_path / "kinds.pt")  # hand-made: each value of the wrong kind
        with pytest.raises(ckpt.CheckpointError, match=f"wrong kind of value for \\['{key}'\\]"):
            ckpt.load(tmp_path / "kinds.pt")
    bad = _state()
    bad["G"]["fc1.weight"] = torch.zeros(64, 100)
    ckpt.save(bad, tmp_path / "shape.pt")
    with pytest.raises(ckpt.CheckpointError, match="generator weights do not fit.*fc1.weight"):
        ckpt.load_models(tmp_path / "shape.pt")
    # through the CLI: a clear one-line error, exit code 1
    for cmd in (["train", "--out", tmp_path / "r", "--resume", tmp_path / "truncated.pt"],
                ["sample", "--checkpoint", tmp_path / "garbage.pt", "--out", tmp_path / "s.png"],
                ["eval", "--checkpoint", tmp_path / "shape.pt"]):
        assert run_cli(*cmd) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"fastgan {cmd[0]}: error: ") and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- data
def test_embedded_data():
    d = load_embedded()
    assert d.images.shape == (5000, 28, 28) and d.images.dtype == torch.uint8
    assert torch.bincount(d.labels).tolist() == [500] * 10


@pytest.mark.parametrize("gz,sub", [(False, ""), (True, ""), (False, "raw"), (True, "MNIST/raw"),
                                    (False, "FashionMNIST/raw")])
def test_idx_layouts(tmp_path, gz, sub):
    write_mnist(tmp_path, 10, gz=gz, sub=sub)
    d = load_idx_dir(tmp_path)
    assert torch.equal(d.images, load_embedded().images[:10])
    assert d.labels.tolist() == load_embedded().labels[:10].tolist()
    assert d.source.endswith("train-images-idx3-ubyte" + (".gz" if gz else ""))


def test_idx_errors(tmp_path):
    imgs = load_embedded().images[:4].numpy()
    with pytest.raises(DataError, match="no such directory"):
        load_idx_dir(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no MNIST/Fashion-MNIST image file found.*MNIST/raw/train-images-idx3"):
        load_idx_dir(tmp_path)

    p = write_idx(tmp_path / "a" / "train-images-idx3-ubyte", imgs)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated: the header promises 4 x 28 x 28 = "
                                        r"3136 bytes of data, the file has 3036"):
        load_idx_dir(tmp_path / "a")

    p = write_idx(tmp_path / "b" / "train-images-idx3-ubyte", imgs, gz=True)
    p.write_bytes(p.read_bytes()[:-30])  # a cut gzip stream
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a valid gzip file or truncated"):
        load_idx_dir(tmp_path / "b")

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=r"c/train-images-idx3-ubyte.gz: not a valid gzip file"):
        load_idx_dir(tmp_path / "c")

    p = write_idx(tmp_path / "d" / "train-images-idx3-ubyte", imgs)
    p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:])  # a labels magic on an image file
    with pytest.raises(DataError, match=r"wrong magic number 0x00000801: not an IDX image file"):
        load_idx_dir(tmp_path / "d")

    write_idx(tmp_path / "e" / "train-images-idx3-ubyte", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(DataError, match="expected 28 x 28 images, got 32 x 32"):
        load_idx_dir(tmp_path / "e")

    write_idx(tmp_path / "f" / "train-images-idx3-ubyte", imgs)
    write_idx(tmp_path / "f" / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        load_idx_dir(tmp_path / "f")

    (tmp_path / "h").mkdir()  # dims whose product is 2^64: no wrapped byte count
    (tmp_path / "h" / "train-images-idx3-ubyte").write_bytes(struct.pack(">I3I", 0x803, 2 ** 22, 2 ** 21, 2 ** 21))
    with pytest.raises(DataError, match=r"2097152 = 18446744073709551616 bytes of data, the file has 0"):
        read_idx(tmp_path / "h" / "train-images-idx3-ubyte", 3)

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(tmp_path / "g" / "train-images-idx3-ubyte", 3)


def test_data_error_through_cli(tmp_path, capsys):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:50])
    assert run_cli("train", "--out", tmp_path / "o", "--data", tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastgan train: error: ") and str(p) in err and "truncated" in err


# ----------------------------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("argv,msg", [
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--batch-size", "abc"], "--batch-size: expected an integer, got 'abc'"),
    (["--layers", "cudnn"], "--layers: invalid choice: 'cudnn'"),
    (["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    (["--r1-gamma", "-1"], "--r1-gamma: expected a finite number >= 0, got -1"),
    (["--lr", "0"], "--lr: expected a number > 0, got 0"),
    (["--lr-d", "-1"], "--lr-d: expected a finite number >= 0, got -1"),
    (["--r1-every", "0"], "--r1-every: expected an integer >= 1, got 0"),
    (["--inst-noise", "-0.1"], "--inst-noise: expected a finite number >= 0, got -0.1"),
    (["--ms-lambda", "nan"], "--ms-lambda: expected a finite number >= 0, got nan"),
    (["--threads", "65536"], "--threads: expected an integer in [0, 1024], got 65536"),  # (libgomp crashed)
])
def test_bad_arguments(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        run_cli("train", "--out", tmp_path, *argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--batch-size", "100000"], "--batch-size 100000 is larger than the data set (5000 images)"),
    (["--beta1", "1.5"], "--beta1: expected a number in [0, 1)"),
    (["--ema-beta", "1"], "--ema-beta: expected a number in [0, 1)"),
    (["--data", "/nonexistent/dir"], "/nonexistent/dir: no such directory"),
    (["--resume"], "checkpoint.pt: checkpoint not found"),
    (["--impl", "native"] if "native" not in fastgan.available_impls() else ["--cuda-graph", "--device", "cpu"],
     "--impl: implementation 'native' is not available" if "native" not in fastgan.available_impls()
     else "--cuda-graph needs a CUDA device"),
] + ([] if CUDA else [(["--device", "cuda"], "--device cuda: CUDA is not available")]))
def test_bad_settings(tmp_path, capsys, argv, msg):
    assert run_cli("train", "--out", tmp_path, *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastgan train: error: ") and msg in err, err


# ----------------------------------------------------------------------------------------------- quality
STEPS = 390  # 10 epochs of the embedded data


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """10 epochs (390 steps) of the default recipe on the embedded data, seed 0, scored on 1000 samples."""
    from fastgan.train.metrics import evaluate_generator

    from fastgan.train.trainer import DEFAULTS

    real = load_embedded().images
    G0, _ = build_models("fused", seed=0, g_init=DEFAULTS["g_init"], arch=DEFAULTS["arch"])  # the default's start
    before = evaluate_generator(G0, real, n=1000, seed=1)
    out = tmp_path_factory.mktemp("short") / "run"
    assert run_cli("train", "--out", out, "--max-steps", STEPS, "--seed", 0, "-q") == 0
    G, _, _ = ckpt.load_models(out / "checkpoint.pt")
    after = evaluate_generator(G, real, n=1000, seed=1)
    print(f"untrained: FID {before['fid']:.1f}; after {STEPS} steps: FID {after['fid']:.1f}, classifier score "
          f"{after['classifier_score']:.2f}, {after['classes_covered']}/10 digits, confident "
          f"{after['confident_share']:.3f}, shares {after['class_share']}")
    return out, before, after


def test_short_training_improves_fid_and_sample_eval_cli(tmp_path, capsys, short_run):
    """FID (classifier features) clearly below the untrained generator's after 10 epochs.

    Measured on CPU (seed 0, 2026-12-05): 3320 untrained (He init of G) -> 653 after 390 steps (8 digits); real vs
    real is about 4-8 on this scale. The bar here is only "clearly learned something" (the next test is stricter).
    """
    from fastgan.train.metrics import load_classifier

    clf, meta = load_classifier()
    assert meta["heldout_accuracy"] > 0.97
    assert (ROOT / "fastgan" / "data" / "mnist_classifier.pt").stat().st_size < 1_000_000
    out, before, after = short_run
    assert after["fid"] < 0.8 * before["fid"]
    assert 1.0 <= after["classifier_score"] <= 10.0 and sum(after["class_share"]) == pytest.approx(1, abs=1e-3)

    assert run_cli("sample", "--checkpoint", out / "checkpoint.pt", "--n", 16, "--out", tmp_path / "g.png") == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert run_cli("eval", "--checkpoint", out / "checkpoint.pt", "--n", 1000, "--seed", 1,
                   "--json", tmp_path / "e.json") == 0
    text = capsys.readouterr().out
    assert "FID" in text and "coverage" in text and "held-out accuracy" in text
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["fid"] == pytest.approx(after["fid"], rel=1e-4) and res["step"] == STEPS


def test_short_training_draws_digits_not_blobs(short_run):
    """The bar-style check of the default recipe, shortened to 390 steps (ten epochs; the default is 100): most
    digits present, none dominating, and far from the untrained generator. Measured (CPU, 1 thread, seed 0,
    2026-12-05, Adam beta1 0): FID 653 (untrained 3320), 8/10 digits, largest share 22%, 42% confident (beta1 0.5,
    2026-12-04: FID 1133, 28%). The defaults before 2026-12-04 (lr 2e-4) gave FID 2458 and 3 digits here -- blobs --
    and fail this. The full bar (README, "What training writes") is the default run."""
    _, before, after = short_run
    assert after["classes_covered"] >= 8, after["class_share"]
    assert after["fid"] < 0.4 * before["fid"], (after["fid"], before["fid"])
    assert max(after["class_share"]) < 0.4, after["class_share"]
    assert after["confident_share"] >= 0.15, after["confident_share"]


def test_import_stays_light():
    code = ("import sys, fastgan, fastgan.nn; import fastgan.train.trainer, fastgan.train.cli; "
            "bad = [m for m in ('matplotlib', 'torchmetrics') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------------------------- CUDA
@needs_cuda
def test_cuda_step_has_no_host_sync(tmp_path, tiny):
    t = Trainer(TrainConfig(out=str(tmp_path), data=tiny, batch_size=32, max_steps=4, device="cuda", quiet=True,
                            r1_gamma=1.0))
    t._step(*t._batch(0))  # first call: lazy init, cudnn autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in range(1, 3):
            t._step(*t._batch(s))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert t.images.device.type == "cuda"


@needs_cuda
@pytest.mark.parametrize("impl", ["native", "torch"])
def test_cuda_graph_matches_eager(tmp_path, tiny, impl):
    """--cuda-graph trains what eager trains, lazy R1 schedule included: one graph per kind of step (13 steps: both
    kinds warmed up, captured and replayed); the EMA generator, updated by G's optimiser (inside fastgan's Adam
    launch natively, after torch's fused step with impl torch; inside the graphs either way, the ramp computed from
    the device's step counter), ends the same. cuDNN deterministic (impl torch: its convolutions), which also keeps
    the trainer from timing algorithms (cudnn.benchmark) run by run: Adam's first steps move a weight by about lr
    whatever its gradient's size, so a near-zero gradient rounded to the other sign would move it by 2 lr (4e-3)."""
    torch.backends.cudnn.deterministic = True  # (the autouse fixture restores it)
    outs, emas = {}, {}
    for graph in (False, True):
        cfg = TrainConfig(out=str(tmp_path / str(graph)), data=tiny, batch_size=32, max_steps=13, device="cuda",
                          cuda_graph=graph, quiet=True, log_every=1, impl=impl)
        train(cfg)
        outs[graph] = records(cfg.out)
        emas[graph] = ckpt.load(Path(cfg.out) / "checkpoint.pt")["G_ema"]
    for k in emas[False]:
        torch.testing.assert_close(emas[True][k], emas[False][k], rtol=1e-3, atol=1e-4)
    assert len(outs[True]) == len(outs[False]) == 13
    for a, b in zip(outs[False], outs[True]):
        assert (a["r1"] > 0) == (b["r1"] > 0) == ((a["step"] - 1) % 4 == 0), a["step"]
        for k in (*LOSS_KEYS, "r1"):
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), (a["step"], k)


@needs_cuda
@pytest.mark.parametrize("layers", ["fused", "stock"])
def test_cuda_graph_resumes_an_eager_checkpoint(tmp_path, tiny, layers):
    """A run checkpointed without --cuda-graph (its Adam not capturable) resumes with it: the optimisers take this
    run's settings, not the checkpoint's (torch's Adam refuses capture otherwise), and train on through both
    graphs (R1 steps 4 and 8)."""
    common = dict(out=str(tmp_path), data=tiny, batch_size=32, device="cuda", layers=layers, quiet=True)
    train(TrainConfig(max_steps=3, **common))
    summary = train(TrainConfig(max_steps=13, cuda_graph=True, resume="auto", **common))
    assert ckpt.load(tmp_path / "checkpoint.pt")["step"] == 13, summary
    assert all(math.isfinite(r["loss_d"]) for r in records(tmp_path))


def test_r1_schedule_and_real_only_pass(tmp_path, tiny):
    """The lazy R1 schedule (every 4th step from step 0, weighted 4 gamma) is one function that the eager step and
    the CUDA graphs both follow; on an R1 step D sees the real images in a pass of their own, and the penalty equals
    the one computed through the joint pass over cat(real, fake) (same D, same images)."""
    from fastgan.train.models import r1_penalty
    t = Trainer(TrainConfig(out=str(tmp_path / "r"), data=tiny, batch_size=32, max_steps=1, device="cpu",
                            quiet=True, r1_gamma=1.0))
    assert [t.r1_weight(s) for s in range(6)] == [4.0, 0.0, 0.0, 0.0, 4.0, 0.0]
    real, z, _ = t._batch(0)
    with torch.no_grad():
        fake = t.G(z)
    x = real.detach().clone().requires_grad_(True)
    own = r1_penalty(t.D(x), x)
    xj = real.detach().clone().requires_grad_(True)
    joint = r1_penalty(t.D(torch.cat([xj, fake]))[: real.shape[0]], xj)
    torch.testing.assert_close(own, joint, rtol=1e-5, atol=1e-7)
    out = Trainer.metrics(t._step(real, z)[None], [t.r1_weight(0)])[0]  # step 0: an R1 step
    assert out[4].item() == pytest.approx(own.item(), rel=1e-5)


@pytest.mark.parametrize("layers,impl", [("fused", "native"), ("fused", "emu"), ("stock", "native")])
def test_d_loss_r1_one_pass_equals_two_passes(layers, impl):
    """D's R1 loss over one pass of cat(real, fake) (CUDA's choice) equals the one with the real images in a pass
    of their own (the CPU's): loss, penalty, logits and every parameter gradient."""
    from fastgan.train.models import d_loss_r1
    if impl not in fastgan.available_impls():
        pytest.skip(f"impl {impl} unavailable")
    G, D = build_models(layers, seed=0, device="cpu")
    D = D.to(memory_format=torch.contiguous_format)
    loss = make_loss(layers)
    torch.manual_seed(1)
    real, fake = torch.rand(8, 1, 28, 28), G(torch.randn(8, 100))
    out = {}
    with fastgan.use_impl(impl):
        for one in (False, True):
            D.zero_grad(set_to_none=True)
            loss_d, r1, logits = d_loss_r1(D, loss, real, fake, gamma=4.0, one_pass=one)
            loss_d.backward()
            out[one] = [loss_d.detach(), r1.detach(), logits.detach(), *(p.grad for p in D.parameters())]
    assert out[False][1] > 0
    for i, (a, b) in enumerate(zip(out[False], out[True])):
        torch.testing.assert_close(b, a, rtol=2e-5, atol=2e-6, msg=lambda m: f"item {i}: {m}")


# ------------------------------------------------------------------ command-line behaviour (issue: legible digits)
def test_cli_parses_arguments_before_importing_torch():
    """An argument error (or --help) answers at once: the parser is built without importing torch."""
    code = ("import sys\nfrom fastgan.cli import build_parser\nbuild_parser()\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_of_a_finished_run_says_so(tmp_path, tiny, capsys):
    out = tmp_path / "done"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--epochs", 1, "--device", "cpu",
                   "--quiet") == 0
    capsys.readouterr()
    assert run_cli("train", "--out", out, "--resume", "--device", "cpu") == 0
    text = capsys.readouterr().out
    assert "is complete (3 steps, 1 epoch)" in text and "--epochs 31" in text and "nan" not in text
    assert run_cli("train", "--out", tmp_path / "short", "--data", tiny, "--batch-size", 32, "--max-steps", 2,
                   "--device", "cpu", "--quiet") == 0
    capsys.readouterr()
    assert run_cli("train", "--out", tmp_path / "short", "--resume", "--device", "cpu") == 0
    assert "--resume --max-steps 1002" in capsys.readouterr().out  # (--epochs would not lift a step limit)


def test_interrupt_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    import fastgan.train.trainer as trainer_mod

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "train", interrupted)
    assert run_cli("train", "--out", tmp_path / "x", "--device", "cpu") == 130
    err = capsys.readouterr().err
    assert "nothing was saved yet" in err and "intact" not in err
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "checkpoint.pt").write_bytes(b"x")
    assert run_cli("train", "--out", tmp_path / "y", "--device", "cpu") == 130
    assert "is intact" in capsys.readouterr().err


def test_sample_defaults_into_the_run_folder_and_threads_option(tmp_path, tiny, monkeypatch):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--epochs", 1, "--device", "cpu",
                       "--quiet", "--threads", 1) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    monkeypatch.chdir(tmp_path)
    assert run_cli("sample", "--checkpoint", out / "checkpoint.pt", "--n", 4) == 0
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "samples.png").exists()


# ----------------------------------------------------------------------------------------------- the user's files
def test_a_run_never_overwrites_another_runs_files(tmp_path, tiny, capsys, monkeypatch):
    """--resume of another checkpoint into a folder holding a run, two runs in one folder, --resume with
    --overwrite, an empty --out: refused before anything is written; the folder's files stay as they were."""
    from fastgan.train.trainer import _out_lock
    common = ("--data", tiny, "--batch-size", 32, "--device", "cpu", "-q")
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", "--out", a, "--max-steps", 3, "--seed", 1, *common) == 0
    assert run_cli("train", "--out", b, "--max-steps", 2, "--seed", 2, *common) == 0
    before = {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()}
    capsys.readouterr()
    for argv, msg in [(["--resume", b / "checkpoint.pt", "--max-steps", 4], "is another run's checkpoint"),
                      (["--resume", "--overwrite"], "pass one of them")]:
        assert run_cli("train", "--out", a, *argv, "--device", "cpu", "-q") == 1
        assert msg in capsys.readouterr().err
    with _out_lock(a):  # a run writing there
        assert run_cli("train", "--out", a, "--resume", "--max-steps", 4, "--device", "cpu", "-q") == 1
        assert "another fastgan train is writing there" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()} == before
    assert run_cli("train", "--out", a / "c", "--resume", a / "checkpoint.pt", "--max-steps", 4, "-q") == 0
    assert run_cli("train", "--out", a, "--resume", a / "checkpoint.pt", "--max-steps", 4, "-q") == 0  # its own
    assert ckpt.load(a / "checkpoint.pt")["step"] == 4
    assert run_cli("train", "--out", "", *common) == 1
    assert "--out: expected a directory path" in capsys.readouterr().err
    monkeypatch.setenv("FASTGAN_IMPL", "garbage")  # refused before a run's work, not after it
    assert run_cli("train", "--out", tmp_path / "d", *common) == 2
    assert "FASTGAN_IMPL='garbage'" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_overwrite_clears_the_earlier_runs_outputs(tmp_path, tiny):
    out, common = tmp_path / "run", ("--data", tiny, "--batch-size", 32, "--device", "cpu", "-q")
    assert run_cli("train", "--out", out, "--epochs", 2, *common) == 0
    assert (out / "samples" / "epoch_0002.png").exists()
    assert run_cli("train", "--out", out, "--overwrite", "--epochs", 1, *common) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0001.png"]
    assert [r["step"] for r in records(out)] == [1, 2, 3] and ckpt.load(out / "checkpoint.pt")["step"] == 3


def test_resume_refuses_a_changed_data_set(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    write_mnist(data, 64)
    assert run_cli("train", "--out", out, "--data", data, "--batch-size", 32, "--epochs", 2, "--max-steps", 1,
                   "--device", "cpu", "-q") == 0
    write_mnist(data, 128)  # the same folder, more images: epoch boundaries would move
    capsys.readouterr()
    assert run_cli("train", "--out", out, "--resume", "--max-steps", 0, "--device", "cpu", "-q") == 1
    assert "the data set changed since the checkpoint: 2 steps per epoch then, 4 now" in capsys.readouterr().err
    emb = tmp_path / "embedded"
    assert run_cli("train", "--out", emb, "--max-steps", 1, "--device", "cpu", "-q") == 0
    assert run_cli("train", "--out", emb, "--resume", "--data", data, "--device", "cpu", "-q") == 1
    assert "trained with the embedded data (no --data), got --data" in capsys.readouterr().err
    with pytest.raises(ckpt.CheckpointError, match="is a directory; expected a checkpoint file, such as .*\\.pt"):
        ckpt.load(emb)


def test_damaged_checkpoint_bytes_are_detected(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 1, "--device", "cpu",
                   "-q") == 0
    path = out / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:  # flip bytes inside the largest tensor's stored data
        info = max(z.infolist(), key=lambda i: i.compress_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 8, start + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=r"^\S+checkpoint\.pt: damaged checkpoint \(the checksum"):
        ckpt.load(path)
    capsys.readouterr()
    assert run_cli("sample", "--checkpoint", path, "--out", tmp_path / "s.png") == 1
    assert "damaged checkpoint" in capsys.readouterr().err


def test_checkpoint_written_without_crcs_loads(tmp_path):
    """torch can be told not to compute the zip entries' CRCs (they are stored as 0): not a damaged file."""
    from torch.utils.serialization import config
    cfg = config.save
    before, cfg.compute_crc32 = cfg.compute_crc32, False
    try:
        ckpt.save(_state(3), tmp_path / "nocrc.pt")
    finally:
        cfg.compute_crc32 = before
    assert ckpt.load(tmp_path / "nocrc.pt")["step"] == 3


def test_a_run_set_up_before_another_wrote_its_folder_refuses(tmp_path, tiny):
    common = dict(data=tiny, batch_size=32, max_steps=1, device="cpu", quiet=True)
    late = Trainer(TrainConfig(out=str(tmp_path / "run"), **common))
    Trainer(TrainConfig(out=str(tmp_path / "run"), **common)).run()  # another run wrote there meanwhile
    with pytest.raises(TrainError, match="its checkpoint changed since this run was set up"):
        late.run()


def test_cli_follows_fastgan_impl_unless_told(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setenv("FASTGAN_IMPL", "torch")
    assert run_cli("train", "--out", tmp_path / "run", "--data", tiny, "--batch-size", 32, "--max-steps", 1,
                   "--device", "cpu") == 0
    assert "impl=torch" in capsys.readouterr().out
    assert run_cli("sample", "--checkpoint", tmp_path / "run" / "checkpoint.pt", "--out",
                   tmp_path / "new" / "dir" / "grid.png") == 0  # (sample creates the folders, as before)
    assert (tmp_path / "new" / "dir" / "grid.png").exists()


def test_eval_and_sample_outputs_are_checked_first(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 1, "--device", "cpu",
                   "-q") == 0
    path = out / "checkpoint.pt"
    raw = path.read_bytes()
    capsys.readouterr()
    for argv, msg in [(["eval", "--json", path], "is the checkpoint being read"),
                      (["eval", "--json", tmp_path], "is a directory"),
                      (["eval", "--json", tmp_path / "no" / "x.json"], "does not exist"),
                      (["sample", "--out", path], "is the checkpoint being read"),
                      (["sample", "--out", tmp_path / "grid.xyz"], "expected a file name ending in one of")]:
        assert run_cli(argv[0], "--checkpoint", path, *argv[1:]) == 1
        err = capsys.readouterr().err
        assert msg in err and argv[1] in err, err
    assert path.read_bytes() == raw


def test_metrics_of_a_diverged_run_stay_valid_json(tmp_path):
    from fastgan.train.outputs import MetricsLog
    log = MetricsLog(tmp_path / "m.jsonl")
    log.write([{"step": 1, "loss_d": float("nan"), "loss_g": float("inf"), "d_real": 0.5}])
    log.close()
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"step": 1, "loss_d": None, "loss_g": None,
                                                              "d_real": 0.5}


def test_unreadable_data_is_named_and_a_failed_picture_keeps_the_checkpoint(tmp_path, tiny, monkeypatch, capsys):
    """An OSError reading --data is the data's error (it was reported as '--out: cannot write there'); a sample
    grid that cannot be written stops the run after the checkpoint of that step is saved, not before."""
    from fastgan.train import data as data_mod
    from fastgan.train.trainer import Trainer

    def denied(root, split="train"):
        raise PermissionError(13, "Permission denied", os.path.join(root, "train-images-idx3-ubyte"))
    with monkeypatch.context() as m:
        m.setattr(data_mod, "load_idx_dir", denied)
        assert run_cli("train", "--out", tmp_path / "a", "--data", tiny, "--max-steps", 1, "-q") == 1
    err = capsys.readouterr().err
    assert f"--data {tiny}: cannot read it" in err and "--out" not in err

    def no_picture(self, path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(Trainer, "save_samples", no_picture)
    out = tmp_path / "b"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 6, "-q") == 1
    assert ckpt.load(out / "checkpoint.pt")["step"] == 3  # the end of epoch 1, where the picture failed


def test_resume_writes_the_pictures_a_stopped_run_missed(tmp_path, tiny):
    """A run stopped between a checkpoint and its pictures (killed right after the write) never drew them: --resume
    draws the missing grid -- the same picture: the checkpoint holds the weights and the fixed noise -- and the loss
    plot, also when the run is complete."""
    out, common = tmp_path / "run", ("--data", tiny, "--batch-size", 32, "--device", "cpu", "-q")
    assert run_cli("train", "--out", out, "--epochs", 2, *common) == 0
    grid = out / "samples" / "epoch_0002.png"
    want = grid.read_bytes()
    grid.unlink()
    (out / "losses.png").unlink()
    assert run_cli("train", "--out", out, "--resume", "-q") == 0
    assert grid.read_bytes() == want and (out / "losses.png").stat().st_size > 0
    other = tmp_path / "other"  # a continuation into a fresh folder draws only its own steps' pictures there
    assert run_cli("train", "--out", other, "--resume", out / "checkpoint.pt", "-q") == 0  # (complete: nothing)
    assert not other.exists() or not any(other.rglob("*.png"))
    assert run_cli("train", "--out", other, "--resume", out / "checkpoint.pt", "--epochs", 3, "-q") == 0
    assert sorted(p.name for p in (other / "samples").iterdir()) == ["epoch_0003.png"]


def test_a_folder_with_pictures_but_no_checkpoint_is_not_mixed_into(tmp_path, tiny, capsys):
    """A run's folder whose checkpoint was moved away: a new run (or a continuation of another checkpoint) there
    would cut its metrics and leave its later grids beside the new ones; refused, --overwrite replaces them."""
    out, common = tmp_path / "run", ("--data", tiny, "--batch-size", 32, "--device", "cpu", "-q")
    assert run_cli("train", "--out", out, "--epochs", 2, *common) == 0
    (out / "checkpoint.pt").rename(tmp_path / "moved.pt")
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    capsys.readouterr()
    for argv in (["--epochs", 1], ["--resume", tmp_path / "moved.pt", "--epochs", 3]):
        assert run_cli("train", "--out", out, *argv, *common) == 1
        assert "holds a run's outputs (losses.png, samples) but no checkpoint.pt" in capsys.readouterr().err
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    assert run_cli("train", "--out", out, "--overwrite", "--epochs", 1, *common) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0001.png"]
    assert [r["step"] for r in records(out)] == [1, 2, 3]


def test_a_diverging_run_stops_before_its_checkpoint(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--lr", "1e30", "--data", tiny, "--batch-size", 32, "--epochs", 2,
                   "--device", "cpu", "-q") == 1
    assert "training diverged at step 1" in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()


def test_resume_follows_moved_data_and_refuses_changed_images(tmp_path, capsys):
    data, out = tmp_path / "d1", tmp_path / "run"
    write_mnist(data, 64)
    common = ("--device", "cpu", "-q")
    assert run_cli("train", "--out", out, "--data", data, "--batch-size", 32, "--max-steps", 2, *common) == 0
    moved = tmp_path / "d2"
    data.rename(moved)
    capsys.readouterr()
    assert run_cli("train", "--out", out, "--resume", "--max-steps", 3, *common) == 1
    assert "if it moved, pass --data with its new place" in capsys.readouterr().err
    assert run_cli("train", "--out", out, "--resume", "--data", moved, "--max-steps", 3, *common) == 0
    images = moved / "train-images-idx3-ubyte"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of the same-sized data set
    images.write_bytes(bytes(raw))
    assert run_cli("train", "--out", out, "--resume", "--max-steps", 4, *common) == 1
    assert "holds other images than the checkpoint was trained on" in capsys.readouterr().err
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 3
    del state["config"]["data_digest"]  # a checkpoint from before the check: --data cannot name a new place
    ckpt.save(state, out / "checkpoint.pt")
    moved.rename(tmp_path / "d3")
    assert run_cli("train", "--out", out, "--resume", "--max-steps", 4, *common) == 1
    assert "put it back there" in capsys.readouterr().err


def test_metrics_lines_that_are_no_step_record_are_skipped(tmp_path, tiny):
    out, common = tmp_path / "run", ("--data", tiny, "--batch-size", 32, "--device", "cpu", "-q")
    assert run_cli("train", "--out", out, "--epochs", 1, *common) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"note": 1}\n3.5\n')
    assert run_cli("train", "--out", out, "--resume", "--epochs", 2, "-q") == 0
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4, 5, 6]


def test_eval_replaces_only_its_own_json_and_does_not_depend_on_the_batch(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, "--data", tiny, "--batch-size", 32, "--max-steps", 1, "--device", "cpu",
                   "-q") == 0
    path, metrics = out / "checkpoint.pt", (out / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert run_cli("eval", "--checkpoint", path, "--n", 70, "--json", out / "metrics.jsonl") == 1
    assert "is not an earlier eval's results" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == metrics
    res, fids = tmp_path / "res.json", []
    for batch in (70, 9):  # the second replaces the first's file
        assert run_cli("eval", "--checkpoint", path, "--n", 70, "--batch-size", batch, "--json", res) == 0
        fids.append(json.loads(res.read_text())["fid"])
    assert fids[0] == fids[1]
    link, empty = tmp_path / "link.json", tmp_path / "empty.json"
    link.symlink_to(res)
    empty.write_text("")  # (a placeholder, as mktemp makes)
    for target in (link, empty):
        assert run_cli("eval", "--checkpoint", path, "--n", 70, "--json", target) == 0
    assert link.is_symlink() and json.loads(res.read_text())["fid"] == fids[0]  # written through the link
    assert json.loads(empty.read_text())["fid"] == fids[0]
    state = ckpt.load(path)  # a diverged run's weights: a clear error, not scores of NaN images
    for key in ("G", "G_ema"):
        for t in state.get(key, {}).values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    ckpt.save(state, tmp_path / "nan.pt")
    capsys.readouterr()
    for cmd in ("eval", "sample"):
        assert run_cli(cmd, "--checkpoint", tmp_path / "nan.pt", "--n", 70) == 1
        assert "the generator's outputs are not finite" in capsys.readouterr().err
