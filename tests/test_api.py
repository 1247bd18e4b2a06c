"""API contract: bad inputs give errors naming the argument, implementation selection, the extension's
build information, the activation table shared by Python and C++, and the dispatcher ops' registrations."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import fastgan
import fastgan.functional as FF
from fastgan import _activations, _ext, _impl

needs_C = pytest.mark.skipif(_ext.C is None, reason=f"fastgan._C not loaded: {_ext.load_error}")

# made when a test calls them, on the device the test selects (`with torch.device(dev)`)
x4, w4 = (lambda: torch.randn(2, 3, 4, 4)), (lambda: torch.randn(5, 3, 3, 3))  # noqa: E731


@pytest.mark.parametrize("call, exc, words", [
    (lambda: FF.bias_act(torch.ones(2, 3, dtype=torch.int64)), TypeError, ["x", "floating-point"]),
    (lambda: FF.bias_act(x4(), torch.ones(4)), ValueError, ["bias", "length 3"]),
    (lambda: FF.bias_act(x4(), torch.ones(3, dtype=torch.float64)), TypeError, ["bias", "dtype"]),
    (lambda: FF.bias_act(x4(), torch.ones(3, 1)), ValueError, ["bias", "1-D"]),
    (lambda: FF.bias_act(x4(), torch.ones(3), dim=4), ValueError, ["dim"]),
    (lambda: FF.bias_act(x4(), act="swish"), ValueError, ["act", "swish", "lrelu"]),
    (lambda: FF.bias_act(x4(), act="lrelu", alpha=-1), ValueError, ["alpha"]),
    (lambda: FF.bias_act(x4(), gain=0), ValueError, ["gain"]),
    (lambda: FF.bias_act(x4(), clamp=-2), ValueError, ["clamp"]),
    (lambda: FF.bias_act("not a tensor"), TypeError, ["x", "Tensor"]),
    (lambda: FF.linear(torch.randn(2, 4), torch.randn(3, 5)), ValueError, ["input", "last dimension 5"]),
    (lambda: FF.linear(torch.randn(2, 4), torch.randn(3, 4, 1)), ValueError, ["weight", "2-D"]),
    (lambda: FF.linear(torch.randn(2, 4), torch.randn(3, 4), torch.randn(4)), ValueError, ["bias", "length 3"]),
    (lambda: FF.linear(torch.randn(2, 4), torch.randn(3, 4).double()), TypeError, ["weight", "dtype"]),
    (lambda: FF.linear(torch.randint(0, 3, (2, 4)), torch.randn(3, 4)), TypeError, ["input", "floating-point"]),
    (lambda: FF.linear(torch.randn(2, 4), torch.randn(3, 4), act="gelu"), ValueError, ["act", "gelu"]),
    (lambda: FF.conv2d(torch.randn(3, 4), w4()), ValueError, ["input", "4-D"]),
    (lambda: FF.conv2d(x4(), torch.randn(5, 3, 3)), ValueError, ["weight", "4-D"]),
    (lambda: FF.conv2d(x4(), torch.randn(5, 2, 3, 3)), ValueError, ["input", "channels"]),
    (lambda: FF.conv2d(x4(), w4(), torch.randn(4)), ValueError, ["bias", "length 5"]),
    (lambda: FF.conv2d(x4(), w4(), stride=0), ValueError, ["stride"]),
    (lambda: FF.conv2d(x4(), w4(), padding=-1), ValueError, ["padding"]),
    (lambda: FF.conv2d(x4(), w4(), padding="full"), ValueError, ["padding", "full"]),
    (lambda: FF.conv2d(x4(), w4(), padding="same", stride=2), ValueError, ["padding", "strided"]),
    (lambda: FF.conv2d(x4(), w4(), groups=0), ValueError, ["groups"]),
    (lambda: FF.conv2d(x4(), w4(), stride=(1.5, 2)), TypeError, ["stride", "pair of ints"]),  # not truncated to 1
    (lambda: FF.conv2d(x4(), w4(), padding=(0.7, 1)), TypeError, ["padding", "pair of ints"]),
    (lambda: FF.conv2d(x4(), w4(), dilation=[2.9, 1]), TypeError, ["dilation", "pair of ints"]),
    (lambda: FF.conv2d(x4(), w4(), stride=2.0), TypeError, ["stride"]),
    (lambda: FF.bias_act(x4(), torch.ones(3), dim=1.0), TypeError, ["dim", "int"]),
    (lambda: FF.bias_act(x4(), act="lrelu", alpha="a"), TypeError, ["alpha", "number"]),
    (lambda: FF.bias_act(x4(), gain=[1.0]), TypeError, ["gain", "number"]),
    (lambda: FF.bias_act(x4(), clamp="x"), TypeError, ["clamp", "number"]),
    (lambda: FF.conv2d(x4(), torch.randn(5, 3, 7, 7)), ValueError, ["input", "smaller than the dilated kernel"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4), torch.rand(5)), ValueError, ["target", "shape"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4), "1"), TypeError, ["target"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4), 1.0, reduction="avg"), ValueError,
     ["reduction", "avg"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4, 3), 1.0, weight=torch.rand(2)), ValueError,
     ["weight", "broadcast"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long)),
     TypeError, ["target", "floating-point"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4, 3), 1.0,
                                                 pos_weight=torch.ones(3, dtype=torch.complex64)),
     TypeError, ["pos_weight", "floating-point"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randint(0, 2, (4,)), 1.0), TypeError,
     ["input", "floating-point"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4), float("nan")), ValueError, ["target", "finite"]),
    (lambda: FF.binary_cross_entropy_with_logits(torch.randn(4), True), TypeError, ["target", "bool"]),
    (lambda: FF.conv2d(x4(), w4(), groups=True), ValueError, ["groups"]),
    (lambda: FF.conv2d(x4(), w4(), stride=True), TypeError, ["stride", "int"]),  # torch refuses bools too
    (lambda: FF.conv2d(x4(), w4(), padding=(1, False)), TypeError, ["padding", "int"]),
    (lambda: FF.conv2d(x4(), w4(), stride=10 ** 20), ValueError, ["stride", "2**63"]),
    (lambda: FF.linear_bce_with_logits(torch.randn(4, 3), torch.randn(1, 3), None, 1.0,
                                       loss_weight=torch.rand(4, 1)), ValueError, ["loss_weight", "broadcast"]),
    (lambda: FF.linear_bce_with_logits(torch.randn(4, 3), torch.randn(1, 3), None, 1.0,  # (the unfused route)
                                       loss_weight=torch.ones(5, dtype=torch.long)), ValueError,
     ["loss_weight", "broadcast"]),
    (lambda: FF.linear(torch.randn(2, 4).to_sparse(), torch.randn(3, 4)), TypeError, ["input", "dense", "sparse"]),
])
def test_bad_inputs_name_the_argument(impl, call, exc, words):
    _, dev = impl
    with torch.device(dev), pytest.raises(exc) as e:
        call()
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_argument_normalisation_matches_on_every_path(impl):
    """The compiled entry points skip the Python checks until the C++ glue rejects a call (fastgan.functional); what
    the checked path accepts must still be accepted: a dim without a bias is ignored, pairs may be lists, stride
    and padding plain ints, and the constant BCE label an int."""
    _, dev = impl
    with torch.device(dev):  # the factories below make their tensors there
        x = torch.randn(2, 3, 5, 5)
        torch.testing.assert_close(FF.bias_act(x, None, dim=7, act="relu"), torch.relu(x) * 2 ** 0.5)
        w = torch.randn(4, 3, 3, 3)
        ref = torch.nn.functional.conv2d(x, w, None, (2, 1), (1, 0))
        torch.testing.assert_close(FF.conv2d(x, w, None, [2, 1], [1, 0]), ref)
        torch.testing.assert_close(FF.conv2d(x, w, None, (2, 1), torch.Size([1, 0])), ref)
        # integer-like values as torch takes them for int[2] arguments (operator.index): NumPy ints, 0-d int tensors
        torch.testing.assert_close(FF.conv2d(x, w, None, (np.int64(2), torch.tensor(1)), [np.int32(1), 0]), ref)
        torch.testing.assert_close(FF.bias_act(x, torch.ones(5), dim=np.int64(-1)), x + 1)
        wg = w[:3, :1]  # groups as an integer 0-d tensor, as torch takes it
        torch.testing.assert_close(FF.conv2d(x, wg, groups=torch.tensor(3)),
                                   torch.nn.functional.conv2d(x, wg, groups=3))
        h, hw, lw = torch.randn(4, 3), torch.randn(1, 3), torch.tensor([1, 2, 0, 3])  # integer loss weights too
        torch.testing.assert_close(FF.linear_bce_with_logits(h, hw, None, 1.0, loss_weight=lw)[0],
                                   torch.nn.functional.binary_cross_entropy_with_logits((h @ hw.T)[:, 0],
                                                                                        torch.ones(4), lw))
        logits = torch.randn(6)
        torch.testing.assert_close(FF.binary_cross_entropy_with_logits(logits, 1),
                                   torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(6)))


def test_per_sample_checks_run_under_vmap(impl):
    """Under torch.func.vmap the batching rules only see batched tensors, so the per-sample checks must still run
    (the compiled fast path is not taken under a transform)."""
    _, dev = impl
    with torch.device(dev):
        X, b = torch.randn(3, 4, 5), torch.randn(5)
        for d in (5, -3):
            with pytest.raises(ValueError, match="dim"):
                torch.func.vmap(lambda x: FF.bias_act(x, b, dim=d))(X)
        with pytest.raises(ValueError, match="x: a bias needs at least a 1-D input"):
            torch.func.vmap(lambda x: FF.bias_act(x, torch.arange(3.0)))(torch.zeros(3))
        torch.testing.assert_close(torch.func.vmap(lambda x: FF.bias_act(x, b, dim=1))(X), X + b)


@needs_C
@pytest.mark.parametrize("call, words", [
    (lambda ns: ns.bias_act(torch.ones(3, dtype=torch.int32), None, 0, "linear", 0.0, 1.0, -1.0), ["x", "floating"]),
    (lambda ns: ns.bias_act(torch.ones(3), torch.ones(2), 0, "linear", 0.0, 1.0, -1.0), ["b", "length 3"]),
    (lambda ns: ns.bias_act(torch.ones(3), None, 0, "mish", 0.0, 1.0, -1.0), ["act", "mish", "sigmoid"]),
    (lambda ns: ns.bias_act(torch.ones(3), None, 5, "linear", 0.0, 1.0, -1.0), ["dim"]),
    (lambda ns: ns.bias_act(torch.ones(3), None, 0, "linear", 0.0, -1.0, -1.0), ["gain"]),
    (lambda ns: ns.dense(torch.ones(2, 3), torch.ones(4, 2), None, "linear", 0.0, 1.0, -1.0), ["x", "last dimension"]),
    (lambda ns: ns.dense(torch.ones(2, 3), torch.ones(4, 3).double(), None, "linear", 0.0, 1.0, -1.0), ["w", "dtype"]),
    (lambda ns: ns.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], 1, "linear",
                          0.0, 1.0, -1.0), ["channels"]),
    (lambda ns: ns.sigmoid_bce(torch.ones(3), torch.ones(4), 0.0, None, None, 1), ["target", "shape"]),
    (lambda ns: ns.sigmoid_bce(torch.ones(3), None, 0.0, None, None, 7), ["reduction"]),
    (lambda ns: ns.conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3), None, [1, 1], [0, 0], [2 ** 62, 1], 1,
                          "linear", 0.0, 1.0, -1.0), ["dilation", "below 2^31"]),
    # a meta tensor among tensors with data: the dispatcher picks the fake kernel, which must refuse the mix
    (lambda ns: ns.bias_act(torch.ones(3, 4), torch.ones(4, device="meta"), 1, "relu", 0.0, 1.0, -1.0),
     ["one device", "meta", "cpu"]),
    (lambda ns: ns.adam_([torch.ones(3)], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)],
                         [torch.zeros((), device="meta")], 0.1, 0.9, 0.99, 1e-8, 0.0), ["one device", "meta"]),
])
def test_ops_check_arguments_in_cpp(call, words):
    """Direct callers of torch.ops.fastgan.* get the same kind of messages from the C++ glue."""
    with pytest.raises((RuntimeError, ValueError, TypeError, IndexError)) as e:
        call(torch.ops.fastgan)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


@pytest.mark.parametrize("op", ["linear", "conv2d", "bias_act", "bce"])
def test_device_mismatch_is_reported(impl, op):
    """An argument on another device than the input (here: meta, which every machine has) is named."""
    _, dev = impl
    meta = lambda *shape: torch.randn(*shape, device="meta")  # noqa: E731
    x2, x4 = torch.randn(2, 4, device=dev), torch.randn(2, 3, 6, 6, device=dev)
    cases = {
        "linear": [(lambda: FF.linear(x2, meta(3, 4)), "weight"),
                   (lambda: FF.linear(x2, torch.randn(3, 4, device=dev), meta(3)), "bias")],
        "conv2d": [(lambda: FF.conv2d(x4, meta(5, 3, 3, 3)), "weight"),
                   (lambda: FF.conv2d(x4, torch.randn(5, 3, 3, 3, device=dev), meta(5)), "bias")],
        "bias_act": [(lambda: FF.bias_act(x4, meta(3)), "bias")],
        "bce": [(lambda: FF.binary_cross_entropy_with_logits(x2, meta(2, 4)), "target"),
                (lambda: FF.binary_cross_entropy_with_logits(x2, 1.0, weight=meta(4)), "weight"),
                (lambda: FF.binary_cross_entropy_with_logits(x2, 1.0, pos_weight=meta(4)), "pos_weight")],
    }[op]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"{name}: expected a tensor on {x2.device}"):
            call()


@needs_C
def test_cuda_gemm_route_setting():
    """fastgan.cuda_gemm_route: a context manager over the process-wide CUDA routing; bad names are clear errors."""
    C = _ext.C
    assert C.cuda_gemm_route() in ("auto", "kernels", "aten")
    before = C.cuda_gemm_route()
    with fastgan.cuda_gemm_route("kernels"):
        assert C.cuda_gemm_route() == "kernels"
        with fastgan.cuda_gemm_route("aten"):
            assert C.cuda_gemm_route() == "aten"
        assert C.cuda_gemm_route() == "kernels"
    assert C.cuda_gemm_route() == before
    with pytest.raises(ValueError, match="route: expected one of 'auto', 'kernels', 'aten', got 'cublas'"):
        fastgan.cuda_gemm_route("cublas")
    assert C.cuda_gemm_route() == before


@pytest.mark.skipif(_ext.C is None or not _ext.has_cuda(), reason="needs fastgan._C with CUDA kernels")
def test_cuda_pdl_setting(monkeypatch):
    """fastgan.cuda_pdl: off unless FASTGAN_CUDA_PDL=1 asked for it, a bool setting; bad values are clear errors."""
    before = _ext.C.cuda_pdl()
    assert before == (os.environ.get("FASTGAN_CUDA_PDL", "0") == "1")
    with fastgan.cuda_pdl(not before):
        assert _ext.C.cuda_pdl() is (not before)
    assert _ext.C.cuda_pdl() is before
    with pytest.raises(TypeError, match="cuda_pdl: expected True or False, got 1"):
        fastgan.cuda_pdl(1)
    assert _ext.C.cuda_pdl() is before
    # the environment's value is read by a fresh process; a bad one is named when it is first read
    r = _run_py("import fastgan._ext as e; print(e.C.cuda_pdl())", FASTGAN_CUDA_PDL="1")
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
    r = _run_py("import fastgan._ext as e; e.C.cuda_pdl()", FASTGAN_CUDA_PDL="yes")
    assert r.returncode != 0 and "FASTGAN_CUDA_PDL: expected 0 or 1, got 'yes'" in r.stderr


@pytest.mark.parametrize("setting", ["use_impl", "cuda_gemm_route", "cuda_pdl"])
def test_settings_as_setter_context_and_decorator(setting):
    """use_impl, cuda_gemm_route and cuda_pdl work like torch.set_grad_enabled: a plain call sets for good, `with`
    restores on exit (also for an object entered twice), a decorator applies per call and changes nothing when
    applied."""
    if setting != "use_impl" and _ext.C is None:
        pytest.skip("needs fastgan._C")
    if setting == "cuda_pdl" and not _ext.has_cuda():
        pytest.skip("needs fastgan._C with CUDA kernels")
    make = getattr(fastgan, setting)
    get, a, b = {
        "use_impl": (lambda: _impl._current, "torch", "auto"),  # the raw setting (None: environment / auto)
        "cuda_gemm_route": (lambda: _ext.C.cuda_gemm_route(), "aten", "kernels"),
        "cuda_pdl": (lambda: _ext.C.cuda_pdl(), True, False),
    }[setting]
    before = get()
    try:
        @make(a)
        def f():
            return get()
        assert get() == before  # applying the decorator changes nothing
        assert f() == a and f() == a and get() == before
        ctx = make(b)  # constructed: set now, like a plain call
        assert get() == b
        with ctx:
            assert get() == b
        assert get() == before  # the first `with` restores what was there before construction
        with ctx:
            assert get() == b
            with make(a):
                assert get() == a
            assert get() == b
        assert get() == before
        make(a)
        assert get() == a  # a plain call stays
    finally:
        make._set(before)
    assert get() == before


def test_use_impl_and_available_impls():
    names = fastgan.available_impls()
    assert names[0] == "auto" and "torch" in names
    with fastgan.use_impl("torch"):
        assert _impl.current() == "torch"
        with fastgan.use_impl("auto"):
            assert _impl.current() == "auto"
        assert _impl.current() == "torch"
    with pytest.raises(ValueError, match="impl: unknown implementation 'fast'"):
        fastgan.use_impl("fast")


def test_unavailable_impl_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_ext, "C", None)
    monkeypatch.setattr(_ext, "load_error", "fastgan._C is not built (test)")
    with pytest.raises(RuntimeError, match="implementation 'native' is not available.*not built"):
        fastgan.use_impl("native")


def test_env_var_selects_impl(monkeypatch):
    monkeypatch.setenv("FASTGAN_IMPL", "torch")
    assert _impl.current() == "torch"
    monkeypatch.setenv("FASTGAN_IMPL", "bogus")
    with pytest.raises(RuntimeError, match="FASTGAN_IMPL='bogus'"):
        _impl.current()


def test_activation_table_matches_cpp():
    if _ext.C is None:
        pytest.skip("fastgan._C not loaded")
    assert dict(_ext.C.activations()) == {n: a.code for n, a in _activations.ACTIVATIONS.items()}


@needs_C
def test_build_info():
    info = _ext.build_info()
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    if info["with_emu"] and info.get("compiler", "").startswith(("gcc", "clang")):
        # the emulated kernels carry the access hooks of the global race check and the programmatic-launch check:
        # without them both would pass everything without a word
        assert info["emu_instrumented"], info
    if info["with_cuda"]:
        # the archs this build was made for (TORCH_CUDA_ARCH_LIST, or the default), whatever they are: not one
        # build's list (the GPU check builds sm_90 only)
        import os
        want = os.environ.get("TORCH_CUDA_ARCH_LIST")
        assert info["cuda_archs"] and (want is None or info["cuda_archs"] == want), info["cuda_archs"]
        if torch.cuda.is_available():  # and they cover the visible device
            from fastgan.doctor import _arch_covered
            assert _arch_covered(torch.cuda.get_device_capability(0), info["cuda_archs"])


def test_build_records_the_sources_it_was_built_from(tmp_path, monkeypatch):
    """_C carries the digest of csrc/ + setup.py it was compiled from: the tree it is imported from matches it (this
    suite's build is fresh), and a tree that differs by one byte, one renamed file or one new file is named as stale
    with the fix; a new *.md file (prose) is not."""
    from fastgan import _source
    info = _ext.build_info()
    tree = _source.tree_digest(_source.package_tree())
    if _ext.C is None or tree is None:
        pytest.skip("needs fastgan._C and a source checkout")
    assert info["source_digest"] == tree, _ext.stale_reason()
    assert _ext.stale_reason() is None

    (tmp_path / "csrc" / "ops").mkdir(parents=True)
    (tmp_path / "setup.py").write_text("setup()\n")
    (tmp_path / "csrc" / "ops" / "a.cpp").write_text("int a;\n")
    seen = {_source.tree_digest(str(tmp_path))}
    (tmp_path / "csrc" / "ops" / "a.cpp").write_text("int b;\n")
    seen.add(_source.tree_digest(str(tmp_path)))
    (tmp_path / "csrc" / "ops" / "a.cpp").rename(tmp_path / "csrc" / "a.cpp")
    seen.add(_source.tree_digest(str(tmp_path)))
    (tmp_path / "csrc" / "b.h").write_text("")
    seen.add(_source.tree_digest(str(tmp_path)))
    assert len(seen) == 4 and all(d and len(d) == 16 for d in seen), seen
    before = _source.tree_digest(str(tmp_path))
    (tmp_path / "csrc" / "README.md").write_text("prose is not compiled\n")
    assert _source.tree_digest(str(tmp_path)) == before  # a note does not make a build stale
    assert _source.tree_digest(str(tmp_path / "csrc")) is None  # not a source tree
    monkeypatch.setattr(_source, "package_tree", lambda: str(tmp_path))
    msg = _ext.stale_reason()
    assert msg and info["source_digest"] in msg and str(tmp_path) in msg and "--no-build-isolation" in msg


def _run_py(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_version_mismatch_warns_and_falls_back():
    """A _C built against another torch: one warning naming both versions and the fix, reference path used."""
    code = (
        "import warnings, torch, importlib\n"
        "import fastgan._ext as e\n"
        "class Fake:\n"
        "    @staticmethod\n"
        "    def build_info(): return {'torch_version': '1.0.0', 'with_cuda': False, 'with_emu': False}\n"
        "import sys; sys.modules['fastgan._C'] = Fake\n"
        "e.C = None; e._load()\n"
        "assert e.C is None, 'mismatched _C accepted'\n"
        "from fastgan import functional as F\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    y = F.bias_act(torch.ones(2, 3), act='relu'); F.bias_act(torch.ones(2, 3))\n"
        "msgs = [str(x.message) for x in w]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert w[0].filename == '<string>', w[0].filename  # points at the user's call, not into fastgan\n"
        "print(msgs[0])\n")
    r = _run_py(code)
    assert r.returncode == 0, r.stderr
    assert "built against torch 1.0.0" in r.stdout and "--no-build-isolation" in r.stdout
    # the same version with another local part (CUDA flavour): also refused
    other = torch.__version__.split("+")[0] + ("+cu999" if "+cu999" not in torch.__version__ else "+cpu")
    r = _run_py(code.replace("'1.0.0'", repr(other)))
    assert r.returncode == 0, r.stderr
    assert f"built against torch {other}" in r.stdout


def test_import_never_compiles_and_works_without_C():
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def fake(name, *a, **k):\n"
            "    if name == 'fastgan._C' or (name == '_C' and a and a[0] and a[0].get('__name__','').startswith('fastgan')):\n"
            "        raise ImportError('No module named fastgan._C')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = fake\n"
            "import importlib\n"
            "orig = importlib.import_module\n"
            "def im(n, *a):\n"
            "    if n == 'fastgan._C': raise ImportError('No module named fastgan._C')\n"
            "    return orig(n, *a)\n"
            "importlib.import_module = im\n"
            "import torch, fastgan, fastgan.functional as F\n"
            "assert fastgan.available_impls() == ['auto', 'torch'], fastgan.available_impls()\n"
            "print(F.linear(torch.ones(2, 3), torch.ones(4, 3), act='relu').sum().item())\n"
            "assert 'torch.utils.cpp_extension' not in sys.modules\n")
    r = _run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "24.0"
    assert "not built" in r.stderr and "--no-build-isolation" in r.stderr


@needs_C
@pytest.mark.parametrize("backend", ["native", "emu", "native-cuda"])
def test_opcheck(backend):
    """torch.library.opcheck: schema, fake kernels, autograd registration, AOT dispatch; on the C++ CPU kernels, on
    the emulated CUDA kernels (the same ops with the backend override set) and on a GPU."""
    impl, _, dev = backend.partition("-")
    if impl not in fastgan.available_impls():
        pytest.skip("built without emulation")
    if dev == "cuda" and not (torch.cuda.is_available() and _ext.has_cuda()):
        pytest.skip("needs CUDA and fastgan's CUDA kernels")
    with fastgan.use_impl(impl), torch.device(dev or "cpu"):  # (the cases' factories make their tensors there)
        _opcheck_all()


def _opcheck_all():
    ns = torch.ops.fastgan
    x = torch.randn(3, 4, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    w = torch.randn(6, 5, requires_grad=True)
    xc = torch.randn(2, 3, 8, 8, requires_grad=True)
    wc = torch.randn(4, 3, 3, 3, requires_grad=True)
    bc = torch.randn(4, requires_grad=True)
    lg = torch.randn(7, 2, requires_grad=True)
    cl = lambda t: t.detach().contiguous(memory_format=torch.channels_last).requires_grad_()  # noqa: E731
    cases = [
        (ns.bias_act, (x, b, 1, "lrelu", 0.2, 1.4, -1.0)),
        (ns.bias_act, (x, None, 1, "sigmoid", 0.0, 1.0, 0.5)),
        (ns.bias_act_backward, (torch.randn(3, 4, 5), torch.rand(3, 4, 5), True, 1, "tanh", 0.0, 1.0, -1.0)),
        (ns.dense, (x, w, torch.randn(6, requires_grad=True), "relu", 0.0, 1.0, -1.0)),
        (ns.conv2d, (xc, wc, bc, [2, 2], [1, 1], [1, 1], 1, "lrelu", 0.2, 1.0, -1.0)),
        # memory formats: the fake kernel's output layout must match the real one in every combination
        (ns.conv2d, (cl(xc), cl(wc), bc, [1, 1], [1, 1], [1, 1], 1, "sigmoid", 0.0, 1.0, -1.0)),
        (ns.conv2d, (cl(xc), wc, bc, [2, 2], [1, 1], [1, 1], 1, "lrelu", 0.2, 1.0, -1.0)),
        (ns.conv2d, (xc, cl(wc), None, [2, 1], [0, 1], [1, 1], 1, "relu", 0.0, 1.0, -1.0)),
        # float64: channels_last on the CPU, contiguous on CUDA (cuDNN's rule, which the fake follows)
        (ns.conv2d, (cl(xc.double()), wc.double(), None, [2, 2], [1, 1], [1, 1], 1, "relu", 0.0, 1.0, -1.0)),
        (ns.conv2d, (xc.double(), cl(wc.double()), None, [1, 1], [1, 1], [1, 1], 1, "relu", 0.0, 1.0, -1.0)),
        (ns.sigmoid_bce, (lg, None, 1.0, None, None, 1)),
        (ns.sigmoid_bce, (lg, torch.rand(7, 2), 0.0, torch.rand(2), torch.rand(7, 2) + 0.5, 0)),
        (ns.sigmoid_bce_backward, (torch.tensor(0.7), lg, None, 0.0, None, None, 2)),
        # dact_y: the double backward's product with dz's adjoint in its epilogue (y's gradient for smooth acts)
        (ns.dense, (x, w, None, "lrelu", 0.2, 1.0, -1.0, torch.rand(3, 4, 6))),
        (ns.conv2d, (xc, wc, None, [2, 2], [1, 1], [1, 1], 1, "sigmoid", 0.0, 1.0, -1.0,
                     torch.rand(2, 4, 4, 4, requires_grad=True))),
        (ns.sum_squares, (x, 0.5)),
        (ns.sum_squares_backward, (torch.tensor(0.7), torch.randn(3, 4, requires_grad=True), 0.5)),
        # in place: the schema's mutation annotations (params, moments, step counters) are what the kernels write
        (ns.adam_, ([torch.randn(4, 3), torch.randn(2)], [torch.randn(4, 3), torch.randn(2)],
                    [torch.zeros(4, 3), torch.zeros(2)], [torch.zeros(4, 3), torch.zeros(2)],
                    [torch.zeros(()), torch.zeros(())], 1e-3, 0.9, 0.999, 1e-8, 0.01)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_arch_list_coverage():
    """Which GPUs a build's TORCH_CUDA_ARCH_LIST runs on (the doctor's warning, the GPU check's use of a prebuilt
    _C): SASS on its own major version from its minor up, PTX on anything newer, '9.0a' on 9.0 only."""
    from fastgan.doctor import _arch_covered
    assert _arch_covered((9, 0), "9.0") and _arch_covered((9, 0), "8.0;9.0") and _arch_covered((9, 0), "8.0 9.0")
    assert _arch_covered((8, 6), "8.0") and not _arch_covered((8, 0), "8.6") and not _arch_covered((9, 0), "8.0")
    assert _arch_covered((9, 0), "8.0+PTX") and _arch_covered((12, 0), "8.0, 9.0+PTX")
    assert _arch_covered((9, 0), "9.0a") and not _arch_covered((10, 0), "9.0a+PTX") and not _arch_covered((9, 0), "")
    assert _arch_covered((10, 3), "10.0f") and not _arch_covered((12, 0), "10.0f+PTX")


def test_doctor_reports_versions_build_and_impl_per_op():
    """`python -m fastgan doctor`: torch / CUDA / nvcc versions, what _C was built against and for which archs,
    and which implementation each op uses on each device (CPU, and CUDA whenever torch is a CUDA build)."""
    r = subprocess.run([sys.executable, "-m", "fastgan", "doctor"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FASTGAN_IMPL": ""})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"torch {torch.__version__}" in out and "nvcc " in out and "python " in out
    from fastgan.doctor import OPS
    cpu_impl = _impl.resolve(torch.device("cpu"))
    for op in OPS:
        assert any(line.split()[:3] == [op, "cpu", cpu_impl] for line in out.splitlines()), (op, out)
    if torch.version.cuda:  # CUDA tensors' implementation is reported even without a visible device
        cuda_impl = "native" if _ext.has_cuda() else "torch"
        for op in OPS:
            assert any(line.split()[:3] == [op, "cuda", cuda_impl] for line in out.splitlines()), (op, out)
    if _ext.C is not None:
        info = _ext.build_info()
        assert f"built against torch {info['torch_version']}" in out
        assert "autograd: one torch.autograd.Function per op" in out
        if info["with_cuda"]:
            assert info["cuda_archs"] in out
    else:
        assert "fastgan._C: NOT LOADED" in out


@pytest.mark.skipif(_ext.C is None or not _ext.build_info().get("with_emu"), reason="needs the CUDA emulation")
def test_doctor_counts_kernels_per_training_step(capsys):
    """`fastgan doctor --kernels`: one trainer step under the CUDA emulation; every convolution and GEMM of the step
    is a launch of fastgan's kernels (G's three layers, D's three convolutions and head, forward and backward), the
    R1 step's double backward adds launches, and the printed totals are the sums of the listed rows. (~40 s here: an
    emulated step per count at batch 128, after a warm-up step on the CPU kernels; the count depends on the shapes,
    so no smaller batch.)"""
    import argparse
    from fastgan import doctor
    assert doctor.main(argparse.Namespace(kernels=True)) == 0
    lines = capsys.readouterr().out.splitlines()
    m = re.fullmatch(r"kernels per training step: (\d+) \(plain\), (\d+) \(with R1\)", lines[0])
    assert m, lines[0]
    plain, with_r1 = int(m.group(1)), int(m.group(2))
    i_plain, i_r1 = lines.index("plain step:"), lines.index("step with R1:")
    rows = {ln.split(None, 1)[1]: int(ln.split(None, 1)[0]) for ln in lines[i_plain + 1:i_r1]}
    r1_rows = {ln.split(None, 1)[1]: int(ln.split(None, 1)[0]) for ln in lines[i_r1 + 1:]}
    assert plain == sum(rows.values()) and with_r1 == sum(r1_rows.values()) and with_r1 > plain
    assert rows["conv2d_gemm (forward / backward data)"] >= 6  # D on cat(real, fake), D(fake) for G, backward data
    # D's weight gradients: conv2 and conv3 with their input gradients in one launch, conv1's alone
    assert rows["dense_gemm"] >= 3 and rows["conv2d_backward_gemm (weight + data)"] == 2
    assert rows["conv2d_wgrad_gemm"] == 1
    assert rows.get("adam") == 2  # one launch per optimiser: fastgan's Adam, step counters included
    assert "aten::_fused_adam_" not in rows and "aten::_foreach_add_" not in rows
    assert "aten::_foreach_lerp_" not in rows  # G's EMA inside G's Adam launch
    assert "aten::div" not in r1_rows  # the logged r1 is derived when steps are logged
    assert "aten::index_select" not in rows  # a batch is a slice of the epoch's gathered images
    wgrads = ("conv2d_wgrad_gemm", "conv2d_backward_gemm (weight + data)")
    assert sum(r1_rows.get(k, 0) for k in wgrads) > sum(rows[k] for k in wgrads)
    assert not any(name.startswith("aten::") and ("view" in name or "empty" in name) for name in rows)


# ------------------------------------------------------------------ linear's fast path (csrc/eager_fast.cpp)
def _linear_node(**kwargs):
    """(the output's autograd node name, the output, the reference path's output) of one FF.linear call."""
    x, w, b = torch.randn(5, 4, requires_grad=True), torch.randn(3, 4), torch.randn(3)
    y = FF.linear(x, w, b, **kwargs)
    with fastgan.use_impl("torch"):
        ref = FF.linear(x.detach(), w, b, **kwargs)
    return (y.grad_fn.name() if y.grad_fn is not None else None), y.detach(), ref


@needs_C
def test_implementation_choice_routes_every_call(monkeypatch):
    """use_impl and FASTGAN_IMPL decide where a call runs (the op's Function for native / emu, stock autograd for the
    reference); a bad FASTGAN_IMPL is a clear error; forward AD is a clear error on the compiled path; argument
    errors name the argument; without _C the reference path runs."""
    native = "fastgan_denseBackward"
    node, y, ref = _linear_node()
    assert node == native
    torch.testing.assert_close(y, ref)
    for kwargs in (dict(act="lrelu", alpha=0.1), dict(act="tanh", gain=2, clamp=0.5),
                   dict(act="lrelu", alpha=torch.tensor(0.3))):
        node, y, ref = _linear_node(**kwargs)
        assert node == native, kwargs
        torch.testing.assert_close(y, ref)
    with fastgan.use_impl("torch"):
        assert _linear_node()[0] != native
    with fastgan.use_impl("native"):
        assert _linear_node()[0] == native
    for env, fast in (("torch", False), (" native ", True), ("auto", True), ("", True)):
        monkeypatch.setenv("FASTGAN_IMPL", env)
        assert (_linear_node()[0] == native) == fast, env
    monkeypatch.setenv("FASTGAN_IMPL", "bogus")
    with pytest.raises(RuntimeError, match="FASTGAN_IMPL='bogus'"):
        _linear_node()
    monkeypatch.delenv("FASTGAN_IMPL")
    if "emu" in fastgan.available_impls():
        with fastgan.use_impl("emu"):
            assert _ext.C.cpu_backend() == "emu"
            node, y, ref = _linear_node()
            assert node == native
            torch.testing.assert_close(y, ref)
        assert _ext.C.cpu_backend() == "native"
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level(), pytest.raises((NotImplementedError, RuntimeError), match="jvp"):
        FF.linear(fwAD.make_dual(torch.randn(5, 4), torch.randn(5, 4)), torch.randn(3, 4))
    for kwargs, word in ((dict(act="swish"), "act"), (dict(act="lrelu", alpha=-0.5), "alpha"),
                         (dict(gain=float("inf")), "gain"), (dict(clamp=-1.0), "clamp"),
                         (dict(alpha="x"), "alpha: expected a number")):
        with pytest.raises((ValueError, TypeError), match=word):
            _linear_node(**kwargs)
    with pytest.raises(ValueError, match="weight"):
        FF.linear(torch.randn(5, 4), torch.randn(3, 5))
    monkeypatch.setattr(_ext, "C", None)  # as when _C failed to load: the reference path
    monkeypatch.setattr(_ext, "load_error", "fastgan._C is not built (test)")
    monkeypatch.setattr(_ext, "_warned", True)
    assert _linear_node()[0] != native


def _setup_helpers() -> dict:
    """setup.py's definitions, without running setup() (the call sits under its last `if True:`)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")
    src = open(path).read()
    ns = {"__file__": path, "__name__": "fastgan_setup_under_test"}
    exec(compile(src[:src.rindex("\nif True:")], path, "exec"), ns)
    return ns


@pytest.mark.parametrize("line", ['exec /opt/cuda-x/bin/nvcc "$@"', 'exec "/opt/cuda-x/bin/nvcc" "$@"',
                                  "exec '/opt/cuda-x/bin/nvcc' \"$@\"", 'CUDA=1 "/opt/cuda-x/bin/nvcc" "$@";'])
def test_setup_finds_the_toolkit_behind_an_nvcc_wrapper(tmp_path, line):
    wrapper = tmp_path / "nvcc"
    wrapper.write_text(f"#!/bin/sh\n{line}\n")
    assert _setup_helpers()["wrapped_toolkits"](str(wrapper)) == ["/opt/cuda-x"]
    wrapper.write_bytes(b"\x7fELF not a script /opt/cuda-x/bin/nvcc")
    assert _setup_helpers()["wrapped_toolkits"](str(wrapper)) == []


def test_setup_turns_the_arch_list_into_gencode_flags():
    gencode = _setup_helpers()["cuda_gencode"]
    assert gencode("8.0;9.0+PTX") == ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
                                      "-gencode", "arch=compute_90,code=compute_90"]
    assert gencode("9.0a 10.0f") == ["-gencode", "arch=compute_90a,code=sm_90a",
                                     "-gencode", "arch=compute_100f,code=sm_100f"]
    for bad in ("Hopper", "9", ";"):
        with pytest.raises(SystemExit, match="TORCH_CUDA_ARCH_LIST"):
            gencode(bad)


def test_setup_compiles_kernels_once_per_command(tmp_path, monkeypatch):
    """The kernel objects every torch release links (setup.py's compile_kernels): compiled when missing or older than
    a kernel source or emulator header, reused otherwise, kept apart per command; each with its compiler output; a
    failed compile leaves no object behind."""
    for f in ("csrc/kernels/a.cu", "csrc/kernels/b.cu", "csrc/kernels/common.cuh", "csrc/emu/cuda_emu.h"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("//\n")
    past = time.time() - 100

    def age(root):  # as if written long ago (also keeps coarse file-system timestamps from deciding the test)
        for f in root.rglob("*.*"):
            if not f.name.endswith(".o"):
                os.utime(f, (past, past))

    age(tmp_path)
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    fake_cc = [sys.executable, "-c", "import sys; src = sys.argv[-3]; open(sys.argv[-1], 'w').write(src); "
               "assert not src.rsplit('/', 1)[-1].startswith('bad'); "  # (the path's hex digest may hold 'bad')
               f"open({str(calls)!r}, 'a').write(src + '\\n'); print('report of', src)"]
    compile_kernels = _setup_helpers()["compile_kernels"]
    sources = ["csrc/kernels/a.cu", "csrc/kernels/b.cu"]
    both = [("cuda", [*fake_cc, "--flag"]), ("emu", fake_cc)]

    def compiled():
        n = calls.read_text().splitlines() if calls.exists() else []
        calls.write_text("")
        return sorted(os.path.basename(s) for s in n)

    objs = compile_kernels(both, sources)
    assert compiled() == ["a.cu", "a_emu.cpp", "b.cu", "b_emu.cpp"]
    assert len(objs) == 4 and all(os.path.exists(o) for o in objs)
    cuda_a = next(o for o in objs if o.endswith(os.sep + "a.o"))
    assert open(cuda_a + ".log").read() == "report of csrc/kernels/a.cu\n"
    assert open("build/kernels/cuda.last").read().strip() == os.path.dirname(cuda_a)
    assert '#include "kernels/a.cu"' in open(next(o for o in objs if o.endswith("a_emu.o"))[:-2] + ".cpp").read()
    age(tmp_path / "build")
    assert compile_kernels(both, sources) == objs
    assert compiled() == []  # up to date: reused
    os.utime("csrc/kernels/common.cuh")  # a header every kernel may include
    compile_kernels([("cuda", [*fake_cc, "--flag"])], sources)
    assert compiled() == ["a.cu", "b.cu"]
    os.utime("csrc/emu/cuda_emu.h")
    compile_kernels([("emu", fake_cc)], sources)
    assert compiled() == ["a_emu.cpp", "b_emu.cpp"]
    other = compile_kernels([("cuda", [*fake_cc, "--other"])], sources)  # other flags: objects of their own
    assert compiled() == ["a.cu", "b.cu"] and os.path.dirname(other[0]) != os.path.dirname(cuda_a)
    (tmp_path / "csrc/kernels/bad.cu").write_text("//\n")
    with pytest.raises(SystemExit, match="compiling csrc/kernels/bad.cu failed"):
        compile_kernels([("cuda", [*fake_cc, "--other"])], sources + ["csrc/kernels/bad.cu"])
    assert not [f for f in os.listdir(os.path.dirname(other[0])) if f.startswith("bad")]


def test_setup_compiles_the_longest_kernel_sources_first(tmp_path, monkeypatch):
    """compile_kernels starts the sources that include the most code first (a GEMM unit of a dozen lines instantiating
    gemm.cuh takes longer than a long file of small kernels), so no long compile starts last; includes are followed
    transitively and counted once."""
    files = {"csrc/kernels/big.cuh": '#include "common.cuh"\n' + "// x\n" * 4000,
             "csrc/kernels/common.cuh": "// y\n" * 100,
             "csrc/kernels/unit.cu": '#include "big.cuh"\n#include "big.cuh"\n',
             "csrc/kernels/long.cu": '#include "common.cuh"\n' + "// z\n" * 3000,
             "csrc/kernels/short.cu": "// w\n"}
    for f, text in files.items():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_JOBS", "1")
    calls = tmp_path / "calls.txt"
    fake_cc = [sys.executable, "-c", "import sys; open(sys.argv[-1], 'w').write(''); "
               f"open({str(calls)!r}, 'a').write(sys.argv[-3] + '\\n')"]
    helpers = _setup_helpers()
    sources = ["csrc/kernels/short.cu", "csrc/kernels/long.cu", "csrc/kernels/unit.cu"]
    assert helpers["_include_bytes"]("csrc/kernels/unit.cu") == sum(len(files[f"csrc/kernels/{n}"]) for n in
                                                                    ("unit.cu", "big.cuh", "common.cuh"))
    helpers["compile_kernels"]([("cuda", fake_cc)], sources)
    assert [os.path.basename(s) for s in calls.read_text().split()] == ["unit.cu", "long.cu", "short.cu"]


@pytest.mark.skipif(not torch.version.cuda, reason="a CPU-only torch builds no CUDA kernels")
def test_setup_refuses_a_toolkit_of_another_cuda_major(tmp_path, monkeypatch):
    """The kernels are compiled by setup.py, not by torch's extension build, so its nvcc/torch version check is
    setup.py's own: a CUDA 12 nvcc for a CUDA 13 torch is not used (auto) or stops the build (FASTGAN_CUDA=1)."""
    major = int(torch.version.cuda.split(".")[0])
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cuda_runtime_api.h").write_text("")
    (tmp_path / "bin").mkdir()
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {major - 1}.8, V{major - 1}.8.93'\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setenv("FASTGAN_CUDA", "auto")
    cuda_home, _, reason = _setup_helpers()["configure"]()
    assert cuda_home is None and f"CUDA {major - 1}.8" in reason and f"CUDA {torch.version.cuda}" in reason
    monkeypatch.setenv("FASTGAN_CUDA", "1")
    with pytest.raises(SystemExit, match="major versions must match"):
        _setup_helpers()["configure"]()
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {major}.0, V{major}.0.48'\n")
    assert _setup_helpers()["configure"]()[0] == os.path.realpath(tmp_path)
