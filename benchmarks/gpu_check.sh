#!/usr/bin/env bash
# The GPU check, one command for a lent CUDA machine (made for the H200: torch 2.11 + CUDA 13.0, Python 3.12,
# 16 cores, no internet), run from anywhere inside the source tree:
#
#   bash benchmarks/gpu_check.sh            build from source, CUDA test suite, compute-sanitizer, benchmark
#   bash benchmarks/gpu_check.sh --dry-run  the same plumbing with what runs without a GPU (no build; the same
#                                           test selection, the sanitizer workload and a smoke bench on CPU)
#
# Stages, each under `timeout` with its cap, cut to what the budget leaves after the later stages' reserves
# (GPU_CHECK_BUDGET, default 375 s, is the whole script's budget: run it through the device tool with timeout_s
# 420). A stage that fails or times out
# is recorded and the next one still runs; every stage writes its own file at once, so a run cut short still
# leaves the earlier stages' results:
#   env        20 s  nvidia-smi, torch/CUDA versions, nvcc, compute-sanitizer's location        -> env.txt
#   build     120 s  pip install --no-build-isolation --no-deps --no-index -e . (sm_90 only, all cores, no
#                    emulation)                                                                -> build.txt
#                    skipped when the tree holds a _C built from these very sources for this torch and GPU
#                    (benchmarks/gpu_prebuild.sh on this side, the .so carried in: see that script)
#   tensor-cores 30 s  tests/emu/tensorcore_gpu.cu: mma/mma_grid/ldmatrix layouts, cp.async = the emulation -> tensorcore.txt
#   pytest  30-65 s  the tests that take a CUDA path (-k cuda), no -x, -v, 30 s per test and 8 workers where
#                    pytest-timeout / pytest-xdist are installed there                       -> pytest.txt
#   memcheck   35 s  compute-sanitizer --tool memcheck  python benchmarks/sanitize_ops.py       -> sanitizer.txt
#   racecheck  25 s  compute-sanitizer --tool racecheck python benchmarks/sanitize_ops.py       -> sanitizer.txt
#                    With a prebuilt _C every stage up to bench-pdl gets its cap (~360 s in all). When it must build,
#                    the caps add up to more than the budget: pytest gets what the build leaves, memcheck 30 s, and
#                    racecheck is the stage skipped (the emulator's race check covers shared memory in CI).
#   probe      20 s  benchmarks/latency_probe.py: a CUDA graph's per-node cost for dependent small kernels (PDL
#                    off / on), the GEMM tiles' time per k-tile (SIMT, TF32, BF16): the design's two latencies
#                                                                                               -> probe.txt
#   bench-fp32 45 s  fastgan bench --device cuda --quick --tf32 off (equal precision: FP32 both), the step and
#                    the large shapes first, no torch.compile                                   -> bench_fp32/
#   bench-tf32 35 s  the same with TF32 allowed for stock and fastgan alike                     -> bench_tf32/
#   trace      20 s  benchmarks/trace_step.py: kernels, count and device time per training step  -> trace.txt
#   compile    45 s  the stock step under torch.compile (mode default), TF32, beside eager     -> bench_compile/
#   bench-pdl  20 s  fastgan's step again, TF32, programmatic dependent launch on (FASTGAN_CUDA_PDL=1): compare
#                    with bench_tf32's fastgan rows                                             -> bench_pdl/
#   compile-ro  rest torch.compile mode reduce-overhead, in what the budget has left             -> bench_compile_ro/
#                    (max-autotune does not fit a call: its autotuning takes minutes)
# Everything is written to one folder: gpu_check_out/ in the tree, or with $OUT set (the device tool, which brings
# back at most 8 files) a scratch folder packed after every stage into $OUT/results.tgz, with log.txt beside it.
# The last lines of log.txt are the stage summary. benchmarks/RESULTS.md says how to read them into the results
# table. Exit status: 0 when every stage passed, 1 otherwise.
#
# Knobs (environment): GPU_CHECK_BUDGET (s), PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0),
# MAX_JOBS (default: all cores), GPU_CHECK_SAN_FILTER (compute-sanitizer --kernel-name filter, default
# kns=fastgan: only fastgan's kernels are instrumented), GPU_CHECK_PYTEST_WORKERS (pytest-xdist workers, default 8).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

# The device tool brings back at most 8 files from $OUT: with $OUT set, the results are written to a scratch folder
# and packed into $OUT/results.tgz after every stage (publish, below); log.txt is copied beside it.
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
  OUTDIR="$(mktemp -d "${TMPDIR:-/tmp}/fastgan_gpu_check.XXXXXX")"
else
  OUTDIR="$ROOT/gpu_check_out"
  mkdir -p "$OUTDIR"
  OUTDIR="$(cd "$OUTDIR" && pwd)"
fi
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/fastgan_gpu_scratch.XXXXXX")"  # built binaries: not results
LOG="$OUTDIR/log.txt"
: > "$LOG"; : > "$OUTDIR/pytest.txt"; : > "$OUTDIR/sanitizer.txt"; : > "$OUTDIR/env.txt"
: > "$OUTDIR/build.txt"; : > "$OUTDIR/trace.txt"; : > "$OUTDIR/tensorcore.txt"; : > "$OUTDIR/probe.txt"
rm -rf "$OUTDIR"/bench_*
BUDGET="${GPU_CHECK_BUDGET:-375}"
BENCH_RESERVE=185   # seconds kept for the probe, benchmarks (fp32, tf32), trace, compile and pdl during the others
T0=$(date +%s)
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || PY=python
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the tree's fastgan for every stage (scripts in benchmarks/ too)
export MPLBACKEND=Agg
STAGES=()

log() { echo "$*" | tee -a "$LOG"; }
# with $OUT: the results so far, packed (a new archive replaces the old one whole: a call cut short keeps the last)
publish() {
  [[ -n "${OUT:-}" ]] || return 0
  tar -czf "$OUT/results.tgz.part" -C "$OUTDIR" . 2>/dev/null && mv -f "$OUT/results.tgz.part" "$OUT/results.tgz"
  cp -f "$LOG" "$OUT/log.txt" 2>/dev/null
  return 0
}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(date +%s) + T0 )); }

# stage NAME LIMIT RESERVE FILE CMD...: CMD under timeout min(LIMIT, time left - RESERVE); output to FILE and log.txt
stage() {
  local name=$1 limit=$2 reserve=$3 file=$4
  shift 4
  local avail=$(( $(left) - reserve ))
  local lim=$(( limit < avail ? limit : avail ))
  if (( lim < 15 )); then
    log "== $name: SKIPPED (time budget used up: $(left) s left)"
    STAGES+=("$name|skipped|0")
    return 0
  fi
  log "== [$(date -u +%H:%M:%S) +$(elapsed)s] $name (limit ${lim}s): $*"
  local s rc
  s=$(date +%s)
  if [[ "$file" == "$LOG" ]]; then
    timeout -k 10 "$lim" "$@" 2>&1 | tee -a "$LOG"
  else
    (echo "== $name: $*"; timeout -k 10 "$lim" "$@" 2>&1; r=$?; echo "== $name: exit status $r"; exit $r) \
      | tee -a "$file" >> "$LOG"
  fi
  rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - s )) st=ok
  if (( rc == 124 || rc == 137 )); then st="TIMEOUT"; elif (( rc != 0 )); then st="FAILED(rc=$rc)"; fi
  log "== $name: $st after ${dt}s"
  STAGES+=("$name|$st|$dt")
  publish
  return 0
}

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
    [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
  done
  c=$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for p in glob.glob(os.path.join(r, "nvidia", "**", "compute-sanitizer"), recursive=True):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            print(p); sys.exit(0)
EOF
)
  [[ -n "$c" ]] && { echo "$c"; return 0; }
  return 1
}

env_report() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)   mode: $([[ $DRY == 1 ]] && echo dry-run || echo gpu)"
  echo "--- uname / cpu"; uname -a; (lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)') || true; nproc
  echo "--- nvidia-smi"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu \
      --format=csv || true
  else
    echo "nvidia-smi: not found"
  fi
  echo "--- nvcc"; (command -v nvcc && nvcc --version) || echo "nvcc: not found"
  echo "--- compute-sanitizer"; find_sanitizer || echo "compute-sanitizer: not found"
  echo "--- python / torch"
  "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", "SMs", p.multi_processor_count,
          "L2", getattr(p, "L2_cache_size", "?"), "memory", p.total_memory)
print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "tf32 cudnn", torch.backends.cudnn.allow_tf32)
for m in ("pytest", "pytest_benchmark", "hypothesis", "matplotlib", "tqdm", "numpy", "triton"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
EOF
  echo "--- source tree"; (git -C "$ROOT" log -1 --oneline 2>/dev/null && git -C "$ROOT" status --short 2>/dev/null | head -30) \
    || echo "(no git metadata)"
}

log "fastgan GPU check: $ROOT -> $OUTDIR, budget ${BUDGET}s, $([[ $DRY == 1 ]] && echo DRY RUN || echo full run)"

# ---- env (timeout runs programs, not shell functions: through bash -c with the functions exported)
export -f env_report find_sanitizer
export ROOT DRY PY
stage env 20 0 "$OUTDIR/env.txt" bash -c env_report

# ---- build
if [[ $DRY == 1 ]]; then
  log "== build: SKIPPED (dry run: using the fastgan already importable here)"
  STAGES+=("build|skipped(dry)|0")
elif timeout -k 5 60 "$PY" - >> "$OUTDIR/build.txt" 2>&1 <<'EOF'
# A _C already in the tree, built ahead of time from exactly these sources for this torch and this GPU
# (benchmarks/gpu_prebuild.sh on a machine without one, carried in): used as it is, no device time on compiling.
import torch, fastgan._ext as e
from fastgan.doctor import _arch_covered
assert e.C is not None, e.load_error
info = e.build_info()
assert info["with_cuda"] and info["source_digest"] and e.stale_reason() is None, "not built from these sources"
assert torch.cuda.is_available() and _arch_covered(torch.cuda.get_device_capability(0), info["cuda_archs"])
print("== build: prebuilt", e.C.__file__, info)
EOF
then
  log "== build: SKIPPED (a prebuilt _C of these sources for this torch and GPU is in the tree: build.txt)"
  STAGES+=("build|skipped(prebuilt)|0")
  timeout -k 5 60 "$PY" -m fastgan doctor 2>&1 | tee -a "$LOG" > /dev/null || true
else
  log "== build: no usable prebuilt _C (why, from build.txt):"
  tail -3 "$OUTDIR/build.txt" | sed 's/^/   /' | tee -a "$LOG"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc --all)}"
  export FASTGAN_EMU=0 FASTGAN_CUDA=1
  stage build 120 $(( BENCH_RESERVE + 60 )) "$OUTDIR/build.txt" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .
  stage build-check 20 "$BENCH_RESERVE" "$OUTDIR/build.txt" "$PY" -c "
import fastgan, fastgan._ext as e
from fastgan import doctor
print(e.build_info())
assert e.C is not None, e.load_error
assert e.has_cuda(), 'fastgan._C has no CUDA kernels'
"
  timeout -k 5 60 "$PY" -m fastgan doctor 2>&1 | tee -a "$LOG" > /dev/null || true
fi
publish

# ---- tensor-core layouts: the emulated mma.sync / ldmatrix fragment layouts (csrc/kernels/mma.cuh) against the
# hardware, with the scalar models of tests/emu/emu_tests.cpp's `tensor_cores` case (a dry run only compiles)
NVCC="$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")"
TC_BUILD=("$NVCC" -std=c++17 -O2 -I csrc -I tests/emu -gencode arch=compute_90,code=sm_90 tests/emu/tensorcore.cu
          tests/emu/tensorcore_gpu.cu -o "$SCRATCH/tensorcore_check")
if [[ $DRY == 1 ]]; then
  stage tensor-cores 60 0 "$OUTDIR/tensorcore.txt" "${TC_BUILD[@]}"
else
  stage tensor-cores 30 "$(( BENCH_RESERVE + 60 ))" "$OUTDIR/tensorcore.txt" \
    bash -c '"$@" && "${@: -1}"' _ "${TC_BUILD[@]}"
fi

# ---- tests
# Everything that takes a CUDA path (its id says cuda; -k is case-insensitive): the op suite's native-cuda
# parameter, the CUDA settings, the trainer's CUDA step and CUDA-graph capture; not the CPU-only compile and
# Gloo DDP tests (CI runs those). No -x: one failure must not hide the rest. -v: each test's outcome is in
# pytest.txt as it finishes, so a stage cut short by its cap still says which tests passed and failed. A dry run
# runs the same selection (on a machine without a GPU most of it skips: ~15 s); on the GPU, a per-test timeout when
# pytest-timeout is installed and pytest-xdist over 8 cores when it is, 65 s after a prebuilt _C, 30-65 s after a
# build (what it leaves).
EXTRA=()
if [[ $DRY == 1 ]]; then
  CAP=120 RESERVE=0
else
  CAP=65 RESERVE=$(( BENCH_RESERVE + 30 ))
  timeout 20 "$PY" -c "import pytest_timeout" >/dev/null 2>&1 && EXTRA+=(--timeout 30)
  timeout 20 "$PY" -c "import xdist" >/dev/null 2>&1 && EXTRA+=(-n "${GPU_CHECK_PYTEST_WORKERS:-8}")
fi
stage pytest "$CAP" "$RESERVE" "$OUTDIR/pytest.txt" \
  "$PY" -m pytest -v --tb=short -p no:cacheprovider -rfEs ${EXTRA[@]+"${EXTRA[@]}"} -k cuda tests

# ---- compute-sanitizer
SAN="$(find_sanitizer || true)"
SAN_DEV=cuda; [[ $DRY == 1 ]] && SAN_DEV=cpu
if [[ -n "$SAN" && $DRY == 0 ]]; then
  FILTER="${GPU_CHECK_SAN_FILTER:-kns=fastgan}"
  for tool in memcheck racecheck; do
    # (--report-api-errors no: this checks kernels; torch's own harmless failed API calls would count as errors)
    args=(--tool "$tool" --error-exitcode 9 --print-limit 50 --report-api-errors no)
    [[ -n "$FILTER" ]] && args+=(--kernel-name "$FILTER")
    limit=35; [[ $tool == racecheck ]] && limit=25
    stage "$tool" "$limit" "$BENCH_RESERVE" "$OUTDIR/sanitizer.txt" \
      env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" "${args[@]}" "$PY" benchmarks/sanitize_ops.py --device "$SAN_DEV"
  done
else
  why="compute-sanitizer not found (looked on PATH, \$CUDA_HOME/bin, /usr/local/cuda*/bin, nvidia pip packages)"
  [[ $DRY == 1 ]] && why="dry run"
  echo "compute-sanitizer not run: $why; running the workload without it" >> "$OUTDIR/sanitizer.txt"
  stage sanitizer-workload 90 "$(( DRY == 1 ? 0 : BENCH_RESERVE ))" "$OUTDIR/sanitizer.txt" \
    "$PY" benchmarks/sanitize_ops.py --device "$SAN_DEV"
  STAGES+=("compute-sanitizer|not run ($why)|0")
fi

# ---- the two latencies the step prediction rests on (benchmarks/notes_kernels.md), before the benchmarks: cheap
PROBE_DEV=cuda; [[ $DRY == 1 ]] && PROBE_DEV=cpu
PROBE_ARGS=(--device "$PROBE_DEV" --out "$OUTDIR"); [[ $DRY == 1 ]] && PROBE_ARGS+=(--quick)
stage probe 20 100 "$OUTDIR/probe.txt" "$PY" benchmarks/latency_probe.py "${PROBE_ARGS[@]}"

# ---- benchmarks: equal precision first (FP32 on both sides), then TF32 allowed on both sides. The step and the
# large shapes first (the routing decisions need the large ones; a budget that ends early cuts the small ones); no
# torch.compile in these (it compiles last and would run into the stage's cap): its own stages follow the trace.
NOCOMPILE="stock,bare,fastgan,fastgan-kernels,fastgan-aten,fastgan+graph,eager,eager+graph"
ORDER="step,*/large/*,*"
if [[ $DRY == 1 ]]; then
  stage bench-fp32 120 0 "$LOG" "$PY" -m fastgan bench --device cpu --quick --smoke --threads 1 \
    --out "$OUTDIR/bench_fp32"
else
  stage bench-fp32 45 55 "$LOG" "$PY" -m fastgan bench --device cuda --quick --tf32 off --no-plot \
    --cases "$ORDER" --variants "$NOCOMPILE" --out "$OUTDIR/bench_fp32" --time-budget 36
  stage bench-tf32 35 20 "$LOG" "$PY" -m fastgan bench --device cuda --quick --tf32 on --no-plot \
    --cases "$ORDER" --variants "$NOCOMPILE" --out "$OUTDIR/bench_tf32" --time-budget 27
fi

# ---- the training step's kernels: names, count, device time per kernel, device time vs wall time
TRACE_DEV=cuda; [[ $DRY == 1 ]] && TRACE_DEV=cpu
stage trace 20 0 "$OUTDIR/trace.txt" "$PY" benchmarks/trace_step.py --device "$TRACE_DEV" --steps 2 --out "$OUTDIR"

# ---- stock's step under torch.compile (TF32, the precision its best case is quoted at), beside eager in the same
# run (no --time-budget: it counts the ceilings' probes, and a compile that starts is let run to the stage's cap);
# fastgan's step with programmatic dependent launch; then reduce-overhead with what is left
if [[ $DRY == 0 ]]; then
  STEP="step/*/train"  # the plain step: the R1 step has no compile variant
  stage compile 45 20 "$LOG" "$PY" -m fastgan bench --device cuda --quick --tf32 on --no-plot --cases "$STEP" \
    --variants eager,eager+graph,compile --out "$OUTDIR/bench_compile"
  stage bench-pdl 20 0 "$LOG" env FASTGAN_CUDA_PDL=1 "$PY" -m fastgan bench --device cuda --quick --tf32 on \
    --cases "$STEP" --variants fastgan,fastgan+graph --no-plot --out "$OUTDIR/bench_pdl" --time-budget 12
  stage compile-ro 60 0 "$LOG" "$PY" -m fastgan bench --device cuda --quick --tf32 on --no-plot --cases "$STEP" \
    --variants eager,eager+graph,compile-ro --out "$OUTDIR/bench_compile_ro"
fi

# ---- summary (last, so the end of the output carries it)
log ""
log "== summary ($(elapsed) s of a ${BUDGET} s budget)"
FAIL=0
for s in "${STAGES[@]}"; do
  IFS='|' read -r n st dt <<<"$s"
  log "$(printf '  %-20s %-32s %5ss' "$n" "$st" "$dt")"
  [[ "$st" == ok || "$st" == skipped* || "$st" == "not run"* ]] || FAIL=1
done
# pytest's own last line when it finished; else the outcomes its -v lines recorded before it was stopped
PT="$(grep -E '^=+ .*(passed|failed|error|skipped|deselected).* in [0-9.]+s' "$OUTDIR/pytest.txt" | tail -1)"
if [[ -z "$PT" ]]; then
  f="$OUTDIR/pytest.txt"
  PT="cut short: $(grep -E '::.* PASSED|PASSED .*::' "$f" | wc -l) passed, $(grep -E '::.* FAILED|FAILED .*::' "$f" \
    | grep -vc '^FAILED ') failed, $(grep -E '::.* SKIPPED|SKIPPED .*::' "$f" | wc -l) skipped so far"
fi
log "  pytest: $PT"
grep -E "ERROR SUMMARY|all checks passed|FAILED" "$OUTDIR/sanitizer.txt" | sed 's/^/  sanitizer: /' | tee -a "$LOG" || true
for b in bench_fp32 bench_tf32 bench_compile bench_pdl bench_compile_ro; do
  [[ -s "$OUTDIR/$b/bench.json" ]] || continue
  log "  $b:"
  timeout 30 "$PY" - "$OUTDIR/$b/bench.json" <<'EOF' 2>/dev/null | tee -a "$LOG" || true
import json, sys
d = json.load(open(sys.argv[1]))
for c in d["cases"]:
    if c["family"] != "step":
        continue
    for r in c["results"]:
        if r.get("median_s"):
            sp = f"{r['ratio_vs_stock']:.2f}x vs {r['baseline']}" if r.get("ratio_vs_stock") else ""
            print(f"  {c['name']:24s} [{r['variant']:14s}] {r['median_s'] * 1e6:9.1f} us  {sp}")
# the CUDA routing decisions (csrc/ops/gemm_glue.cpp) against both forced routes
print("  routing: case, auto / kernels / aten (us), fastest forced route")
for c in d["cases"]:
    t = {r["variant"]: r["median_s"] for r in c["results"] if r.get("median_s")}
    if "fastgan-kernels" in t and "fastgan-aten" in t:
        best = "kernels" if t["fastgan-kernels"] <= t["fastgan-aten"] else "aten"
        auto = f"{t['fastgan'] * 1e6:9.1f}" if "fastgan" in t else "        -"
        print(f"  {c['name']:28s} {auto} / {t['fastgan-kernels'] * 1e6:9.1f} / {t['fastgan-aten'] * 1e6:9.1f}  {best}")
EOF
done
grep -E "^== (per|GEMM)" "$OUTDIR/probe.txt" | sed 's/^/  probe: /' | tee -a "$LOG" || true
grep -E "^== " "$OUTDIR/trace.txt" | sed 's/^/  trace: /' | tee -a "$LOG" || true
log "files: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
if [[ -n "${OUT:-}" ]]; then
  log "packed into $OUT/results.tgz (tar -xzf results.tgz); log.txt beside it"
fi
publish
rm -rf "$SCRATCH"
[[ -n "${OUT:-}" && -s "$OUT/results.tgz" ]] && rm -rf "$OUTDIR"
exit $FAIL
