"""Fused layers in other models: drop-in modules, fastgan.fuse / unfuse, and the rest of PyTorch
(torch.compile, autocast, channels_last, DDP, save/load, deepcopy, torch.func, create_graph)."""
from __future__ import annotations

import copy
import io
import os
import sys

import pytest
import torch
import torch.nn as nn

import fastgan
import fastgan.functional as FF
from helpers import assert_close, reference


def stock_classifier():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.Tanh(), nn.Linear(32, 10), nn.Sigmoid())


# ------------------------------------------------------------------------------------------- drop-in modules
@pytest.mark.parametrize("stock_cls, fused_cls, args, kwargs", [
    (nn.Linear, fastgan.nn.FusedLinear, (7, 5), {}),
    (nn.Linear, fastgan.nn.FusedLinear, (7, 1), {"bias": False}),
    (nn.Conv2d, fastgan.nn.FusedConv2d, (3, 6, 3), {"stride": 2, "padding": 1, "groups": 3}),
    (nn.Conv2d, fastgan.nn.FusedConv2d, (3, 4, (3, 5)), {"padding_mode": "reflect", "padding": (1, 2)}),
    (nn.ConvTranspose2d, fastgan.nn.FusedConvTranspose2d, (4, 3, 4), {"stride": 2, "padding": 1}),
    (nn.ConvTranspose2d, fastgan.nn.FusedConvTranspose2d, (4, 6, 3), {"stride": 2, "output_padding": 1,
                                                                      "groups": 2, "dilation": 2}),
])
def test_drop_in_same_init_keys_and_output(impl, stock_cls, fused_cls, args, kwargs):
    _, dev = impl
    torch.manual_seed(3)
    stock = stock_cls(*args, **kwargs).to(dev)
    torch.manual_seed(3)
    fused = fused_cls(*args, **kwargs).to(dev)
    assert list(stock.state_dict()) == list(fused.state_dict())
    for k, v in stock.state_dict().items():
        assert torch.equal(v, fused.state_dict()[k]), f"default initialisation differs for {k}"
    fused.load_state_dict(stock.state_dict())  # both ways
    stock.load_state_dict(fused.state_dict())
    assert repr(fused).startswith(fused_cls.__name__) and "act='linear'" in repr(fused)
    if stock_cls is nn.Linear:
        x = torch.randn(4, args[0], device=dev)
    else:
        x = torch.randn(2, args[0], 9, 9, device=dev)
    assert_close(fused(x), stock.double()(x.double()), torch.float32, "drop-in output")


def test_fused_leaky_relu_and_leaky_relu_module(impl):
    _, dev = impl
    m = fastgan.nn.FusedLeakyReLU(5, negative_slope=0.1).to(dev)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(3, 5, 4, device=dev)
    assert_close(m(x), nn.functional.leaky_relu(x.double() + m.bias.double()[:, None], 0.1), torch.float32, "fused")
    assert "lrelu" in repr(m) and m.negative_slope == 0.1
    m.reset_parameters()  # as torch.nn's layers have it (a model's re-initialisation calls it)
    assert torch.equal(m.bias, torch.zeros(5, device=dev))
    y = fastgan.nn.FusedBiasAct(5, act="linear", bias=False).to(dev)(x)  # nothing to apply: still a new tensor
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    import numpy as np
    assert fastgan.nn.FusedLeakyReLU(np.int64(5)).bias.shape == (5,)  # a NumPy integer, as torch.nn's layers take
    for bad in (True, 2.0, 0):
        with pytest.raises(ValueError, match="channels: expected a positive int"):
            fastgan.nn.FusedBiasAct(bad)
    lr = fastgan.nn.LeakyReLU(0.3)
    assert torch.equal(lr(x), nn.LeakyReLU(0.3)(x)) or torch.allclose(lr(x), nn.LeakyReLU(0.3)(x))


def test_bce_module_matches_stock(impl):
    _, dev = impl
    x, t = torch.randn(6, 3, device=dev), torch.rand(6, 3, device=dev)
    pw = torch.rand(3, device=dev) + 0.5
    for red in ("mean", "sum", "none"):
        ours = fastgan.nn.BCEWithLogitsLoss(reduction=red, pos_weight=pw)
        ref = nn.BCEWithLogitsLoss(reduction=red, pos_weight=pw.double())
        assert_close(ours(x, t), ref(x.double(), t.double()), torch.float32, red)
        assert_close(ours(x, 1.0), ref(x.double(), torch.ones_like(t).double()), torch.float32, red + " label")


@pytest.mark.parametrize("xd, td, wd, which", [
    (torch.float32, torch.float64, None, None), (torch.float64, torch.float32, None, None),
    (torch.float32, torch.float32, torch.float64, "weight"),
    (torch.float32, torch.float32, torch.float64, "pos_weight"),
    (torch.float32, torch.bfloat16, None, None), (torch.float32, torch.float32, torch.int64, "weight"),
    (torch.float32, torch.float32, torch.bool, "weight")])
def test_bce_mixed_dtypes_as_stock(impl, xd, td, wd, which):
    """Mixed dtypes give stock's result dtype (the target's: stock builds its loss in place on 1 - target); the
    value is the computation in the common dtype of input and target (stock rounds parts of its composition to
    the narrower one first; the reference here is float64); the input's gradient comes back in the input's dtype."""
    _, dev = impl
    torch.manual_seed(0)
    x = torch.randn(6, 3, device=dev).to(xd).requires_grad_()
    t = torch.rand(6, 3, device=dev).to(td)
    w = None if wd is None else (torch.rand(3, device=dev) * 3).to(wd)
    kw = {} if which is None else {which: w}
    ours = FF.binary_cross_entropy_with_logits(x, t, **kw)
    assert ours.dtype == nn.functional.binary_cross_entropy_with_logits(x, t, **kw).dtype == td
    xr = x.detach().double().requires_grad_()
    ref = nn.functional.binary_cross_entropy_with_logits(
        xr, t.double(), **{k: v.to(torch.promote_types(xd, td)).double() for k, v in kw.items()})
    assert_close(ours, ref, td, "loss")
    (g,), (gr,) = torch.autograd.grad(ours, x), torch.autograd.grad(ref, xr)
    assert g.dtype == xd
    assert_close(g, gr, xd, "input gradient")
    if which is None:  # the fused head and loss: the same promotion (through the unfused composition)
        hw = torch.randn(1, 3, device=dev, dtype=xd)
        loss, logits = FF.linear_bce_with_logits(x.detach(), hw, None, t[:, 0])
        stock = nn.functional.binary_cross_entropy_with_logits((x.detach() @ hw.T)[:, 0], t[:, 0])
        assert loss.dtype == stock.dtype and logits.dtype == xd
        assert_close(logits, (x.detach().double() @ hw.double().T)[:, 0], xd, "linear_bce logits")
        ref = nn.functional.binary_cross_entropy_with_logits(logits.double(), t[:, 0].double())
        assert_close(loss, ref, td, "linear_bce loss")


# ----------------------------------------------------------------------------------------------- fuse/unfuse
def test_fuse_sequential_same_outputs_grads_and_keys(impl):
    _, dev = impl
    torch.manual_seed(0)
    model = stock_classifier().to(dev)
    fused, report = fastgan.fuse(model, return_report=True)
    assert len(report) == 4, report
    assert isinstance(fused[0], fastgan.nn.FusedConv2d) and fused[0].act == "lrelu" and fused[0].alpha == 0.2
    assert isinstance(fused[2][0], fastgan.nn.FusedConv2d) and fused[2][0].act == "relu"
    assert isinstance(fused[4], fastgan.nn.FusedLinear) and fused[6].act == "sigmoid"
    assert isinstance(model[0], nn.Conv2d) and not isinstance(model[0], fastgan.nn.FusedConv2d), "not in place"
    assert list(fused.state_dict()) == list(model.state_dict())
    x = torch.randn(5, 1, 28, 28, device=dev)
    y0, y1 = model(x), fused(x)
    assert_close(y1, y0.double(), torch.float32, "fused output", factor=5)
    g0 = torch.autograd.grad(y0.square().sum(), list(model.parameters()))
    g1 = torch.autograd.grad(y1.square().sum(), list(fused.parameters()))
    for a, b in zip(g1, g0):
        assert_close(a, b.double(), torch.float32, "fused grads", factor=20)
    back = fastgan.unfuse(fused)
    assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
    assert torch.equal(back(x), model(x))


def test_fuse_training_continues_identically():
    torch.manual_seed(1)
    model = stock_classifier().double()
    fused = fastgan.fuse(model)
    x, t = torch.randn(16, 1, 28, 28, dtype=torch.float64), torch.rand(16, 10, dtype=torch.float64)
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (model, fused)]
    for _ in range(3):
        for m, o in zip((model, fused), opts):
            o.zero_grad()
            nn.functional.mse_loss(m(x), t).backward()
            o.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), fused.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11), k


def test_fuse_keeps_custom_forward_code_and_state():
    """A custom module's forward is not rewritten (a trace would freeze its Python state: a fade-in weight set later,
    the training flag, an optional argument's branch; and drop what the trace does not touch): only its Sequential
    chains are fused. The module keeps its type, parameters, buffers, methods and hooks; fuse(inplace=True) converts
    it in place; unfuse round-trips exactly."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2))
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.old, self.new = nn.Conv2d(3, 2, 1), nn.Conv2d(4, 2, 1)
            self.embed = nn.Embedding(10, 4)
            self.register_buffer("w_avg", torch.zeros(4))
            self.extra = nn.Parameter(torch.zeros(3))
            self.alpha = 0.0

        def forward(self, x, y=None):
            h = nn.functional.leaky_relu(self.conv(self.body(x)), 0.2)  # left as written
            h = nn.functional.dropout(h, 0.5, training=self.training)
            if y is not None:
                h = h + self.embed(y)[:, :, None, None]
            return self.alpha * self.new(h) + (1 - self.alpha) * self.old(x)

        def truncate(self, w, psi):
            return self.w_avg + psi * (w - self.w_avg)

    torch.manual_seed(0)
    m = Block().eval()
    seen = []
    m.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    f, report = fastgan.fuse(m, return_report=True)
    assert type(f) is Block and report == ["body.0+body.1: Conv2d+LeakyReLU -> FusedConv2d(act='lrelu')"]
    assert isinstance(f.body[0], fastgan.nn.FusedConv2d) and type(f.conv) is nn.Conv2d
    assert list(f.state_dict()) == list(m.state_dict()) and f.truncate(torch.ones(4), 0.5).shape == (4,)
    x, y = torch.randn(2, 3, 5, 5), torch.tensor([1, 7])
    for alpha in (0.0, 0.5):  # state set after fusing is honoured
        m.alpha = f.alpha = alpha
        for args in ((x,), (x, y)):
            torch.testing.assert_close(f(*args), m(*args), rtol=1e-5, atol=1e-6)
    f.train()
    assert not torch.equal(f(x), f(x)), "dropout follows the training flag"
    assert len(seen) == 10  # 4 calls of m, 4 + 2 of f: the hook came along
    same = fastgan.fuse(m, inplace=True)
    assert same is m and isinstance(m.body[0], fastgan.nn.FusedConv2d)
    back = fastgan.unfuse(f)
    assert type(back.body[0]) is nn.Conv2d and type(back.body[1]) is nn.LeakyReLU
    assert list(back.state_dict()) == list(Block().state_dict())


def test_fuse_leaves_non_chains_and_hooked_pairs():
    """An nn.Sequential subclass with its own forward is not a chain; a pair where either module has a hook is not
    fused (the hook would see the activation's output); a standalone LeakyReLU keeps its hooks when converted."""
    class Residual(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Linear(5, 5), nn.LeakyReLU(0.2))

        def forward(self, x):
            h = self[0](x)
            return self[1](h) + h

    torch.manual_seed(0)
    r = Residual()
    fr, rep = fastgan.fuse(r, return_report=True)
    x = torch.randn(3, 5)
    assert type(fr[0]) is nn.Linear and torch.equal(fr(x), r(x)) and rep == ["1: LeakyReLU -> fastgan.nn.LeakyReLU"]
    seq = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.LeakyReLU(0.1))
    pre = []
    seq[0].register_forward_hook(lambda mod, i, o: pre.append(o.min().item()))
    seq[4].register_forward_hook(lambda mod, i, o: pre.append("lrelu"))
    f = fastgan.fuse(seq)
    assert type(f[0]) is nn.Linear and isinstance(f[2], fastgan.nn.FusedLinear)
    assert type(f[4]) is fastgan.nn.LeakyReLU
    torch.testing.assert_close(f(x), seq(x))
    assert pre[-1] == "lrelu" and pre[-2] == pre[0], "hooks on the converted copy still fire"
    # a forward pre-hook (torch.nn.utils.spectral_norm's) sees the same input fused or not: the pair is fused
    torch.manual_seed(1)
    sn = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.2))
    fsn = fastgan.fuse(sn)
    assert isinstance(fsn[0], fastgan.nn.FusedConv2d) and list(fsn.state_dict()) == list(sn.state_dict())
    img = torch.randn(2, 3, 6, 6)
    for mode in ("train", "eval"):  # train: one power iteration per call on each (same start, same steps)
        getattr(sn, mode)(), getattr(fsn, mode)()
        torch.testing.assert_close(fsn(img), sn(img), rtol=1e-5, atol=1e-6)
    g0, g1 = (torch.autograd.grad(m(img).square().sum(), m[0].weight_orig) for m in (sn, fsn))
    torch.testing.assert_close(g0[0], g1[0], rtol=1e-5, atol=1e-6)
    # after a forward its computed weight makes torch's deepcopy refuse the model: the error says how to go on
    with pytest.raises(RuntimeError, match="fuse: the model cannot be copied .*pass inplace=True"):
        fastgan.fuse(sn)
    assert isinstance(fastgan.fuse(sn, inplace=True)[0], fastgan.nn.FusedConv2d)


def test_fuse_layers_with_torch_parametrizations():
    """Layers under torch.nn.utils.parametrizations (spectral_norm, weight_norm: GAN discriminators' usual
    form) fuse with their parametrization kept: the same outputs in train and eval mode, the same gradients of the
    original weight, the same state_dict keys; unfuse gives torch's parametrized layers back."""
    P = nn.utils.parametrizations
    torch.manual_seed(0)
    m = nn.Sequential(P.spectral_norm(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.2), nn.Flatten(),
                      P.weight_norm(nn.Linear(64, 8)), nn.Tanh())
    f, report = fastgan.fuse(m, return_report=True)
    assert report == ["0+1: ParametrizedConv2d+LeakyReLU -> FusedConv2d(act='lrelu')",
                      "3+4: ParametrizedLinear+Tanh -> FusedLinear(act='tanh')"]
    assert isinstance(f[0], fastgan.nn.FusedConv2d) and nn.utils.parametrize.is_parametrized(f[0], "weight")
    assert list(f.state_dict()) == list(m.state_dict())
    x = torch.randn(2, 3, 6, 6)
    for mode in ("train", "eval"):  # train: one power iteration per call on each (same start, same steps)
        getattr(m, mode)(), getattr(f, mode)()
        torch.testing.assert_close(f(x), m(x), rtol=1e-5, atol=1e-6)
    g0, g1 = (torch.autograd.grad(k(x).square().sum(), k[0].parametrizations.weight.original)[0] for k in (m, f))
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    back = fastgan.unfuse(f)
    assert nn.utils.parametrize.type_before_parametrizations(back[0]) is nn.Conv2d and type(back[1]) is nn.LeakyReLU
    assert list(back.state_dict()) == list(m.state_dict())
    torch.testing.assert_close(back(x), m(x), rtol=1e-5, atol=1e-6)


def test_fuse_leaves_other_modules_and_converts_loss():
    m = nn.ModuleDict({"bn": nn.BatchNorm1d(4), "lrelu": nn.LeakyReLU(0.3), "loss": nn.BCEWithLogitsLoss(),
                       "neg": nn.LeakyReLU(-0.1)})
    f, rep = fastgan.fuse(m, return_report=True)
    assert type(f["bn"]) is nn.BatchNorm1d and type(f["neg"]) is nn.LeakyReLU
    assert type(f["lrelu"]) is fastgan.nn.LeakyReLU and type(f["loss"]) is fastgan.nn.BCEWithLogitsLoss
    assert len(rep) == 2
    assert type(fastgan.unfuse(f)["loss"]) is nn.BCEWithLogitsLoss
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        fastgan.fuse("model")


def test_unfuse_directly_built_layer():
    layer = fastgan.nn.FusedLinear(3, 2, act="lrelu", alpha=0.1)
    stock = fastgan.unfuse(layer)
    x = torch.randn(4, 3)
    assert isinstance(stock[0], nn.Linear) and isinstance(stock[1], nn.LeakyReLU)
    assert torch.allclose(stock(x), layer(x), atol=1e-6)
    with pytest.raises(ValueError, match="gain"):
        fastgan.unfuse(fastgan.nn.FusedLinear(3, 2, gain=2.0))


# ------------------------------------------------------------------------------------- the rest of PyTorch
def test_save_load_and_deepcopy(tmp_path):
    torch.manual_seed(0)
    model = fastgan.fuse(stock_classifier())
    x = torch.randn(2, 1, 28, 28)
    path = tmp_path / "m.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded(x), model(x))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    stock = stock_classifier()
    stock.load_state_dict(torch.load(buf))  # a fused model's checkpoint loads into the stock model
    assert torch.allclose(stock(x), model(x), atol=1e-6)
    dup = copy.deepcopy(model)
    assert torch.equal(dup(x), model(x)) and dup[0].weight is not model[0].weight


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = fastgan.fuse(stock_classifier())
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)

    def step(m):
        out = m(x)
        loss = FF.binary_cross_entropy_with_logits(out, 1.0)
        return out, torch.autograd.grad(loss, [x] + list(model.parameters()))
    (y0, g0), (y1, g1) = step(model), step(compiled)
    assert torch.allclose(y0, y1, atol=1e-5)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast(impl, dtype):
    _, dev = impl
    if dev.type == "cpu" and dtype == torch.float16 and not hasattr(torch, "get_autocast_dtype"):
        pytest.skip("old torch")
    torch.manual_seed(0)
    stock = stock_classifier()[:-1].to(dev)  # ends with a Linear: logits
    fused = fastgan.fuse(stock)
    x = torch.randn(4, 1, 28, 28, device=dev)
    with torch.autocast(dev.type, dtype=dtype):
        y_s = stock(x)
        y_f = fused(x)
        l_s = nn.functional.binary_cross_entropy_with_logits(y_s, torch.ones_like(y_s))
        l_f = FF.binary_cross_entropy_with_logits(y_f, 1.0)
    assert y_f.dtype == y_s.dtype == dtype
    assert l_f.dtype == l_s.dtype == torch.float32, "the loss stays in float32 under autocast"
    assert_close(y_f, y_s.double(), torch.bfloat16, "autocast logits", factor=2)
    l_f.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fused.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_head_and_float64(impl, dtype):
    """Under autocast, as torch: a D head + loss on the features of an autocast layer with float32 parameters and
    a float32 target (the head in the autocast dtype, the loss in float32); float64 tensors are never cast."""
    _, dev = impl
    if dev.type == "cpu" and dtype == torch.float16 and not hasattr(torch, "get_autocast_dtype"):
        pytest.skip("old torch")
    feats = torch.randn(6, 8, device=dev).to(dtype)
    w, b = torch.randn(1, 8, device=dev, requires_grad=True), torch.randn(1, device=dev, requires_grad=True)
    t, lw = torch.rand(6, device=dev), torch.rand(6, device=dev)
    with torch.autocast(dev.type, dtype=dtype):
        loss, logits = FF.linear_bce_with_logits(feats, w, b, t, loss_weight=lw)
        want_logits = nn.functional.linear(feats, w, b)[:, 0]
        want = (nn.functional.binary_cross_entropy_with_logits(want_logits, t, reduction="none") * lw).mean()
        x64 = torch.randn(3, 5, device=dev, dtype=torch.float64)
        w64 = torch.randn(4, 5, device=dev, dtype=torch.float64)
        y64, s64 = FF.linear(x64, w64, act="relu"), nn.functional.linear(x64, w64)
        c64 = FF.conv2d(torch.randn(1, 2, 5, 5, device=dev, dtype=torch.float64),
                        torch.randn(3, 2, 3, 3, device=dev, dtype=torch.float64))
        l64 = FF.binary_cross_entropy_with_logits(y64, 1.0)
    assert logits.dtype == want_logits.dtype == dtype and loss.dtype == want.dtype == torch.float32
    assert_close(loss, want.double(), torch.bfloat16, "autocast head loss", factor=2)
    assert_close(logits, want_logits.double(), torch.bfloat16, "autocast head logits", factor=2)
    loss.backward()
    assert w.grad.dtype == b.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
    with torch.autocast(dev.type, dtype=dtype):  # a bias of any dtype after an autocast layer takes x's
        assert FF.bias_act(feats, torch.randn(8, device=dev, dtype=torch.float64), act="relu").dtype == dtype
    assert y64.dtype == s64.dtype == c64.dtype == l64.dtype == torch.float64
    assert_close(y64, torch.relu(s64), torch.float64, "float64 under autocast")


def test_channels_last_model(impl):
    _, dev = impl
    torch.manual_seed(0)
    model = fastgan.fuse(stock_classifier()).to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 28, 28, device=dev).to(memory_format=torch.channels_last)
    assert model[0](x).is_contiguous(memory_format=torch.channels_last)
    ref = reference(lambda: model(x))
    assert_close(model(x), ref.double(), torch.float32, "channels_last model")


def test_torch_compile_fullgraph_conv_transpose():
    """FusedConvTranspose2d (the conv kernels' data-gradient path with a shape-only operand) under
    torch.compile(fullgraph=True): same output and gradients as eager."""
    torch.manual_seed(0)
    m = fastgan.nn.FusedConvTranspose2d(4, 3, 4, stride=2, padding=1, act="lrelu", alpha=0.2)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)

    def step(mod):
        y = mod(x)
        return y, torch.autograd.grad(y.square().sum(), [x, m.weight, m.bias])
    (y0, g0), (y1, g1) = step(m), step(compiled)
    assert torch.allclose(y0, y1, atol=1e-5)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "plain"])
def test_torch_compile_fullgraph_without_gradients(mode):
    """Every fused function compiled with fullgraph=True where no input requires gradients (evaluation, sampling,
    an EMA generator): torch.compile traces the op's Function differently then (no ctx: forward's signature must
    match the call's arguments). Same results as eager."""
    torch.manual_seed(0)
    x2, w2, b2 = torch.randn(5, 6), torch.randn(4, 6), torch.randn(4)
    img, k, kb = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(4)
    t = torch.rand(5)
    head_w, head_b = torch.randn(1, 6), torch.randn(1)

    def run():
        return [FF.bias_act(x2, b2[:1].expand(6).contiguous(), act="tanh"),
                FF.leaky_relu(x2, 0.1),
                FF.linear(x2, w2, b2, act="lrelu"),
                FF.conv2d(img, k, kb, stride=2, padding=1, act="relu"),
                FF.conv_transpose2d(img, k.transpose(0, 1).contiguous(), None, stride=2, act="sigmoid"),
                FF.binary_cross_entropy_with_logits(x2[:, 0], t),
                *FF.linear_bce_with_logits(x2, head_w, head_b, t),
                FF.sum_squares(x2)]
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    compiled = torch.compile(run, fullgraph=True)
    with context() if context else torch.enable_grad():
        eager, got = run(), compiled()
    for a, b in zip(eager, got):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_torch_compile_dynamic_shapes():
    """torch.compile(fullgraph=True, dynamic=True) over fused layers (their float arguments may be traced
    symbolically): outputs and gradients as eager for two batch sizes."""
    torch.manual_seed(0)
    model = fastgan.fuse(stock_classifier())
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for n in (3, 5):
        x = torch.randn(n, 1, 28, 28, requires_grad=True)
        y0, y1 = model(x), compiled(x)
        assert torch.allclose(y0, y1, atol=1e-5)
        g0, g1 = (torch.autograd.grad(y.sum(), [x, model[0].weight]) for y in (y0, y1))
        for a, b in zip(g0, g1):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["spectral_norm", "autocast"])
def test_torch_compile_fullgraph_with_computed_weights(case):
    """A fused layer whose weight is computed, not a parameter (spectral norm's parametrization; autocast's cast
    to bfloat16), under torch.compile(fullgraph=True): no graph break, the same outputs and gradients as eager."""
    torch.manual_seed(0)
    conv = fastgan.nn.FusedConv2d(3, 4, 3, act="lrelu", alpha=0.2)
    if case == "spectral_norm":
        conv = nn.utils.parametrizations.spectral_norm(conv).eval()  # eval: no power iteration between the runs
    model = nn.Sequential(conv, nn.Flatten(1), fastgan.nn.FusedLinear(64, 1))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    ac = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast")
    outs = []
    for m in (model, compiled):
        with ac:
            y = m(x)
        outs.append((y, torch.autograd.grad(y.float().sum(), [x, model[2].weight])))
    (y0, g0), (y1, g1) = outs
    tol = 1e-5 if case == "spectral_norm" else 2e-2
    assert y0.dtype == y1.dtype and torch.allclose(y0.float(), y1.float(), atol=tol, rtol=tol)
    for a, b in zip(g0, g1):
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def test_torch_func_grad_and_vmap_bias_act(impl):
    _, dev = impl
    from torch.func import grad, vmap
    x, b = torch.randn(3, 4, device=dev), torch.randn(4, device=dev)
    g = grad(lambda x: FF.bias_act(x, b, act="sigmoid", gain=2.0).sum())(x)
    assert torch.allclose(g, 2 * torch.sigmoid(x + b) * (1 - torch.sigmoid(x + b)), atol=1e-6)
    gg = grad(lambda x: grad(lambda x: FF.bias_act(x, b, act="tanh").sum())(x).sum())(x)
    t = torch.tanh(x + b)
    assert torch.allclose(gg, -2 * t * (1 - t * t), atol=1e-5)
    y = vmap(lambda row: FF.bias_act(row, b, dim=0, act="lrelu", gain=1.0))(x)
    assert torch.allclose(y, nn.functional.leaky_relu(x + b, 0.2), atol=1e-6)


def test_vmap_bias_act_batching_rules(impl):
    """bias_act / bias_act_backward have batching rules: one op call per vmap level (no per-sample fallback,
    which would warn), batched or shared bias, any mapped dim, per-sample gradients."""
    import warnings
    from torch.func import grad, vmap
    _, dev = impl
    x = torch.randn(5, 3, 4, dtype=torch.float64, device=dev)
    b = torch.randn(5, 3, dtype=torch.float64, device=dev)
    xx = torch.randn(3, 4, 5, dtype=torch.float64, device=dev)

    def ref(r, bb, act=lambda t: nn.functional.leaky_relu(t, 0.2)):
        return act(r + bb.reshape(-1, *[1] * (r.ndim - 1)))

    def lrelu(r, bb):
        return FF.bias_act(r, bb, dim=0, act="lrelu", alpha=0.2, gain=1.0)

    def loss(bb, r):
        return FF.bias_act(r, bb, dim=0, act="sigmoid", gain=1.0).pow(2).sum()

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*batching rule.*")
        shared = vmap(lambda r: lrelu(r, b[0]))(x)
        per_sample = vmap(lrelu)(x, b)
        moved = vmap(lambda r, bb: FF.bias_act(r, bb, dim=-2, act="lrelu", alpha=0.2, gain=1.0), in_dims=(2, 0))(xx, b)
        gb = vmap(grad(loss))(b, x)
        gx = vmap(grad(loss, argnums=1))(b, x)
    assert torch.allclose(shared, torch.stack([ref(x[i], b[0]) for i in range(5)]))
    assert torch.allclose(per_sample, torch.stack([ref(x[i], b[i]) for i in range(5)]))
    assert torch.allclose(moved, torch.stack([ref(xx[:, :, i], b[i]) for i in range(5)]))
    sq = lambda i: lambda bb, r: ref(r, bb, torch.sigmoid).pow(2).sum()  # noqa: E731
    assert torch.allclose(gb, torch.stack([grad(sq(i))(b[i], x[i]) for i in range(5)]))
    assert torch.allclose(gx, torch.stack([grad(sq(i), argnums=1)(b[i], x[i]) for i in range(5)]))


def _ddp_worker(rank, world, port, results):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(fastgan.fuse(stock_classifier()[:-1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 1, 28, 28, generator=gen)
    for _ in range(2):
        opt.zero_grad()
        FF.binary_cross_entropy_with_logits(model(x[rank * 4:(rank + 1) * 4]), 1.0).backward()
        opt.step()
    results[rank] = [p.detach().clone() for p in model.module.parameters()]
    dist.destroy_process_group()


def test_ddp_two_gloo_processes():
    """DDP over fused layers: both ranks end with identical parameters equal to one process on the full batch."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the manager's server process spawned, not forked: this process already runs threads (Python 3.12 warns)
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)
    torch.manual_seed(0)
    single = fastgan.fuse(stock_classifier()[:-1])
    opt = torch.optim.SGD(single.parameters(), lr=0.1)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        opt.zero_grad()
        FF.binary_cross_entropy_with_logits(single(x), 1.0).backward()
        opt.step()
    for a, b, c in zip(results[0], results[1], single.parameters()):
        assert torch.equal(a, b)
        assert torch.allclose(a, c.detach(), atol=1e-6)


def test_forward_mode_ad_is_a_clear_error():
    if fastgan.functional._impl.resolve(torch.device("cpu")) == "torch":
        pytest.skip("the reference path supports forward mode")
    x = torch.randn(3)
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.jvp(lambda x: FF.bias_act(x, act="relu"), (x,), (x,))


# ------------------------------------------------------------- the ops' autograd behaves as ATen's own
def _cpp_case(op, dev, dtype=torch.float64):
    """(fn, inputs, which input is saved and may be modified in place, op name) for a plain call."""
    d = dict(dtype=dtype, device=dev)
    if op == "bias_act":
        return (lambda x, b: FF.bias_act(x, b, act="lrelu") * 1), [torch.randn(3, 4, 5, **d), torch.randn(4, **d)], \
            None, "bias_act"
    if op == "dense":
        return (lambda x, w, b: FF.linear(x, w, b, act="sigmoid")), [torch.randn(6, 5, **d), torch.randn(3, 5, **d),
                                                                    torch.randn(3, **d)], 0, "dense"
    if op == "dense_linear":
        return (lambda x, w, b: FF.linear(x, w, b)), [torch.randn(6, 5, **d), torch.randn(1, 5, **d),
                                                      torch.randn(1, **d)], 1, "dense"
    if op == "conv2d":
        return (lambda x, w, b: FF.conv2d(x, w, b, padding=1, act="lrelu")), [
            torch.randn(2, 3, 6, 5, **d), torch.randn(4, 3, 3, 3, **d), torch.randn(4, **d)], 1, "conv2d"
    return (lambda x: FF.binary_cross_entropy_with_logits(x, 0.9)), [torch.randn(7, **d)], 0, "sigmoid_bce"


CPP_OPS = ["bias_act", "dense", "dense_linear", "conv2d", "bce"]


def _native_only(impl):
    if impl[0] == "torch":
        pytest.skip("the reference path is stock torch's autograd")


@pytest.mark.parametrize("op", CPP_OPS)
def test_cpp_node_graph_life(impl, op):
    """The op's node in the graph; retain_graph keeps the saved tensors; a second backward without it is the usual
    error; a saved input modified in place is caught by the version check."""
    _native_only(impl)
    fn, ins, saved, name = _cpp_case(op, impl[1])
    ins = [t.requires_grad_() for t in ins]
    out = fn(*ins)
    node = out.grad_fn if op != "bias_act" else out.grad_fn.next_functions[0][0]  # (bias_act's output * 1)
    assert node.name().startswith(f"fastgan_{name}"), node.name()
    first = torch.autograd.grad(out.sum(), ins, retain_graph=True)
    again = torch.autograd.grad(out.sum(), ins)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(out.sum(), ins)
    if saved is not None:
        out = fn(*ins)
        with torch.no_grad():
            ins[saved].add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


@pytest.mark.parametrize("op", CPP_OPS)
def test_cpp_node_gradients_for_any_subset(impl, op):
    """Only the inputs that require grad get one (the others' backward products are skipped), each equal to the
    reference's; the upstream gradient is an expanded one (a `.sum()` loss) and a dense random one."""
    _native_only(impl)
    fn, ins, _, _ = _cpp_case(op, impl[1])
    n = len(ins)
    for mask in range(1, 1 << n):
        for upstream in ("sum", "random"):
            def run(f):
                xs = [t.detach().clone().requires_grad_(bool(mask >> i & 1)) for i, t in enumerate(ins)]
                out = f(*xs)
                loss = out.sum() if upstream == "sum" else (out * torch.randn_like(out, generator=gen)).sum()
                wanted = [t for t in xs if t.requires_grad]
                return [out.detach(), *torch.autograd.grad(loss, wanted)]
            gen = torch.Generator(impl[1]).manual_seed(mask)
            got = run(fn)
            gen = torch.Generator(impl[1]).manual_seed(mask)
            with fastgan.use_impl("torch"):
                want = run(fn)
            assert len(got) == len(want)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", CPP_OPS)
def test_cpp_node_saved_tensor_hooks(impl, op):
    """torch.autograd.graph.saved_tensors_hooks see every tensor the node saves (activation checkpointing and
    offloading rely on it), and what unpack returns is what the backward uses."""
    _native_only(impl)
    fn, ins, _, _ = _cpp_case(op, impl[1])
    ins = [t.requires_grad_() for t in ins]
    plain = torch.autograd.grad(fn(*ins).sum(), ins)
    packed, unpacked = [], []

    def pack(t):
        packed.append(t.shape)
        return t.clone()

    def unpack(t):
        unpacked.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn(*ins)
    assert packed, "no saved tensor went through the hooks"
    hooked = torch.autograd.grad(out.sum(), ins)
    assert sorted(map(tuple, unpacked)) == sorted(map(tuple, packed))
    for a, b in zip(plain, hooked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Tagged(torch.Tensor):
    """A tensor subclass that records the functions its __torch_function__ sees."""
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("which", ["dense_weight", "dense_bias", "conv_weight", "bias_act_bias", "bce_target"])
def test_subclass_in_any_tensor_argument_sees_the_op(impl, which):
    """A tensor subclass in any argument (not only the first): its __torch_function__ sees the fused op and the
    result is of its type, with the values and gradients of the plain call."""
    _native_only(impl)
    dev = impl[1]
    x = torch.randn(2, 3, 5, 4, device=dev)
    if which.startswith("dense"):
        fn, ins, tag = (lambda x, w, b: FF.linear(x, w, b, act="lrelu")), [x, torch.randn(6, 4, device=dev),
                                                                          torch.randn(6, device=dev)], "dense"
    elif which == "conv_weight":
        fn, ins, tag = (lambda x, w, b: FF.conv2d(x, w, b, padding=1, act="tanh")), [
            x, torch.randn(2, 3, 3, 3, device=dev), torch.randn(2, device=dev)], "conv2d"
    elif which == "bias_act_bias":
        fn, ins, tag = (lambda x, b: FF.bias_act(x, b, act="sigmoid")), [x, torch.randn(3, device=dev)], "bias_act"
    else:
        fn, ins, tag = (lambda x, t: FF.binary_cross_entropy_with_logits(x, t)), [x, torch.rand_like(x)], \
            "sigmoid_bce"
    k = {"dense_weight": 1, "dense_bias": 2, "conv_weight": 1, "bias_act_bias": 1, "bce_target": 1}[which]
    plain = [t.clone().requires_grad_(i != 1 or which != "bce_target") for i, t in enumerate(ins)]
    tagged = [t.clone().requires_grad_(i != 1 or which != "bce_target") for i, t in enumerate(ins)]
    tagged[k] = tagged[k].detach().as_subclass(_Tagged).requires_grad_(plain[k].requires_grad)
    _Tagged.seen = []
    out = fn(*tagged)
    assert tag in _Tagged.seen and type(out) is _Tagged, (_Tagged.seen, type(out))
    want = fn(*plain)
    torch.testing.assert_close(out.as_subclass(torch.Tensor), want)
    wanted = [t for t in tagged if t.requires_grad]
    got_g = torch.autograd.grad(out.sum(), wanted)
    want_g = torch.autograd.grad(want.sum(), [t for t in plain if t.requires_grad])
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b)
