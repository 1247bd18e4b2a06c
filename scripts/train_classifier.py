#!/usr/bin/env python
"""Train the small MNIST classifier whose features ``fastgan eval`` uses for FID (no download needed).

Trains on 4,000 of the 5,000 embedded MNIST images (400 per digit) with small random shifts, reports the accuracy
on the other 1,000 (100 per digit, never trained on), and writes the weights (about 250 KB) with that accuracy to
``fastgan/data/mnist_classifier.pt``. Takes one to two minutes on an idle 2-core CPU.

    python scripts/train_classifier.py [--epochs 30] [--seed 0] [--out fastgan/data/mnist_classifier.pt]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fastgan.train.data import load_embedded  # noqa: E402
from fastgan.train.metrics import CLASSIFIER_PATH, MNISTClassifier  # noqa: E402


def split(labels: torch.Tensor, per_class_heldout: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in range(10):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:per_class_heldout])
        train.append(idx[per_class_heldout:])
    return torch.cat(train), torch.cat(held)


def shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random integer translation by up to ``max_shift`` pixels (zero fill), per image."""
    n = x.shape[0]
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(28)[None, :])  # (n, 28)
    cols = (dx[:, None] + torch.arange(28)[None, :])
    return padded[:, 0][torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def accuracy(clf, x, y) -> float:
    clf.eval()
    pred = torch.cat([clf(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    clf.train()
    return float((pred == y).double().mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-per-class", type=int, default=100)
    ap.add_argument("--out", default=str(CLASSIFIER_PATH))
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_embedded()
    x = data.images.float().div(255).unsqueeze(1)
    y = data.labels
    tr, ho = split(y, args.heldout_per_class, args.seed)
    xtr, ytr, xho, yho = x[tr], y[tr], x[ho], y[ho]
    clf = MNISTClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    g = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(perm), args.batch_size):
            b = perm[i:i + args.batch_size]
            loss = F.cross_entropy(clf(shift(xtr[b], g)), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        sched.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(perm):.4f}  held-out accuracy "
                  f"{accuracy(clf, xho, yho):.4f}  ({time.perf_counter() - t0:.0f} s)")
    acc = accuracy(clf, xho, yho)
    train_acc = accuracy(clf, xtr, ytr)
    blob = {
        "state_dict": {k: v.detach().clone() for k, v in clf.state_dict().items()},
        "heldout_accuracy": acc,
        "train_accuracy": train_acc,
        "n_train": len(tr),
        "n_heldout": len(ho),
        "split_seed": args.seed,
        "epochs": args.epochs,
        "data": "embedded MNIST 5k subset (fastgan/data/mnist_5k.npz)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, out)
    print(f"held-out accuracy {acc:.4f} on {len(ho)} images never trained on (train accuracy {train_acc:.4f}); "
          f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
