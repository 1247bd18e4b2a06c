#!/usr/bin/env python3
"""Compile every CUDA kernel source for sm_80 and sm_90 with warnings as errors and print the ptxas resource
report (registers, shared memory, spills) per kernel. Fails on any warning, and on any spill in the float32 /
float16 / bfloat16 kernels (the hot ones); spills in float64 instantiations (used for gradcheck, not for speed) are
reported but allowed. Also checks that every kernel waits for its grid dependency before touching global memory.

Needs nvcc only (no torch, no GPU). CI runs it so the kernel build and its resource usage are in the log:
    python tools/check_kernels.py [--arch 80 --arch 90] [--nvcc PATH]
    python tools/check_kernels.py --from-build [build/kernels/cuda-<digest>]
The second form reads the compiles that setup.py made, by default its last CUDA build's (each object's .log: its
warnings and ptxas report) instead of compiling the kernels again; only the PTX for the grid-dependency check and
the tensor-core instruction tests are compiled.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_nvcc(explicit=None):
    if explicit:
        return explicit
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def short(name: str) -> str:
    name = re.sub(r"fastgan::cuda::\(anonymous namespace\)::", "", name)
    name = re.sub(r"fastgan::", "", name)
    return name.split("(")[0] if len(name) > 110 else name


# A memory instruction in PTX: loads, stores, atomics, reductions, async copies, prefetches, texture fetches; those
# that name a state space other than global (kernel parameters, shared, local, constant memory) are not global.
_MEM_OP = re.compile(r"^\s*(?:@!?%p\d+\s+)?(ld|ldu|st|atom|red|cp\.async|prefetch|tex)\b(\.[\w:]+)*")
_NOT_GLOBAL = (".param", ".shared", ".local", ".const")


def check_grid_dependency(nvcc: str, src: str, tmp: str) -> list:
    """Programmatic dependent launch (csrc/kernels/common.cuh): every kernel entry of the sm_90 code must execute
    griddepcontrol.wait before any instruction that may touch global memory. Checked on the PTX nvcc emits (the
    program order ptxas keeps across the wait), so a kernel that forgot grid_dependency_sync() or a load the front end
    hoisted above it is caught here, not only under the emulation. Returns the offending entries with the first such
    instruction."""
    ptx = os.path.join(tmp, os.path.basename(src) + ".ptx")
    r = subprocess.run([nvcc, "-ptx", src, "-o", ptx, "-std=c++17", "-O3", "-I", os.path.join(ROOT, "csrc"),
                        "-arch=compute_90"], capture_output=True, text=True)
    if r.returncode != 0:
        return [("(nvcc -ptx failed)", r.stderr.strip()[-300:])]
    bad, entry, waited = [], None, False
    for line in open(ptx):
        m = re.match(r"\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+(\S+?)\(", line)
        if m:
            entry, waited = m.group(1), False
            continue
        if entry is None:
            continue
        if line.startswith("}"):
            if not waited:
                bad.append((entry, "no griddepcontrol.wait"))
            entry = None
            continue
        if "griddepcontrol.wait" in line:
            waited = True
            continue
        mo = _MEM_OP.match(line)
        if not waited and mo and not any(sp in mo.group(0) for sp in _NOT_GLOBAL):
            bad.append((entry, line.strip()))
            waited = True  # one report per entry
    return bad


def defines_kernels(src: str) -> bool:
    """Whether a source compiles kernels of its own: a __global__ in its text, or an FG_GEMM_<TYPE>() instantiation
    of gemm.cuh's (a source that only includes headers with kernels, as conv2d.cu, has no ptxas entries)."""
    with open(src, encoding="utf-8") as f:
        text = f.read()
    return "__global__" in text or re.search(r"^FG_GEMM_[A-Z0-9]+\(\)", text, re.M) is not None


def parse_report(log: str) -> list:
    """[(mangled kernel, sm_XX, registers, smem, stack, spill stores, spill loads)] from nvcc -Xptxas -v output."""
    current, entries = None, []
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            current = [m.group(1), m.group(2), 0, 0, 0, 0, 0]
            entries.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current[5], current[6] = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current[2] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current[3] = int(s.group(1)) if s else 0
        m = re.search(r"(\d+) bytes stack frame", line)
        if m:
            current[4] = int(m.group(1))
    return entries


def build_logs(build_dir: str, kernel_sources: list) -> dict:
    """{source: (ok, output)} from setup.py's compiles in build_dir (build/kernels/cuda-<digest>/): each object's
    .log. A missing or stale object (older than a kernel source or header) is a failure: rebuild first."""
    newest = max(os.path.getmtime(f) for f in glob.glob(os.path.join(ROOT, "csrc", "kernels", "*")))
    out = {}
    for src in kernel_sources:
        obj = os.path.join(build_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
        if not (os.path.exists(obj + ".log") and os.path.getmtime(obj) >= newest):  # as setup.py (make's rule)
            out[src] = (False, f"{obj}: missing or older than the kernel sources (build first: pip install -e .)")
            continue
        log = open(obj + ".log").read()
        # setup.py's host compiler flags are -Wall -Wextra without -Werror (a user's compiler may warn): here a
        # warning fails, as in the compile below
        warned = [line for line in log.splitlines() if re.search(r"\bwarning\b", line, re.I)]
        out[src] = (False, "\n".join(warned)) if warned else (True, log)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", default=None)
    ap.add_argument("--nvcc")
    ap.add_argument("--from-build", metavar="DIR", nargs="?", const="",
                    help="setup.py's CUDA kernel objects and logs (default: the last build's, build/kernels/cuda.last)")
    args = ap.parse_args()
    if args.from_build == "":
        last = os.path.join(ROOT, "build", "kernels", "cuda.last")
        if not os.path.exists(last):
            print(f"check_kernels: no {os.path.relpath(last)}: build with the CUDA kernels first", file=sys.stderr)
            return 2
        args.from_build = os.path.join(ROOT, open(last).read().strip())
    archs = args.arch or ["80", "90"]
    nvcc = find_nvcc(args.nvcc)
    if not nvcc:
        print("check_kernels: nvcc not found (set CUDA_HOME)", file=sys.stderr)
        return 2
    kernel_sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "kernels", "*.cu")))
    # and the tensor-core instruction tests (csrc/kernels/mma.cuh's inline PTX is compiled nowhere else until a
    # kernel uses it): always compiled here
    test_sources = [os.path.join(ROOT, "tests", "emu", "tensorcore.cu")]
    to_compile = test_sources if args.from_build else kernel_sources + test_sources
    failed = False
    rows = []
    # one nvcc per core at a time (MAX_JOBS, as the build): each compile is single-threaded and they are independent
    jobs = max(1, int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        gencode = sum((["-gencode", f"arch=compute_{a},code=sm_{a}"] for a in archs), [])

        def compile_one(src):
            cmd = [nvcc, "-c", src, "-o", os.path.join(tmp, os.path.basename(src) + ".o"), "-std=c++17", "-O3", "-I",
                   os.path.join(ROOT, "csrc"), "-I", os.path.join(ROOT, "tests", "emu"), *gencode,
                   "-Xptxas", "-v", "--Werror", "all-warnings",
                   "-Xcompiler", "-Wall,-Wextra,-Werror"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            return r.returncode == 0, r.stdout + r.stderr

        pdl_checks = pool.map(lambda src: check_grid_dependency(nvcc, src, tmp), kernel_sources)
        results = dict(zip(to_compile, pool.map(compile_one, to_compile)))
        if args.from_build:
            results.update(build_logs(args.from_build, kernel_sources))
        for src in kernel_sources + test_sources:
            ok, log = results[src]
            rel = os.path.relpath(src, ROOT)
            if not ok:
                failed = True
                print(f"FAILED: {rel}\n{log}", file=sys.stderr)
                continue
            entries = parse_report(log)
            if not entries and "ptxas info" in log and not defines_kernels(src):
                print(f"{rel}: no kernel entries (it defines none: it launches kernels of gemm_*.cu)")
                continue
            missing = sorted({f"sm_{a}" for a in archs} - {e[1] for e in entries})
            if missing:
                failed = True
                print(f"FAILED: {rel}: no ptxas report for {', '.join(missing)} (built for other archs?)",
                      file=sys.stderr)
            names = demangle([e[0] for e in entries])
            for e, n in zip(entries, names):
                rows.append((rel, e[1], short(n), *e[2:]))
                if (e[5] or e[6]) and "<double" not in n:
                    failed = True
        pdl_bad = [(os.path.relpath(src, ROOT), e, why) for src, bad in zip(kernel_sources, pdl_checks)
                   for e, why in bad]
    print(f"{'source':<26} {'arch':<6} {'regs':>4} {'smem':>6} {'stack':>5} {'spill st/ld':>11}  kernel")
    for rel, arch, name, regs, smem, stack, sst, sld in rows:
        flag = ("  <-- SPILLS (float64: allowed)" if "<double" in name else "  <-- SPILLS") if (sst or sld) else ""
        print(f"{rel:<26} {arch:<6} {regs:>4} {smem:>6} {stack:>5} {f'{sst}/{sld}':>11}  {name}{flag}")
    names = demangle([e for _, e, _ in pdl_bad])
    for (rel, _, why), name in zip(pdl_bad, names):
        print(f"GRID DEPENDENCY: {rel}: {short(name)}: global memory before griddepcontrol.wait: {why}")
    failed = failed or bool(pdl_bad)
    print(f"check_kernels: every kernel entry of {len(kernel_sources)} sources waits (griddepcontrol.wait) before its "
          f"first global-memory instruction (sm_90 PTX): {'NO' if pdl_bad else 'yes'}")
    origin = f"setup.py's build in {os.path.relpath(args.from_build)}" if args.from_build else "compiled here"
    print(f"check_kernels: {len(kernel_sources) + len(test_sources)} sources ({origin}), {len(rows)} kernel builds, "
          f"archs {','.join(archs)}: {'FAILED' if failed else 'ok (no warnings, no spills outside float64 kernels)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
