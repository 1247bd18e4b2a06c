"""Tests of the CPU emulation of CUDA (csrc/emu): sample kernels in tests/emu/ are compiled with the host compiler
(-DFG_EMU) and run with CUDA semantics; results are compared exactly, misuse must be reported naming the kernel.

Builds are cached in $FGEMU_TEST_CACHE (default: <tmp>/fastgan-emu-tests), keyed by a hash of the compiler, the flags
and every source involved, so reruns only pay for the runs.
"""

from __future__ import annotations

import concurrent.futures
import fractions
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
EMU_DIR = CSRC / "emu"
TEST_DIR = ROOT / "tests" / "emu"
CXX = os.environ.get("CXX", "g++")

BASE_FLAGS = ["-std=c++17", "-DFG_EMU", "-I", str(CSRC), "-I", str(TEST_DIR), "-pthread", "-Wall", "-Wextra"]
# Kernel sources get the memory-access instrumentation of the global-memory race check (csrc/emu/memcheck.cpp; the
# same flags as setup.py's EMU_INSTRUMENT); the runtime and the test driver do not.
INSTRUMENT_FLAGS = ["-fsanitize=thread", "--param=tsan-distinguish-volatile=1",
                    "--param=tsan-instrument-func-entry-exit=0"]
if "clang" in CXX:
    INSTRUMENT_FLAGS = ["-fsanitize=thread", "-mllvm", "-tsan-distinguish-volatile=1", "-mllvm",
                        "-tsan-instrument-func-entry-exit=0"]

# Cases implemented by tests/emu/emu_tests.cpp (`emu_tests list` must print exactly these).
CASES = [
    "activemask", "atomics", "block_reduce", "compaction", "device_assert", "divergent_exit", "dynamic_smem",
    "global_races", "grid_index", "histogram", "interleaved_blocks", "intrinsics", "launch_limits", "matmul",
    "misaligned",
    "nested_launch", "outside_kernel", "partial_warp", "poison", "programmatic_launch", "racecheck",
    "racecheck_full", "schedules", "shfl_width", "smem_limits", "speed", "static_footprint", "sync_votes",
    "tensor_cores", "threads",
    "two_barriers", "types_and_helpers", "uninitialized_shared", "warp_deadlock", "warp_reduce", "warp_votes",
]
# Subset run again against the other builds (ucontext fibers, -O0).
VARIANT_CASES = [
    "block_reduce", "warp_reduce", "shfl_width", "matmul", "dynamic_smem", "uninitialized_shared", "activemask",
    "divergent_exit", "two_barriers", "warp_deadlock", "device_assert", "smem_limits", "threads", "atomics",
    "static_footprint",
]


def _cache_root() -> Path:
    root = os.environ.get("FGEMU_TEST_CACHE")
    return Path(root) if root else Path(tempfile.gettempdir()) / "fastgan-emu-tests"


def _compiler_id() -> str:
    try:
        return subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:  # pragma: no cover - environment problem
        pytest.skip(f"no C++ compiler ({CXX}): {e}")
        raise


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:20]


def _headers() -> list[Path]:
    return sorted(EMU_DIR.glob("*.h")) + sorted((CSRC / "kernels").glob("*.cuh")) + sorted(TEST_DIR.glob("*.cuh"))


def _compile(src: Path, obj: Path, flags: list[str]) -> str:
    lang = ["-x", "c++"] if src.suffix == ".cu" else []
    cmd = [CXX, *flags, *lang, "-c", str(src), "-o", str(obj)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compilation failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stderr


def build(name: str, extra_flags: list[str], sources: list[Path] | None = None,
          link_flags: list[str] | None = None, instrument: bool = True) -> tuple[Path, str]:
    """Builds (or reuses) a test binary; returns its path and the compiler warnings of the build. ``instrument``:
    kernel sources (.cu) get INSTRUMENT_FLAGS (not combinable with AddressSanitizer)."""
    sources = sources or (sorted(EMU_DIR.glob("*.cpp")) + [TEST_DIR / "kernels.cu", TEST_DIR / "tensorcore.cu",
                                                           TEST_DIR / "emu_tests.cpp"])
    flags = BASE_FLAGS + extra_flags
    link_flags = link_flags or []
    key = _hash(_compiler_id(), flags, link_flags, instrument and INSTRUMENT_FLAGS, *_headers(), *sources)

    def flags_for(src: Path) -> list[str]:
        return flags + INSTRUMENT_FLAGS if instrument and src.suffix == ".cu" else flags

    out_dir = _cache_root() / f"{name}-{key}"
    exe = out_dir / "emu_tests"
    if exe.exists():
        return exe, (out_dir / "warnings.txt").read_text()
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_cache_root().mkdir(parents=True, exist_ok=True) or _cache_root()))
    try:
        objs = [work / (s.name + ".o") for s in sources]
        jobs = max(1, min(len(sources), os.cpu_count() or 2))
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            warnings = list(pool.map(lambda so: _compile(so[0], so[1], flags_for(so[0])), zip(sources, objs)))
        r = subprocess.run([CXX, "-pthread", *link_flags, *map(str, objs), "-o", str(work / "emu_tests")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"link failed:\n{r.stderr}")
        (work / "warnings.txt").write_text("".join(warnings))
        try:
            os.replace(work, out_dir)  # atomic publish; a concurrent identical build may have won the race
        except OSError:
            pass
        for stale in _cache_root().glob(f"{name}-*"):  # finished builds of older sources (not temp dirs)
            if stale != out_dir and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{20}}", stale.name):
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return exe, (out_dir / "warnings.txt").read_text()


@pytest.fixture(scope="session")
def emu_build():
    return build("o2", ["-O2"])


@pytest.fixture(scope="session")
def emu_bin(emu_build):
    return emu_build[0]


def run_case(exe: Path, case: str, timeout: float = 300.0, env: dict | None = None) -> str:
    r = subprocess.run([str(exe), case], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    out = r.stdout + r.stderr
    assert r.returncode == 0 and f"PASS {case}" in r.stdout, f"emu_tests {case} failed (rc={r.returncode}):\n{out}"
    return out


def test_case_list(emu_bin):
    listed = subprocess.run([str(emu_bin), "list"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(listed) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_emu_case(emu_bin, case):
    out = run_case(emu_bin, case)
    if case == "speed":
        print(out)


def test_emu_headers_and_runtime_warning_free(emu_build):
    """csrc/emu must build without warnings under -Wall -Wextra, and so must a kernel TU including its headers."""
    _, warnings = emu_build
    emu_warnings = [ln for ln in warnings.splitlines() if "csrc/emu/" in ln or "csrc/kernels/" in ln]
    assert not emu_warnings, "\n".join(emu_warnings)
    probe = "\n".join([
        '#include "kernels/common.cuh"',
        '#include "kernels/activation.cuh"',
        "namespace fastgan { namespace FG_NS {",
        "__global__ void k(float* y, const __half* h, int n) {",
        "  __shared__ float s[32];",
        "  extern __shared__ float smem[];",
        "  int i = blockIdx.x * blockDim.x + threadIdx.x;",
        "  if (i < n) { s[threadIdx.x % 32] = load(h, i); smem[0] = s[0]; }",
        "  __syncthreads();",
        "  if (i < n) y[i] = __shfl_xor_sync(0xffffffffu, smem[0], 1) + warpSize;",
        "}",
        "void run(float* y, const __half* h, int n) { launch(\"k\", k, dim3(1), dim3(32), 4, nullptr, y, h, n); }",
        "}}",
    ])
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cu"
        src.write_text(probe)
        for std in ("-std=c++17", "-std=c++20"):  # setup.py builds the extension as C++20 (torch's headers)
            r = subprocess.run([CXX, *BASE_FLAGS, std, "-O2", "-Werror", "-fsyntax-only", "-x", "c++", str(src)],
                               capture_output=True, text=True)
            assert r.returncode == 0, f"{std}:\n{r.stderr}"


def test_ucontext_fallback():
    """The portable ucontext fiber backend (used off x86-64) gives the same results."""
    exe, _ = build("ucontext", ["-O2", "-DFGEMU_USE_UCONTEXT"])
    for case in VARIANT_CASES:
        run_case(exe, case)


def _asan_available() -> bool:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.cpp"
        src.write_text("int main() { return 0; }\n")
        r = subprocess.run([CXX, "-fsanitize=address", str(src), "-o", str(Path(d) / "t")], capture_output=True)
        return r.returncode == 0


def test_address_sanitizer_build():
    """CMake's -DFASTGAN_SANITIZE=address: fiber switches are annotated for ASan; no errors and no leaks."""
    if not _asan_available():
        pytest.skip("no AddressSanitizer runtime")
    exe, _ = build("asan", ["-O1", "-fsanitize=address", "-fno-omit-frame-pointer"], link_flags=["-fsanitize=address"],
                   instrument=False)
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
    for case in VARIANT_CASES + ["racecheck", "warp_votes", "grid_index"]:
        run_case(exe, case, env=env)


def test_debug_build():
    """-O0: nothing may depend on optimisation (e.g. values cached in registers across fiber switches)."""
    exe, _ = build("o0", ["-O0"])
    for case in VARIANT_CASES:
        run_case(exe, case)


@pytest.mark.parametrize("env", [{"FGEMU_RACECHECK": "1"}, {"FGEMU_SCHEDULE": "reverse"},
                                 {"FGEMU_SCHEDULE": "random:7"}, {"FGEMU_RACECHECK": "1", "FGEMU_SCHEDULE": "random:3"},
                                 {"FGEMU_BLOCKS": "4"}, {"FGEMU_RACECHECK": "full"},
                                 {"FGEMU_RACECHECK": "1", "FGEMU_BLOCKS": "3", "FGEMU_SCHEDULE": "random:11"}],
                         ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_checking_modes_no_false_alarms(emu_bin, env):
    """Every correct sample kernel passes with the race check on and with other thread orders (the kernels that must
    fail still fail, with the same messages)."""
    cases = [c for c in CASES if c != "speed"]
    r = subprocess.run([str(emu_bin), *cases], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("env,expected", [
    ({"FGEMU_SCHEDULE": "sideways"}, "forward, reverse, random or random:<seed>"),
    ({"FGEMU_SCHEDULE": "random:x"}, "forward, reverse, random or random:<seed>"),
    ({"FGEMU_RACECHECK": "yes"}, "0, 1 or full"),
    ({"FGEMU_BLOCKS": "-2"}, "a number of resident blocks"),
    ({"FGEMU_POISON": "zz"}, "a fill byte in hex"),
    ({"FGEMU_POISON": "0x100"}, "a fill byte in hex"),
    ({"FGEMU_SPIN_LIMIT": "0"}, "a positive integer"),
])
def test_bad_environment_is_an_error_naming_the_variable(emu_bin, env, expected):
    """A malformed FGEMU_* value fails the launch with the variable, its value and what was expected (not a silent
    default that would make a checking run check nothing)."""
    r = subprocess.run([str(emu_bin), "block_reduce"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    (name, value), = env.items()
    assert r.returncode != 0, r.stdout
    assert f"fgemu: {name}={value}: expected {expected}" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("case,needle", [
    ("crash_null_write", "fgemu: segmentation fault at address 0xc in kernel 'null_write', block (0,0,0), thread (3,0,0)"),
    ("crash_stack_overflow", "in kernel 'stack_hog', block (0,0,0), thread (0,0,0) -- fiber stack overflow"),
])
def test_crash_is_reported(emu_bin, case, needle):
    """A memory fault inside a kernel still kills the process (like an illegal address on the GPU), but first names
    the kernel, block and thread."""
    r = subprocess.run([str(emu_bin), case], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FGEMU_STACK_KB": "64"})
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr


def test_small_fiber_stacks(emu_bin):
    """Stacks are configurable; 32 KB is plenty for the sample kernels."""
    for case in ("block_reduce", "matmul", "warp_votes"):
        run_case(emu_bin, case, env={"FGEMU_STACK_KB": "32"})


# ---------------------------------------------------------------------------------------------------------------------
# 16-bit float conversions against an exact (rational arithmetic) reference, numpy and torch.
# ---------------------------------------------------------------------------------------------------------------------
def _round_exact(x: float, p: int, emin: int, emax: int) -> float:
    """x rounded to nearest even in a binary format with p significand bits and exponents [emin, emax]."""
    if math.isnan(x) or math.isinf(x) or x == 0.0:
        return x
    a = fractions.Fraction(abs(x))
    e = max(math.frexp(abs(x))[1] - 1, emin)
    ulp = fractions.Fraction(2) ** (e - (p - 1))
    q, r = divmod(a, ulp)
    if r * 2 > ulp or (r * 2 == ulp and q % 2 == 1):
        q += 1
    v = q * ulp
    if v >= fractions.Fraction(2) ** (emax + 1):
        return math.copysign(math.inf, x)
    return math.copysign(float(v), x)


def _half_bits(v: float) -> int:
    return int(np.array([v], dtype=np.float16).view(np.uint16)[0])


def _bf16_bits(v: float) -> int:
    return int(np.array([v], dtype=np.float32).view(np.uint32)[0] >> 16)


def _conversion_inputs() -> np.ndarray:
    rng = np.random.default_rng(7)
    special = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65519.99, 65520.0, 65536.0, 1e6, -1e6, 2.0**-14, 2.0**-24,
               2.0**-25, 2.0**-25 * 1.0001, 3 * 2.0**-26, 2.0**-26, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8,
               1 + 3 * 2.0**-8, 3.4028234663852886e38, 3.3895313892515355e38, 3.3961775292304795e38, 1e-40, -1e-45,
               1.1754943508222875e-38, 0.1, 1 / 3, math.pi, math.inf, -math.inf, math.nan]
    # doubles just beside a float32 tie: converting through float32 first would round them the wrong way
    near = []
    for base in (1.0, 3.0, 1000.0, 2.0**-20, 2.0**-130):
        for k in (11, 8):
            t = base * (1 + 2.0**-k)
            near += [t * (1 + 2.0**-40), t * (1 - 2.0**-40)]
    bits = rng.integers(0, 2**32, size=6000, dtype=np.uint64).astype(np.uint32)
    with np.errstate(invalid="ignore"):
        f32 = bits.view(np.float32).astype(np.float64)
    scaled = rng.standard_normal(3000) * np.exp2(rng.integers(-30, 20, 3000))
    return np.concatenate([np.array(special + near, dtype=np.float64), f32, scaled])


def test_half_bfloat16_conversions(emu_bin, tmp_path):
    xs = _conversion_inputs()
    (tmp_path / "in.bin").write_bytes(xs.astype("<f8").tobytes())
    subprocess.run([str(emu_bin), "conv", str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    raw = (tmp_path / "out.bin").read_bytes()
    conv = np.frombuffer(raw[: 8 * len(xs)], dtype="<u2").reshape(-1, 4)
    wide = np.frombuffer(raw[8 * len(xs):], dtype="<f4").reshape(-1, 2)

    def is_nan16(b: int, exp_mask: int, man_mask: int) -> bool:
        return (b & exp_mask) == exp_mask and (b & man_mask) != 0

    bad = []
    for i, x in enumerate(xs):
        f = float(np.float32(x))
        h_f32, b_f32, h_f64, b_f64 = (int(v) for v in conv[i])
        if math.isnan(x):
            ok = all(is_nan16(v, 0x7C00, 0x3FF) for v in (h_f32, h_f64)) and all(
                is_nan16(v, 0x7F80, 0x7F) for v in (b_f32, b_f64))
            if not ok:
                bad.append((x, "nan"))
            continue
        expect = (_half_bits(_round_exact(f, 11, -14, 15)), _bf16_bits(_round_exact(f, 8, -126, 127)),
                  _half_bits(_round_exact(x, 11, -14, 15)), _bf16_bits(_round_exact(x, 8, -126, 127)))
        if (h_f32, b_f32, h_f64, b_f64) != expect:
            bad.append((x, (h_f32, b_f32, h_f64, b_f64), expect))
    assert not bad, f"{len(bad)} wrong conversions, e.g. {bad[:5]}"

    # numpy agrees on float32/float64 -> float16 (both round correctly)
    finite = ~np.isnan(xs)
    with np.errstate(over="ignore", invalid="ignore"):
        np_h32 = xs.astype(np.float32).astype(np.float16).view(np.uint16)
        np_h64 = xs.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(conv[finite, 0], np_h32[finite])
    np.testing.assert_array_equal(conv[finite, 2], np_h64[finite])
    # torch agrees on float32 -> bfloat16
    torch = pytest.importorskip("torch")
    with np.errstate(over="ignore"):
        x32 = xs.astype(np.float32)
    tb = torch.from_numpy(x32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(conv[finite, 1], tb[finite])

    # every 16-bit pattern widens exactly
    all16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = all16.view(np.float16).astype(np.float32)
    b = (all16.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(np.isnan(wide[:, 0]), np.isnan(h))
    np.testing.assert_array_equal(wide[~np.isnan(h), 0], h[~np.isnan(h)])
    np.testing.assert_array_equal(wide[:, 1].view(np.uint32), b.view(np.uint32))


# ---------------------------------------------------------------------------------------------------------------------
# Project kernels: every csrc/kernels/*.cu must compile unmodified under the emulation, and every `extern __shared__`
# name it uses must be bound in csrc/emu/extern_shared.cpp.
# ---------------------------------------------------------------------------------------------------------------------
PROJECT_KERNELS = sorted((CSRC / "kernels").glob("*.cu"))


def _defined_symbols(obj: Path) -> set[str]:
    r = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True, check=True)
    return {ln.split()[-1] for ln in r.stdout.splitlines() if ln.strip()}


def _undefined_symbols(obj: Path) -> set[str]:
    r = subprocess.run(["nm", "--undefined-only", str(obj)], capture_output=True, text=True, check=True)
    return {ln.split()[-1] for ln in r.stdout.splitlines() if ln.strip()}


@pytest.fixture(scope="session")
def extern_shared_symbols():
    if shutil.which("nm") is None:
        pytest.skip("nm not available")
    with tempfile.TemporaryDirectory() as d:
        obj = Path(d) / "extern_shared.o"
        _compile(EMU_DIR / "extern_shared.cpp", obj, BASE_FLAGS + ["-O0"])
        return _defined_symbols(obj)


def _check_extern_shared(obj: Path, defined: set[str], src: Path):
    missing = sorted(s for s in _undefined_symbols(obj) if s.startswith("_ZTH") and s not in defined)
    hints = [f"FGEMU_EXTERN_SHARED({s[4:]})" if s[4:5] == "N" else
             f"FGEMU_EXTERN_SHARED_GLOBAL({re.sub(r'^[0-9]+', '', s[4:])}, {s[4:]})" for s in missing]
    assert not missing, (f"{src.name} uses `extern __shared__` names that the emulation does not bind; add to "
                         f"csrc/emu/extern_shared.cpp:\n  " + "\n  ".join(hints))


def test_sample_extern_shared_names_bound(extern_shared_symbols, tmp_path):
    obj = tmp_path / "kernels.o"
    _compile(TEST_DIR / "kernels.cu", obj, BASE_FLAGS + ["-O0"])
    _check_extern_shared(obj, extern_shared_symbols, TEST_DIR / "kernels.cu")


@pytest.mark.skipif(not PROJECT_KERNELS, reason="no csrc/kernels/*.cu yet")
@pytest.mark.parametrize("src", PROJECT_KERNELS, ids=[p.name for p in PROJECT_KERNELS])
def test_project_kernel_compiles_under_emulation(src, extern_shared_symbols, tmp_path):
    obj = tmp_path / (src.name + ".o")
    _compile(src, obj, BASE_FLAGS + ["-O0"])
    _check_extern_shared(obj, extern_shared_symbols, src)
