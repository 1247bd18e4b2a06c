"""``fastgan train`` / ``fastgan sample`` / ``fastgan eval`` (hooked into ``fastgan.cli``)."""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_parser", "cmd_train", "cmd_sample", "cmd_eval"]

_IMPLS = ("auto", "native", "emu", "torch")


def _int_ge(lo: int, hi: int = (1 << 63) - 1):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {v}" if v > hi
                                             else f"expected an integer >= {lo}, got {v}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def _float_ge0(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s}")
    return v


def _float_pos(s: str) -> float:
    v = _float_ge0(s)
    if v == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {s}")
    return v


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' except where the default is None (the help text then says what None means)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _add_generator_args(p) -> None:
    """Where and how `sample` / `eval` rebuild the generator from a checkpoint."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available")
    p.add_argument("--layers", choices=("fused", "stock"), default="fused",
                   help="layer kind to rebuild the generator with (checkpoints load in either)")
    p.add_argument("--impl", choices=_IMPLS, default=None,
                   help="fastgan op implementation (default: FASTGAN_IMPL's, else auto)")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw trained generator; by default a checkpoint's EMA generator (--ema-beta) is used "
                        "when it has one")


def add_parser(subparsers) -> None:
    from .config import DEFAULT_EPOCHS, DEFAULTS, TrainConfig

    d = TrainConfig()
    fmt = _Help
    p = subparsers.add_parser(
        "train", formatter_class=fmt, help="train the MNIST GAN",
        description="Train the classic MNIST GAN (MLP generator, strided-conv discriminator) with the fused "
                    "layers. Defaults train on the embedded 5,000-image MNIST subset. Under torchrun "
                    "(torchrun --nproc_per_node N -m fastgan train ...) it trains with DistributedDataParallel.")
    p.add_argument("--out", default=d.out, metavar="DIR", help="output directory (samples, plots, metrics, checkpoint)")
    p.add_argument("--epochs", type=_int_ge(1), default=None,
                   help=f"epochs over the data (default {DEFAULT_EPOCHS}, or the checkpoint's with --resume)")
    p.add_argument("--max-steps", type=_int_ge(0), default=None,
                   help="stop after this many steps in all (0: no limit; default 0, or the checkpoint's)")
    p.add_argument("--batch-size", type=_int_ge(1), default=None,
                   help=f"global batch size, split across processes (default {DEFAULTS['batch_size']})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device,
                   help="auto: CUDA when available, else CPU")
    p.add_argument("--layers", choices=("fused", "stock"), default=d.layers,
                   help="fused: fastgan.nn layers and loss; stock: the same networks from torch.nn")
    p.add_argument("--impl", choices=_IMPLS, default=d.impl,
                   help="fastgan op implementation (see fastgan doctor; default: FASTGAN_IMPL's, else auto)")
    p.add_argument("--seed", type=_int_ge(0), default=None, help=f"random seed (default {DEFAULTS['seed']})")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="continue a run from CHECKPOINT (default: DIR/checkpoint.pt); settings not given are "
                        "taken from the checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run even if DIR has one (its checkpoint, metrics, loss plot and sample grids "
                        "are replaced)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="directory with MNIST or Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz]; also "
                        "DIR/raw or torchvision's DIR/MNIST/raw); default: the embedded 5k MNIST subset. With "
                        "--resume: the place the run's images moved to (they are checked against the checkpoint's)")
    p.add_argument("--r1-gamma", type=_float_ge0, default=None,
                   help="R1 gradient penalty weight gamma on real images, gamma/2 * E||grad_x D(x)||^2 "
                        f"(0: off; default {DEFAULTS['r1_gamma']:g})")
    p.add_argument("--r1-every", type=_int_ge(1), default=None, metavar="K",
                   help="lazy R1: apply the penalty (weighted gamma*K) on every K-th step only "
                        f"(default {DEFAULTS['r1_every']})")
    p.add_argument("--lr", type=_float_pos, default=None,
                   help=f"Adam learning rate of G, and of D unless --lr-d is given (default {DEFAULTS['lr']:g})")
    p.add_argument("--lr-d", type=_float_pos, default=None,
                   help="Adam learning rate of D (default " + ("the same as --lr" if DEFAULTS["lr_d"] is None
                                                              else f"{DEFAULTS['lr_d']:g}") + ")")
    p.add_argument("--ema-beta", type=_float_ge0, default=None, metavar="BETA",
                   help="keep an exponential moving average of G's weights (decay BETA, ramped up over the first "
                        "steps) for samples and eval; 0: off (default " + f"{DEFAULTS['ema_beta']:g})")
    p.add_argument("--ms-lambda", type=_float_ge0, default=None, metavar="LAMBDA",
                   help="weight of the mode-seeking term in G's loss (Mao et al. 2019): penalises G for mapping "
                        f"different noise to similar images; 0: off (default {DEFAULTS['ms_lambda']:g}); under "
                        "torchrun each process's share of the batch must be even (samples are paired)")
    p.add_argument("--arch", choices=("wide", "seed"), default=None,
                   help="G's hidden widths: wide (100-256-512-784) or seed (the classic 100-128-256-784; D is the "
                        f"same conv 32/64/128 + dense in both) (default {DEFAULTS['arch']})")
    p.add_argument("--g-init", choices=("he", "torch"), default=None,
                   help="G's initialisation: he (Kaiming normal for leaky-ReLU) or torch (PyTorch's default, with "
                        f"which this GAN collapses to one digit) (default {DEFAULTS['g_init']})")
    p.add_argument("--inst-noise", type=_float_ge0, default=None, metavar="SIGMA",
                   help="instance noise: add N(0, SIGMA^2) per pixel to every image D sees, real and generated "
                        f"(0: off; default {DEFAULTS['inst_noise']:g})")
    p.add_argument("--beta1", type=_float_ge0, default=None, help=f"Adam beta1 (default {DEFAULTS['beta1']})")
    p.add_argument("--beta2", type=_float_ge0, default=None, help=f"Adam beta2 (default {DEFAULTS['beta2']})")
    p.add_argument("--checkpoint-every", type=_int_ge(0), default=d.checkpoint_every, metavar="STEPS",
                   help="also checkpoint every STEPS steps (0: only at epoch ends)")
    p.add_argument("--log-every", type=_int_ge(0), default=d.log_every, metavar="STEPS",
                   help="read metrics back every STEPS steps (0: every step on CPU, 50 on CUDA)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture the whole training step in a CUDA graph (CUDA, single process)")
    p.add_argument("--threads", type=_int_ge(0, 1024), default=d.threads, metavar="N",
                   help="torch CPU threads (0: torch's default, one per core; a CPU run repeats exactly for the same "
                        "seed and thread count)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no messages")
    p.set_defaults(func=cmd_train)

    s = subparsers.add_parser("sample", formatter_class=fmt, help="write a grid of samples from a checkpoint",
                              description="Write a PNG grid of generator samples from a training checkpoint.")
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by fastgan train")
    s.add_argument("--n", type=_int_ge(1, 10000), default=64, help="number of samples")
    s.add_argument("--out", default=None, metavar="PNG",
                   help="where to write the grid (default: samples.png in the checkpoint's folder)")
    s.add_argument("--nrow", type=_int_ge(0, 10000), default=0, help="images per row (0: square grid)")
    s.add_argument("--seed", type=_int_ge(0), default=0, help="noise seed")
    _add_generator_args(s)
    s.set_defaults(func=cmd_sample)

    e = subparsers.add_parser(
        "eval", formatter_class=fmt, help="score a checkpoint (FID, classifier score, digit coverage)",
        description="FID on the features of the small MNIST classifier shipped with fastgan, a classifier "
                    "(Inception-Score-like) score and per-digit coverage of generated samples.")
    e.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by fastgan train")
    e.add_argument("--n", type=_int_ge(1, 200000), default=5000,
                   help="generated samples (at least 65: FID needs more samples than its 64 features)")
    e.add_argument("--data", default=None, metavar="DIR",
                   help="real reference images (IDX directory); default: the checkpoint's training data")
    e.add_argument("--seed", type=_int_ge(0), default=0, help="noise seed")
    e.add_argument("--batch-size", type=_int_ge(1, 200000), default=500,
                   help="images per forward pass (the scores do not depend on it)")
    _add_generator_args(e)
    e.add_argument("--json", default=None, metavar="PATH",
                   help="also write the results as JSON ('-': stdout only); an existing file is replaced only if it "
                        "holds an earlier eval's results")
    e.set_defaults(func=cmd_eval)


def _errors():
    from .checkpoint import CheckpointError
    from .data import DataError
    from .trainer import TrainError

    return (TrainError, CheckpointError, DataError)


def _fail(cmd: str, e: BaseException) -> int:
    print(f"fastgan {cmd}: error: {e}", file=sys.stderr)
    return 1


def cmd_train(args) -> int:
    from .trainer import TrainConfig, train

    cfg = TrainConfig(out=args.out, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                      device=args.device, layers=args.layers, impl=args.impl, seed=args.seed, resume=args.resume,
                      overwrite=args.overwrite, data=args.data, r1_gamma=args.r1_gamma, r1_every=args.r1_every,
                      lr=args.lr, lr_d=args.lr_d, ema_beta=args.ema_beta, ms_lambda=args.ms_lambda,
                      inst_noise=args.inst_noise, g_init=args.g_init, arch=args.arch,
                      beta1=args.beta1, beta2=args.beta2, checkpoint_every=args.checkpoint_every,
                      log_every=args.log_every, cuda_graph=args.cuda_graph, quiet=args.quiet,
                      threads=args.threads)
    try:
        train(cfg)
    except _errors() as e:
        return _fail("train", e)
    except OSError as e:  # writing the run's files
        return _fail("train", f"--out {args.out}: cannot write there ({e})")
    except KeyboardInterrupt:
        from .trainer import CHECKPOINT_NAME
        if os.path.isfile(os.path.join(args.out, CHECKPOINT_NAME)):
            msg = f"continue with --resume (the last checkpoint in {args.out} is intact)"
        else:
            msg = (f"nothing was saved yet in {args.out} (the first checkpoint is written at the end of the first "
                   "epoch); start again")
        print(f"\nfastgan train: interrupted; {msg}", file=sys.stderr)
        return 130
    return 0


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _load(args):
    from .checkpoint import load_models

    device = _device(args.device)
    G, _, state = load_models(args.checkpoint, layers=args.layers, device=device, ema=not args.no_ema)
    return G, state, device


def _check_output(arg: str, path, checkpoint, suffixes=None, parent_must_exist=True) -> None:
    """An output path that can be written: not a directory, not the checkpoint being read, an existing parent
    directory (where the writer does not create it), one of ``suffixes``; checked before the work that produces
    it."""
    if os.path.isdir(path):
        raise ValueError(f"{arg} {path}: is a directory; expected a file path")
    if os.path.exists(path) and os.path.exists(checkpoint) and os.path.samefile(path, checkpoint):
        raise ValueError(f"{arg} {path}: is the checkpoint being read; expected another file")
    parent = os.path.dirname(os.path.abspath(path))
    if parent_must_exist and not os.path.isdir(parent):
        raise ValueError(f"{arg} {path}: directory {parent} does not exist")
    if os.path.isdir(parent) and not os.access(parent, os.W_OK):  # (before the work, not after it)
        raise ValueError(f"{arg} {path}: directory {parent} is not writable")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if suffixes is not None and ext not in suffixes:
        raise ValueError(f"{arg} {path}: expected a file name ending in one of "
                         f"{', '.join('.' + x for x in sorted(suffixes))}")


def _image_suffixes() -> set:
    """The picture formats matplotlib's imsave writes: its figure formats less those imsave hands to Pillow under
    a name Pillow does not know (it raises KeyError for them, after the work)."""
    from matplotlib.figure import Figure
    return set(Figure().canvas.get_supported_filetypes()) - {"pgf", "raw", "rgba", "svgz", "tif"}


def cmd_sample(args) -> int:
    from .. import _impl
    from .metrics import generate
    from .outputs import save_grid

    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "samples.png")
    try:
        _check_output("--out", args.out, args.checkpoint, _image_suffixes(), parent_must_exist=False)
    except ValueError as e:
        return _fail("sample", e)
    try:
        with _impl.use_impl(args.impl or _impl.current()):
            G, state, device = _load(args)
            imgs = generate(G, args.n, seed=args.seed, device=device)
    except _errors() + (RuntimeError, ValueError, OSError) as e:
        return _fail("sample", e)
    try:
        save_grid(imgs, args.out, nrow=args.nrow)  # (atomically: a failed write leaves an earlier grid as it was)
    except OSError as e:
        return _fail("sample", f"--out {args.out}: cannot write it ({e})")
    print(f"wrote {args.n} samples of {args.checkpoint} (step {int(state['step'])}) to {args.out}")
    return 0


def cmd_eval(args) -> int:
    from .. import _impl
    from .data import load_data
    from .metrics import MIN_FID_SAMPLES, evaluate_generator
    from .outputs import json_safe, write_text_atomically

    if args.n < MIN_FID_SAMPLES:
        return _fail("eval", ValueError(f"--n: expected at least {MIN_FID_SAMPLES} samples (FID's covariance of "
                                        f"{MIN_FID_SAMPLES - 1} features is singular with fewer), got {args.n}"))
    if args.json not in (None, "-"):
        try:
            _check_output("--json", args.json, args.checkpoint)
            _check_replaceable_json(args.json)
        except ValueError as e:
            return _fail("eval", e)
    try:
        with _impl.use_impl(args.impl or _impl.current()):
            G, state, device = _load(args)
            data_dir = args.data if args.data is not None else state["config"].get("data")
            real = load_data(data_dir)
            res = evaluate_generator(G, real.images, n=args.n, seed=args.seed, device=device,
                                     batch_size=args.batch_size)
    except _errors() + (RuntimeError, ValueError, OSError) as e:
        return _fail("eval", e)
    res.update(checkpoint=str(args.checkpoint), step=int(state["step"]), reference=real.source,
               generator="ema" if state.get("G_ema") is not None and not args.no_ema else "raw")
    res = json_safe(res)  # (strict JSON: no NaN)
    if args.json == "-":
        print(json.dumps(res, indent=2))
        return 0
    share = "  ".join(f"{i}:{s * 100:.1f}%" for i, s in enumerate(res["class_share"]))
    acc = res.get("classifier_heldout_accuracy")
    lines = [
        f"checkpoint        {args.checkpoint} (step {res['step']}, {res['generator']} generator)",
        f"FID               {res['fid']:.3f}  (classifier features; {res['n_fake']} generated vs {res['n_real']} "
        f"real from {real.source})",
        f"classifier score  {res['classifier_score']:.3f} +- {res['classifier_score_std']:.3f}  "
        "(1: collapsed/unrecognisable .. 10: confident, all digits)",
        f"coverage          {res['classes_covered']}/10 digits with >= {res['coverage_threshold'] * 100:.1f}% "
        f"of samples; {res['confident_share'] * 100:.1f}% classified with p >= 0.9",
        f"digit shares      {share}",
    ]
    if acc is not None:
        lines.append(f"classifier        held-out accuracy {acc * 100:.2f}% (scripts/train_classifier.py)")
    print("\n".join(lines))
    if args.json:
        try:
            write_text_atomically(args.json, json.dumps(res, indent=2) + "\n")
        except OSError as e:
            return _fail("eval", f"--json {args.json}: {e}")
    return 0


def _check_replaceable_json(path) -> None:
    """``eval --json`` replaces only what an earlier eval wrote (a JSON object with its keys), never another file
    (training data, a run's metrics) given by mistake."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:  # (a device such as /dev/stdout, an empty file)
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        old = None
    if not (isinstance(old, dict) and {"fid", "checkpoint"} <= old.keys()):
        raise ValueError(f"--json {path}: exists and is not an earlier eval's results; choose another path")
