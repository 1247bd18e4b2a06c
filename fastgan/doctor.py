"""``fastgan doctor``: what is installed, what _C was built against, and which implementation every op uses."""
from __future__ import annotations

import platform
import re
import shutil
import subprocess

OPS = ["bias_act", "dense", "conv2d", "sigmoid_bce"]


def _nvcc_version() -> str:
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return "not found on PATH"
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"{nvcc}: failed to run ({e})"
    m = re.search(r"release ([\d.]+)", out)
    return f"{m.group(1) if m else 'unknown'} ({nvcc})"


def _arch_covered(cap: tuple, archs: str) -> bool:
    """True when the build has SASS for this capability or PTX it can JIT from (an older or equal arch). ``archs``
    as TORCH_CUDA_ARCH_LIST writes it ('8.0;9.0', '8.0 9.0+PTX', '9.0a', '10.0f'); an arch-specific entry ('9.0a')
    runs on that capability only, a family-specific one ('10.0f') on its major version, and the PTX of either on no
    newer GPU."""
    major, minor = cap
    for a in re.split(r"[;,\s]+", archs):
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", a.strip())
        if not m:
            continue
        am, an, suffix, ptx = int(m.group(1)), int(m.group(2)), m.group(3), bool(m.group(4))
        if suffix == "a":
            if (am, an) == (major, minor):
                return True
            continue
        if (am == major and an <= minor) or (not suffix and ptx and (am, an) <= (major, minor)):
            return True
    return False


def report() -> list:
    import torch

    from . import __version__, _ext, _impl
    lines = [f"fastgan {__version__}", f"python {platform.python_version()} ({platform.machine()})",
             f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
             f"nvcc {_nvcc_version()}"]
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            lines.append(f"cuda:{i} {torch.cuda.get_device_name(i)} (sm_{cap[0]}{cap[1]})")
        devices.append("cuda")
    else:
        lines.append("CUDA device: none visible")
        if torch.version.cuda:  # what CUDA tensors would take on a machine with a GPU
            devices.append("cuda")
    if _ext.C is None:
        lines.append(f"fastgan._C: NOT LOADED — {_ext.load_error}")
    else:
        info = _ext.build_info()
        lines.append(f"fastgan._C: loaded from {_ext.C.__file__}")
        lines.append(f"  built against torch {info['torch_version']} with {info.get('compiler', '?')}")
        stale = _ext.stale_reason()
        lines.append(f"  sources: digest {info.get('source_digest') or 'not recorded (CMake build)'}"
                     + (f"; WARNING: {stale}" if stale else ""))
        if info["with_cuda"]:
            lines.append(f"  CUDA kernels: yes (CUDA {info['cuda_version']}, archs {info['cuda_archs']}); products "
                         f"routed '{_ext.C.cuda_gemm_route()}' (fastgan.cuda_gemm_route / FASTGAN_CUDA_GEMM: auto, "
                         f"kernels, aten)")
            try:
                pdl = "on (sm_90 and newer)" if _ext.C.cuda_pdl() else "off"
            except ValueError as e:
                pdl = f"ERROR: {e}"
            lines.append(f"  programmatic dependent launch: {pdl} (fastgan.cuda_pdl / FASTGAN_CUDA_PDL: 0, 1)")
            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    cap = torch.cuda.get_device_capability(i)
                    if not _arch_covered(cap, info["cuda_archs"]):
                        lines.append(f"  WARNING: cuda:{i} is sm_{cap[0]}{cap[1]}, which this build has no kernel "
                                     f"image for; rebuild with TORCH_CUDA_ARCH_LIST=\"{cap[0]}.{cap[1]}\"")
        else:
            lines.append("  CUDA kernels: no (CPU-only build: FASTGAN_CUDA=0, CPU-only torch or no toolkit)")
        emu = ("yes" + ("" if info.get("emu_instrumented") else " (WITHOUT the memory-access checks: the compiler "
                        "lacked -fsanitize=thread's pass)")) if info["with_emu"] else "no (FASTGAN_EMU=0)"
        lines.append(f"  CUDA emulation (impl 'emu'): {emu}")
        if hasattr(_ext.C, "cpu_widest_vector_bytes"):  # (a _C built before it: the stale-source line says so)
            vb, widest = _ext.C.cpu_vector_bytes(), _ext.C.cpu_widest_vector_bytes()
            isa = ({64: "AVX-512", 32: "AVX2"}.get(vb, "the baseline ISA") if vb <= widest else
                   f"WIDER than this CPU's {widest}: its portable copy, many times slower")
            lines.append(f"  CPU conv backward-data loops: {vb}-byte vectors, {isa} (FASTGAN_CPU_VECTOR_BYTES=16|32|64 "
                         "sets the width)")
        lines.append("  autograd: one torch.autograd.Function per op (fastgan/ops/), the same formulas registered "
                     "with torch.library.register_autograd for torch.ops.fastgan.* callers")
    try:
        selected = _impl.current()
    except RuntimeError as e:  # a bad FASTGAN_IMPL
        selected = f"error: {e}"
    lines.append(f"available implementations: {', '.join(_impl.available_impls())}; selected: {selected}")
    lines.append("implementation per op and device:")
    for dev in devices:
        try:
            impl = _impl.resolve(torch.device(dev))
        except RuntimeError as e:
            impl = f"error: {e}"
        detail = {"native": "C++ kernels" if dev == "cpu" else "CUDA kernels", "emu": "CUDA kernels emulated on CPU",
                  "torch": "pure-PyTorch reference"}.get(impl, impl)
        if dev == "cuda" and not torch.cuda.is_available():
            detail += "; no device visible here"
        for op in OPS:
            lines.append(f"  {op:<12} {dev:<5} {impl} ({detail})")
    return lines


# Dispatcher calls that launch no kernel on a GPU (allocation, aliasing); every other ATen call counts as one.
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias",
              "_unsafe_view", "lift_fresh", "_local_scalar_dense", "set_", "resize_", "sym_size", "sym_stride",
              "sym_numel"}


def count_step_kernels(r1: bool) -> tuple:
    """Kernel launches of one ``fastgan train`` step (batch, D and G updates, EMA) with the CUDA kernels under the
    CPU emulation: fastgan's launches as the emulator records them, plus one per ATen call the step still makes
    (seen by a dispatch mode; views and allocations excluded), with fastgan's Adam as on CUDA. An estimate of the GPU
    count: an ATen call may be more than one kernel on a GPU (a copy between layouts, a reduction in two passes).
    Returns (total, [(name, count), ...])."""
    import collections
    import tempfile

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import fastgan
    from fastgan import _ext
    from fastgan.train.config import TrainConfig
    from fastgan.train.trainer import Trainer

    if _ext.C is None or not hasattr(_ext.C, "emu_launch_log"):
        raise RuntimeError("fastgan._C was built without the CUDA emulation (FASTGAN_EMU=0)")
    aten = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ns = func.namespace
            name = func.__name__.split(".")[0]
            if ns == "aten" and not func.is_view and name not in _NO_KERNEL:
                aten[f"aten::{name}"] += 1
            return func(*args, **(kwargs or {}))

    with tempfile.TemporaryDirectory() as out, fastgan.use_impl("emu"):
        cfg = TrainConfig(out=out, device="cpu", quiet=True, epochs=1, r1_gamma=1.0 if r1 else 0.0, r1_every=1,
                          threads=1)
        t = Trainer(cfg)
        t.D.to(memory_format=torch.contiguous_format)  # as on CUDA (build_models: channels_last on the CPU only)
        t.r1_one_pass = True  # as on CUDA: an R1 step's D runs once over cat(real, fake)
        # (the trainer's optimisers: fastgan's Adam, whose kernel runs under the emulation as on CUDA)
        # Warm-up (first-call work, such as the optimisers' state, is not per step) on the C++ CPU kernels: the same
        # tensors and state as an emulated step, in a fraction of a second instead of half the command's time.
        with fastgan.use_impl("native"):
            t._step(*t._batch(0))
        _ext.C.emu_launch_log(True)
        with Count():
            t._step(*t._batch(1))
            t.step = 2
            if t.ema_after_step:  # (False: G's EMA is inside fastgan's Adam)
                t._update_ema()
        launches = collections.Counter(_ext.C.emu_launch_log(False))
    rows = sorted(launches.items(), key=lambda kv: -kv[1]) + sorted(aten.items(), key=lambda kv: -kv[1])
    return sum(launches.values()) + sum(aten.values()), rows


def main(args=None) -> int:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # doctor prints the reason itself
        if args is not None and getattr(args, "kernels", False):
            plain, plain_rows = count_step_kernels(r1=False)
            with_r1, r1_rows = count_step_kernels(r1=True)
            print(f"kernels per training step: {plain} (plain), {with_r1} (with R1)")
            print("(counted on the CPU: fastgan's CUDA kernels under emulation + one per remaining ATen call; "
                  "+1 per epoch, not per step: the epoch's images gathered in its order)")
            for title, rows in (("plain step", plain_rows), ("step with R1", r1_rows)):
                print(f"{title}:")
                for name, n in rows:
                    print(f"  {n:4d}  {name}")
            return 0
        print("\n".join(report()))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="show the build, the torch/CUDA versions and which implementation each op uses")
    p.add_argument("--kernels", action="store_true",
                   help="count the kernel launches of one training step (plain and with R1) under the CUDA emulation")
    p.set_defaults(func=main)
