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


def test_readme_python_snippets_run_as_written():
    """The README's Python blocks, pasted in order into one session, run and compute what their comments say."""
    import re

    import torch
    import torch.nn.functional as F

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 3
    ns = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), ns)
    torch.testing.assert_close(ns["y"], F.leaky_relu(F.linear(ns["x"], ns["w"], ns["b"]), 0.2))
    assert isinstance(ns["D"][0], ns["fastgan"].nn.FusedConv2d)
    assert ns["report"] == ["0+1: Conv2d+LeakyReLU -> FusedConv2d(act='lrelu')"]
    img = ns["img"][:4]
    with torch.no_grad():
        torch.testing.assert_close(ns["fused"](img), ns["model"](img))
        torch.testing.assert_close(ns["stock"](img), ns["model"](img))
