"""The examples run (shortened) and do what they claim."""
from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dcgan_example_runs(tmp_path):
    loss_d, loss_g = load("dcgan").main(["--steps", "3", "--batch-size", "16", "--out", str(tmp_path)])
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert 0 < loss_d < 10 and 0 < loss_g < 20  # finite, and in the range of a GAN's first steps


def test_fuse_classifier_example_learns():
    acc = load("fuse_classifier").main(["--epochs", "1"])
    assert acc > 0.3  # 10 classes: chance is 0.1
