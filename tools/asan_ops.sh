#!/usr/bin/env bash
# The op suite's C++ CPU kernels and emulated CUDA kernels under AddressSanitizer: an out-of-bounds read or write
# of a tensor (on a GPU a wrong value, or cudaErrorIllegalAddress, which ends the CUDA context), a use after free
# or a stack overflow stops the run with ASan's report. Not part of .ci/run (the build adds ~5 min on 2 cores).
#
#   bash tools/asan_ops.sh [pytest arguments, with absolute test paths]
#   (default: the emulated and native-CPU parameters of tests/test_ops.py and tests/test_properties.py)
#
# CMake builds an emulation-only _C with -fsanitize=address (CMakeLists.txt, FASTGAN_SANITIZE) into build/asan; the
# tests import it from a copy of the fastgan package beside it (the tree's own _C stays as it is). The emulated
# kernels are then compiled without the access hooks, so the race, alignment and programmatic-launch checks of the
# emulator are off in this run; torch's CPU allocator gives every tensor its own heap block, so ASan's redzones
# sit right after each tensor's last byte.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
BUILD=build/asan
CXX="${CXX:-g++}"
cmake -S . -B "$BUILD" -G Ninja -DFASTGAN_CUDA=OFF -DFASTGAN_SANITIZE=address \
  -DPython3_EXECUTABLE="$(command -v "$PY")" >"$BUILD.cmake.log" 2>&1 || { cat "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD"
PKG="$BUILD/pkg"
rm -rf "$PKG" "$BUILD/asan-log".*
mkdir -p "$PKG"
cp -r fastgan "$PKG/"
find "$PKG" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
cp "$BUILD"/_C.*.so "$PKG/fastgan/"
# libasan first; libstdc++ with it, so that ASan's __cxa_throw interceptor finds the real one (python itself does
# not link libstdc++: without it every C++ exception, torch's argument errors too, aborts the process).
export LD_PRELOAD="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:log_path=$PWD/$BUILD/asan-log"  # (leaks: CPython's and torch's own)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ROOT="$PWD"
# From inside the copy: `python -m pytest` puts the working directory first on sys.path, so the package found
# there is the copy with the ASan _C (from the repository root it would be the tree's own).
cd "$PKG"
"$PY" -c "import fastgan._ext as e, sys; sys.exit(0 if e.C is not None and e.C.__file__.startswith('$ROOT/$PKG') \
else 'asan_ops: the ASan build of _C was not loaded: %s %s' % (e.C, e.load_error))"
rc=0
if [[ $# -gt 0 ]]; then
  "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" "$@" || rc=$?
else
  "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" -n 2 "$ROOT/tests/test_ops.py" "$ROOT/tests/test_properties.py" \
    -k "emu or native" || rc=$?
fi
cd "$ROOT"
if compgen -G "$BUILD/asan-log.*" >/dev/null; then
  echo "asan_ops: AddressSanitizer reports ($BUILD/asan-log.*):"
  cat "$BUILD"/asan-log.*
  exit 1
fi
exit $rc
