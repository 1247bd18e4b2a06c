"""A non-GAN model converted with ``fastgan.fuse``: a small stock-PyTorch MNIST classifier is rewritten to
fused layers (same weights, same state_dict keys), checked against the original, then trained. Runs on CPU
in well under a minute on the embedded 5,000-image MNIST subset.

    python examples/fuse_classifier.py [--epochs 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import fastgan
from fastgan.train.data import load_embedded


def stock_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1), nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64), nn.Tanh(),
        nn.Linear(64, 10))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    data = load_embedded()
    x, y = data.images.to(dev).float().div_(255).unsqueeze(1), data.labels.to(dev)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(dev)
    train_idx, test_idx = perm[:4000], perm[4000:]

    model = stock_model().to(dev)
    fused, report = fastgan.fuse(model, return_report=True)
    print("fastgan.fuse changed:")
    for line in report:
        print("  " + line)
    with torch.no_grad():
        diff = (fused(x[:256]) - model(x[:256])).abs().max().item()
    print(f"max |fused - stock| on 256 images before training: {diff:.2e}")
    assert list(fused.state_dict()) == list(model.state_dict())

    opt = torch.optim.Adam(fused.parameters(), 1e-3)
    t0 = time.time()
    for epoch in range(args.epochs):
        order = train_idx[torch.randperm(len(train_idx), device=dev)]
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = nn.functional.cross_entropy(fused(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (fused(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  held-out accuracy {acc:.3f}  ({time.time() - t0:.1f} s)")
    stock_again = fastgan.unfuse(fused)
    print(f"unfused back to stock layers: {[type(m).__name__ for m in stock_again]}")
    return acc


if __name__ == "__main__":
    main()
