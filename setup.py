"""Build of fastgan._C: C++ CPU kernels always, CUDA kernels when torch is a CUDA build and nvcc is found
(no GPU needed), and the CPU emulation of the CUDA kernels (opt-out with FASTGAN_EMU=0).

Install with ``pip install --no-build-isolation .`` so the extension is compiled against the torch that is
installed (build isolation would compile against a different torch and the import would fail).

The kernel sources (csrc/kernels/: raw-pointer code, no torch header) are compiled by nvcc and, for the emulation,
by the host compiler into build/kernels/ (compile_kernels); only the glue is compiled by torch's extension build.
A rebuild for another torch release relinks the same kernel objects.

Environment switches
  FASTGAN_CUDA=0|1|auto   build the CUDA kernels (auto: when torch has CUDA and a toolkit is found)
  FASTGAN_EMU=0|1         build the CPU emulation of the CUDA kernels (default 1; used by the tests)
  TORCH_CUDA_ARCH_LIST    CUDA archs; when unset: the visible GPUs' architectures, or with no GPU visible
                          "8.0;9.0+PTX" (sm_80 and sm_90, PTX for newer GPUs)
  MAX_JOBS                parallel compile jobs (the kernels' pool and ninja's)
  CUDA_HOME, CUDA_PATH    CUDA toolkit root (found automatically from nvcc on PATH, also behind a wrapper script)
  CXX, CC                 host compilers (CXX: the emulated kernels; CC: nvcc's -ccbin)
  FASTGAN_DEBUG=1         -O0 -g build
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

try:
    import torch
except ImportError:
    sys.stderr.write(
        "\nfastgan: building fastgan._C needs the torch you will run it with, but torch is not importable here.\n"
        "This happens with pip's default build isolation (a separate build environment without your torch).\n"
        "Install torch first, then build without isolation:\n"
        "    pip install -r requirements.txt\n"
        "    pip install --no-build-isolation .\n\n")
    sys.exit(1)


def _flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def _has_toolkit(root) -> bool:
    return bool(root) and os.path.isfile(os.path.join(root, "include", "cuda_runtime_api.h"))


def wrapped_toolkits(nvcc: str) -> list:
    """Toolkit roots named by a wrapper script: `exec /path/to/cuda/bin/nvcc "$@"` (the path possibly quoted)."""
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    roots = []
    for tok in head.decode(errors="ignore").split():
        tok = tok.strip("\"'`;()")
        if tok.endswith("/bin/nvcc"):
            roots.append(os.path.dirname(os.path.dirname(tok)))
    return roots


def find_cuda_home():
    """The CUDA toolkit root, found by where include/cuda_runtime_api.h lives (the nvcc on PATH may be a
    wrapper script outside the toolkit, which makes torch's own guess wrong)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates += wrapped_toolkits(nvcc)
    if torch.version.cuda:
        candidates.append(f"/usr/local/cuda-{torch.version.cuda}")
    candidates += ["/usr/local/cuda", "/opt/cuda"]
    for c in candidates:
        if _has_toolkit(c):
            return os.path.realpath(c)
    return None


def _visible_archs() -> str:
    """'8.0;9.0' for the GPUs this build can see; '' without any (or with a broken driver)."""
    try:
        if not torch.cuda.is_available():
            return ""
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    except Exception:
        return ""
    return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))


def configure():
    want_cuda = _flag("FASTGAN_CUDA", "auto")
    with_emu = _flag("FASTGAN_EMU", "1") not in ("0", "false", "no", "off")
    cuda_home = None
    reason = ""
    if want_cuda in ("0", "false", "no", "off"):
        reason = "FASTGAN_CUDA=0"
    elif not torch.version.cuda:
        reason = f"torch {torch.__version__} is a CPU-only build"
    else:
        cuda_home = find_cuda_home()
        if cuda_home is None:
            reason = "no CUDA toolkit found (set CUDA_HOME to the directory holding include/cuda_runtime_api.h)"
        else:
            # (torch's own check runs only for .cu sources in the extension: compile_kernels compiles the kernels)
            m = re.search(r"release (\d+)\.(\d+)", _compiler_version(os.path.join(cuda_home, "bin", "nvcc")))
            if not m or m.group(1) != torch.version.cuda.split(".")[0]:
                found = f"CUDA {m.group(1)}.{m.group(2)}" if m else "no nvcc that reports its version"
                reason = (f"{cuda_home} has {found}, torch {torch.__version__} is built with CUDA "
                          f"{torch.version.cuda}: the major versions must match (set CUDA_HOME to a matching toolkit)")
                cuda_home = None
    if want_cuda in ("1", "true", "yes", "on") and cuda_home is None:
        sys.exit(f"fastgan: FASTGAN_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension reads it
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # No GPU is needed to build; without a visible GPU and no list cpp_extension fails (pytorch#137261):
            # sm_80 + sm_90 (+ PTX for newer). With GPUs visible, torch's own default -- their architectures --
            # made explicit so the build records it (fastgan doctor).
            os.environ["TORCH_CUDA_ARCH_LIST"] = _visible_archs() or "8.0;9.0+PTX"
    return cuda_home, with_emu, reason


def emu_wrapper(cu: str, out_dir: str) -> str:
    """The translation unit that runs one unmodified kernel source on the CPU emulation (generated at build time
    from csrc/kernels/*.cu: no hand-kept list)."""
    name = os.path.splitext(os.path.basename(cu))[0]
    path = os.path.join(out_dir, f"{name}_emu.cpp")
    text = ("// Generated by setup.py: runs csrc/kernels/%s.cu on the CPU emulation. Do not edit.\n"
            "#define FG_EMU 1\n#include \"kernels/%s.cu\"\n" % (name, name))
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


def _compiler_version(exe: str) -> str:
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def _instrument_flags(cxx: str) -> list:
    """The memory-access instrumentation of the emulated kernels (csrc/emu/memcheck.cpp: the global-memory race check,
    the programmatic-launch check and volatile loads as switch points). ThreadSanitizer's compiler pass only, never
    its runtime library. [] when the compiler cannot compile a probe with it (the checks are then unavailable, and
    build_info()["emu_instrumented"] says so)."""
    import tempfile
    ident = _compiler_version(cxx)
    if not ident:
        return []
    if "clang" in ident:
        flags = ["-fsanitize=thread", "-mllvm", "-tsan-distinguish-volatile=1", "-mllvm",
                 "-tsan-instrument-func-entry-exit=0"]
    else:
        flags = ["-fsanitize=thread", "--param=tsan-distinguish-volatile=1",
                 "--param=tsan-instrument-func-entry-exit=0"]
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.cpp")
        with open(src, "w") as f:
            f.write("int probe(volatile int* p) { return *p; }\n")
        r = subprocess.run([cxx, *flags, "-c", src, "-o", os.path.join(d, "probe.o")], capture_output=True)
    return flags if r.returncode == 0 else []


def _include_bytes(src: str, seen=None) -> int:
    """The bytes of a kernel source and of the project headers it includes, transitively: compile_kernels' guess of
    how long a source takes (a GEMM unit of a few lines instantiates the whole of gemm.cuh)."""
    seen = set() if seen is None else seen
    src = os.path.abspath(src)
    if src in seen or not os.path.isfile(src):
        return 0
    seen.add(src)
    with open(src, encoding="utf-8", errors="replace") as f:
        text = f.read()
    total = len(text)
    for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
        for base in (os.path.dirname(src), os.path.join(ROOT, "csrc")):
            if os.path.isfile(os.path.join(base, name)):
                total += _include_bytes(os.path.join(base, name), seen)
                break
    return total


def compile_kernels(builds: list, sources: list) -> list:
    """Compiles the kernel sources (csrc/kernels/, raw-pointer code: no torch header) outside torch's extension
    build and returns their objects for _C to link. `builds` is a list of (kind, command): "cuda" (nvcc) or "emu"
    (the host compiler, each source wrapped by emu_wrapper), the command being the compiler and its flags (the source
    and `-o object` are appended). The objects live in build/kernels/<kind>-<digest>/, the digest of the command and
    the compiler's --version, so they serve every torch release (a rebuild for another torch, or CI's second
    release, reuses them) and builds with other flags or compilers (the GPU prebuild's sm_90, a debug build) keep
    their own; each object has the compiler's output beside it (<object>.log; the last CUDA directory is named in
    build/kernels/cuda.last, for tools/check_kernels.py --from-build). As make and ninja do, an object is rebuilt
    when its source (or generated wrapper) or a file it may include is newer. An object appears only complete
    (compiled to a temporary name, then renamed). All compiles share one pool of MAX_JOBS, nvcc's first, each kind's
    sources the largest with their includes first (a rough guess of the longest: it puts the GEMM units and the
    two files that launch them, which include gemm.cuh but compile quickly, before the small kernels)."""
    import concurrent.futures
    import hashlib
    newest = max(os.path.getmtime(d) for d in glob.glob("csrc/kernels/*") + glob.glob("csrc/emu/*.h"))
    jobs, objects = [], []
    for kind, command in sorted(builds, key=lambda b: b[0] != "cuda"):
        key = "\0".join(command) + "\0" + _compiler_version(command[0])
        out_dir = os.path.join("build", "kernels", f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")
        os.makedirs(out_dir, exist_ok=True)
        if kind == "cuda":
            with open(os.path.join("build", "kernels", "cuda.last"), "w") as f:
                f.write(out_dir + "\n")
        todo = 0
        for cu in sorted(sources, key=_include_bytes, reverse=True):  # the longest first
            src = emu_wrapper(cu, out_dir) if kind == "emu" else cu
            obj = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
            objects.append(obj)
            if not (os.path.exists(obj) and os.path.getmtime(obj) >= max(newest, os.path.getmtime(src))):
                jobs.append((kind, command, src, obj))
                todo += 1
        print(f"fastgan: {kind} kernels in {out_dir}: "
              + (f"compiling {todo} of {len(sources)} sources" if todo else "up to date"))

    def run(job):
        kind, command, src, obj = job
        start = time.monotonic()
        cmd = [*command, src, "-o", obj + ".tmp"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            if os.path.exists(obj + ".tmp"):
                os.remove(obj + ".tmp")
            sys.exit(f"fastgan: compiling {src} failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}")
        with open(obj + ".log", "w") as f:  # warnings, nvcc's ptxas report
            f.write(r.stdout + r.stderr)
        os.replace(obj + ".tmp", obj)
        print(f"fastgan: {kind} {os.path.basename(obj)} compiled in {time.monotonic() - start:.0f} s", flush=True)

    n = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max(1, n)) as pool:
        list(pool.map(run, jobs))
    return objects


def cuda_gencode(archs: str) -> list:
    """nvcc's -gencode flags for a TORCH_CUDA_ARCH_LIST such as "8.0;9.0+PTX" (machine code for each, PTX of the
    ones marked +PTX for newer GPUs)."""
    flags = []
    for entry in archs.replace(" ", ";").split(";"):
        if not entry:
            continue
        number, ptx = (entry[:-4], True) if entry.endswith("+PTX") else (entry, False)
        if not re.fullmatch(r"\d+\.\d+[af]?", number):
            sys.exit(f"fastgan: TORCH_CUDA_ARCH_LIST entry {entry!r}: expected a compute capability such as 8.0, "
                     f"9.0a or 9.0+PTX (names such as 'Hopper' are not supported here)")
        cc = number.replace(".", "")
        flags += ["-gencode", f"arch=compute_{cc},code=sm_{cc}"]
        if ptx:
            flags += ["-gencode", f"arch=compute_{cc},code=compute_{cc}"]
    if not flags:
        sys.exit("fastgan: TORCH_CUDA_ARCH_LIST names no architecture")
    return flags


def source_digest_header(build_dir: str) -> str:
    """Writes build_dir/source_digest.h, the digest of the sources being built (fastgan/_source.py; module.cpp
    reports it, so a stale or foreign _C can be told from the tree's own). Rewritten only when the digest changes,
    so ninja recompiles module.cpp alone."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_fastgan_source", os.path.join(ROOT, "fastgan", "_source.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    os.makedirs(build_dir, exist_ok=True)
    path = os.path.join(build_dir, "source_digest.h")
    text = ("// Generated by setup.py: the digest of csrc/ and setup.py this build compiled. Do not edit.\n"
            f'#define FASTGAN_SOURCE_DIGEST "{mod.tree_digest(ROOT)}"\n')
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return os.path.abspath(build_dir)


def build_extension():
    cuda_home, with_emu, no_cuda_reason = configure()
    from torch.utils import cpp_extension

    debug = _flag("FASTGAN_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # registration + pybind module, the glue, the C++ CPU kernels (csrc/kernels/ is compiled by compile_kernels, in
    # BuildExt below: by nvcc for the GPU and, wrapped, by the host compiler for the emulation)
    sources = [f for d in ("csrc", "csrc/ops", "csrc/cpu") for f in sorted(glob.glob(f"{d}/*.cpp"))]
    if not cuda_home:
        sources.remove(os.path.join("csrc", "ops", "cuda_stream.cpp"))
    defines = [("FASTGAN_TORCH_VERSION", f'"{torch.__version__}"'), ("TORCH_ASSERT_ONLY_METHOD_OPERATORS", None)]
    # -fno-trapping-math lets GCC if-convert and vectorise the activation selects (x > 0 ? x : a*x) in the
    # CPU kernels; fastgan does not rely on floating-point exceptions.
    cxx = [*opt, "-Wall", "-Wno-unknown-pragmas", "-fno-trapping-math"]
    # the kernels' own flags: no torch include or define (csrc/kernels/ has none); the C++ ABI torch was built with
    kernel_flags = ["-std=c++17", *opt, f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
                    "-I", os.path.join(ROOT, "csrc")]
    kernel_sources = sorted(glob.glob(os.path.join("csrc", "kernels", "*.cu")))
    kernel_builds = []
    if with_emu:
        sources += sorted(glob.glob("csrc/emu/*.cpp"))
        host = os.environ.get("CXX", "c++")
        instrument = _instrument_flags(host)
        kernel_builds.append(("emu", [host, *kernel_flags, "-fPIC", "-Wall", "-fno-trapping-math", "-DFG_EMU",
                                      *instrument, "-c"]))
        defines += [("FASTGAN_WITH_EMU", None), ("FASTGAN_EMU_INSTRUMENTED", "1" if instrument else "0")]
    if cuda_home:
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        # device warnings are errors; host warnings and the ptxas resource report go to the objects' logs
        nvcc = [os.path.join(cuda_home, "bin", "nvcc"), *kernel_flags, "-Xcompiler", "-fPIC,-Wall,-Wextra", "--Werror",
                "all-warnings", "-Xptxas", "-v", *cuda_gencode(archs)]
        if os.environ.get("CC"):  # the host compiler torch's own nvcc commands would use
            nvcc += ["-ccbin", os.environ["CC"]]
        kernel_builds.append(("cuda", [*nvcc, "-c"]))
        defines += [("FASTGAN_WITH_CUDA", None), ("FASTGAN_CUDA_VERSION", f'"{torch.version.cuda}"'),
                    ("FASTGAN_CUDA_ARCHS", f'"{archs}"')]
        ext_cls = cpp_extension.CUDAExtension  # the CUDA stream glue and the link against torch's CUDA runtime
        print(f"fastgan: building with CUDA kernels (CUDA_HOME={cuda_home}, TORCH_CUDA_ARCH_LIST={archs}, "
              f"emulation {'on' if with_emu else 'off'})")
    else:
        ext_cls = cpp_extension.CppExtension
        print(f"fastgan: building without CUDA kernels ({no_cuda_reason}); emulation {'on' if with_emu else 'off'}")
    ext = ext_cls(
        name="fastgan._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), source_digest_header(os.path.join("build", "gen"))],
        define_macros=defines,
        extra_compile_args={"cxx": cxx},
    )
    # `fastgan bench --cpu-allocator caching` only: its own small module, never loaded by `import fastgan`
    bench_alloc = cpp_extension.CppExtension(
        name="fastgan.bench._allocator",
        sources=sorted(glob.glob("csrc/bench/*.cpp")),
        extra_compile_args={"cxx": [*opt, "-Wall"]},
    )

    class BuildExt(cpp_extension.BuildExtension):
        """torch's extension build after compile_kernels: at build time, not whenever setup.py is imported (pip's
        metadata steps, --help)."""

        def build_extensions(self):
            ext.extra_objects = compile_kernels(kernel_builds, kernel_sources)
            ext.depends = ext.extra_objects  # relinked when they change, also without ninja (which always relinks)
            super().build_extensions()

    return [ext, bench_alloc], {"build_ext": BuildExt}


if True:  # setuptools imports setup.py as __main__ or not, depending on the frontend
    ext_modules, cmdclass = build_extension()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
