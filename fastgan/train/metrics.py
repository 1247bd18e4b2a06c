"""Sample quality without downloads: FID on the features of a small MNIST classifier shipped with the package.

* **FID** — :class:`torchmetrics.image.fid.FrechetInceptionDistance` with the classifier's 64-d penultimate layer
  as the custom feature extractor (torchmetrics needs no download and no torch-fidelity for a custom module).
  The numbers are *not* comparable with Inception-based FIDs from papers; compare runs with each other.
* **Classifier score** — :class:`torchmetrics.image.inception.InceptionScore` with the classifier's logits: the
  Inception-Score formula ``exp(E[KL(p(y|x) || p(y))])``; 1 (collapsed / unrecognisable) .. 10 (confident and
  uniformly spread over the digits).
* **Coverage** — the share of generated samples the classifier assigns to each digit, how many digits receive
  at least ``coverage_threshold`` of them, and the share of confident (max prob >= 0.9) predictions.

The classifier is trained by ``scripts/train_classifier.py`` from the embedded data (held-out split) and stored in
``fastgan/data/mnist_classifier.pt`` together with its held-out accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MNISTClassifier", "CLASSIFIER_PATH", "load_classifier", "evaluate_generator", "evaluate_images",
           "generate"]

CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "data" / "mnist_classifier.pt"
_MEAN, _STD = 0.1307, 0.3081


class MNISTClassifier(nn.Module):
    """3 conv blocks (16, 32, 64 channels, 3x3, ReLU, 2x2 max-pool) -> 576 -> 64 (features) -> 10 logits."""

    num_features = 64

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, self.num_features)
        self.fc2 = nn.Linear(self.num_features, 10)
        self.drop = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) images in [0, 1] -> (N, 64) pre-activation features."""
        x = (x.float() - _MEAN) / _STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return self.fc1(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.features(x))))


class _Features(nn.Module):
    """Feature extractor in the form torchmetrics expects (``num_features`` attribute, images in, features out)."""

    def __init__(self, clf: MNISTClassifier):
        super().__init__()
        self.clf = clf
        self.num_features = clf.num_features

    def forward(self, x):
        return self.clf.features(x)


class _Logits(nn.Module):
    def __init__(self, clf: MNISTClassifier):
        super().__init__()
        self.clf = clf

    def forward(self, x):
        return self.clf(x)


def load_classifier(path=None, device=None):
    """(classifier in eval mode, metadata dict) from the shipped weights."""
    path = Path(path or CLASSIFIER_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the evaluation classifier is missing; create it with "
                                "`python scripts/train_classifier.py`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    clf = MNISTClassifier()
    clf.load_state_dict(blob["state_dict"])
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return clf.to(device).eval(), meta


MIN_FID_SAMPLES = MNISTClassifier.num_features + 1


@torch.no_grad()
def generate(G: nn.Module, n: int, batch_size: int = 500, seed: int = 0, device=None) -> torch.Tensor:
    """``n`` samples of ``G`` (on ``device``) from standard-normal noise drawn with ``seed`` on the CPU, all of it
    at once (the same samples for any ``batch_size``). A ValueError if they are not finite (a diverged run)."""
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    out = torch.cat([G(z_all[i:i + batch_size].to(device)).float() for i in range(0, n, batch_size)])
    if not torch.isfinite(out).all():
        raise ValueError("the generator's outputs are not finite (NaN or inf): the weights of a diverged run?")
    return out


@torch.no_grad()
def evaluate_images(fake: torch.Tensor, real: torch.Tensor, clf: Optional[MNISTClassifier] = None,
                    batch_size: int = 500, coverage_threshold: float = 0.025) -> dict:
    """Metrics of ``fake`` against ``real``; both (N, 1, 28, 28) floats in [0, 1] on the classifier's device."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    for name, images in (("generated", fake), ("real", real)):
        if len(images) < MIN_FID_SAMPLES:
            raise ValueError(f"{len(images)} {name} images: FID needs at least {MIN_FID_SAMPLES} (one more than the "
                             f"classifier's {MNISTClassifier.num_features} features), else its covariance is singular")
    if clf is None:
        clf, _ = load_classifier(device=fake.device)
    device = next(clf.parameters()).device
    fid = FrechetInceptionDistance(feature=_Features(clf), reset_real_features=True).to(device)
    for i in range(0, len(real), batch_size):
        fid.update(real[i:i + batch_size].to(device), real=True)
    probs = []
    for i in range(0, len(fake), batch_size):
        x = fake[i:i + batch_size].to(device)
        fid.update(x, real=False)
        probs.append(clf(x).softmax(1))
    probs = torch.cat(probs)

    import warnings
    with warnings.catch_warnings():  # "InceptionScore will save all extracted features in buffer": small here
        warnings.simplefilter("ignore", UserWarning)
        score = InceptionScore(feature=_Logits(clf), splits=10).to(device)
    for i in range(0, len(fake), batch_size):
        score.update(fake[i:i + batch_size].to(device))
    with torch.random.fork_rng(devices=[]):  # InceptionScore.compute shuffles with the global RNG
        torch.manual_seed(0)
        is_mean, is_std = score.compute()

    share = torch.bincount(probs.argmax(1), minlength=10).double() / len(probs)
    return {
        "fid": float(fid.compute()),
        "classifier_score": float(is_mean),
        "classifier_score_std": float(is_std),
        "class_share": [round(float(s), 4) for s in share],
        "classes_covered": int((share >= coverage_threshold).sum()),
        "coverage_threshold": coverage_threshold,
        "confident_share": float((probs.max(1).values >= 0.9).double().mean()),
        "n_fake": int(len(fake)),
        "n_real": int(len(real)),
    }


def evaluate_generator(G: nn.Module, real_images: torch.Tensor, n: int = 5000, seed: int = 0, device=None,
                       batch_size: int = 500) -> dict:
    """Generate ``n`` samples and score them against ``real_images`` (uint8 (N, 28, 28) or float (N, 1, 28, 28))."""
    device = torch.device(device or "cpu")
    was_training = G.training
    G.eval()
    try:
        fake = generate(G, n, batch_size, seed, device)
    finally:
        G.train(was_training)
    real = real_images
    if real.dtype == torch.uint8:
        real = real.float().div(255).unsqueeze(1)
    clf, meta = load_classifier(device=device)
    out = evaluate_images(fake, real.to(device), clf, batch_size)
    out["classifier_heldout_accuracy"] = meta.get("heldout_accuracy")
    return out
