"""A DCGAN whose generator and discriminator are built from fastgan's fused layers, trained on the embedded
5,000-image MNIST subset. Runs on CPU in under a minute with the defaults.

    python examples/dcgan.py [--steps 150] [--batch-size 64] [--out dcgan_out] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import fastgan
from fastgan.train.data import load_embedded


class Generator(nn.Module):
    def __init__(self, z_dim: int = 64, width: int = 32):
        super().__init__()
        self.width = width
        self.fc = fastgan.nn.FusedLinear(z_dim, 2 * width * 7 * 7, act="lrelu", alpha=0.2)
        self.up1 = fastgan.nn.FusedConvTranspose2d(2 * width, width, 4, 2, 1, act="lrelu", alpha=0.2)  # 7 -> 14
        self.up2 = fastgan.nn.FusedConvTranspose2d(width, 1, 4, 2, 1, act="sigmoid")  # 14 -> 28

    def forward(self, z):
        return self.up2(self.up1(self.fc(z).view(-1, 2 * self.width, 7, 7)))


class Discriminator(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            fastgan.nn.FusedConv2d(1, width, 4, 2, 1, act="lrelu", alpha=0.2),  # 28 -> 14
            fastgan.nn.FusedConv2d(width, 2 * width, 4, 2, 1, act="lrelu", alpha=0.2),  # 14 -> 7
            nn.Flatten(),
            fastgan.nn.FusedLinear(2 * width * 7 * 7, 1))

    def forward(self, x):
        return self.net(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="dcgan_out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    images = load_embedded().images.to(dev).float().div_(255).unsqueeze(1)  # (5000, 1, 28, 28) in [0, 1]
    G, D = Generator().to(dev), Discriminator().to(dev)
    bce = fastgan.nn.BCEWithLogitsLoss()
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    fixed = torch.randn(64, 64, device=dev)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        real = images[torch.randint(0, len(images), (args.batch_size,), device=dev)]
        fake = G(torch.randn(args.batch_size, 64, device=dev))
        loss_d = bce(D(real), 1.0) + bce(D(fake.detach()), 0.0)  # constant labels: no target tensors
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = bce(D(fake), 1.0)  # non-saturating generator loss
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  loss_D {loss_d.item():.3f}  loss_G {loss_g.item():.3f}  "
                  f"{(time.time() - t0) / step * 1e3:.1f} ms/step", flush=True)
    os.makedirs(args.out, exist_ok=True)
    from fastgan.train.outputs import save_grid
    with torch.no_grad():
        save_grid(G(fixed).cpu(), os.path.join(args.out, "samples.png"))
    print(f"samples: {os.path.join(args.out, 'samples.png')}")
    return loss_d.item(), loss_g.item()


if __name__ == "__main__":
    main()
