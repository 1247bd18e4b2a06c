#!/usr/bin/env bash
# Builds fastgan._C for the lent GPU machines ahead of time, on a machine without a GPU, so that the GPU check
# spends no device time compiling (its build stage takes 1-2 of the few minutes a lent GPU gives):
#
#   bash benchmarks/gpu_prebuild.sh     -> fastgan/_C.cpython-312-x86_64-linux-gnu.so, in place
#
# then run `bash benchmarks/gpu_check.sh` through the device tool with that path in `carry`. The GPU check uses
# the carried _C only if it was built from exactly the tree's sources (the digest of csrc/ + setup.py that _C
# records, fastgan/_source.py), for the torch running there and for the GPU's architecture; otherwise it builds.
#
# The machines' pairing: Python 3.12 (3.12.3 there; any 3.12 has the same ABI), torch 2.11.0+cu130; kernels for
# sm_90 only, no CPU emulation (what the GPU check would build). The venv (.gpu-venv/, ignored by git) is kept
# for the next run. Knobs (environment): GPU_PREBUILD_PYTHON (a Python 3.12), GPU_PREBUILD_TORCH (2.11.0),
# TORCH_CUDA_ARCH_LIST (9.0), MAX_JOBS (all cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_RELEASE="${GPU_PREBUILD_TORCH:-2.11.0}"
VENV="$ROOT/.gpu-venv"

# shellcheck source=tools/find_python.sh
. tools/find_python.sh
py312() {
  if [[ -n "${GPU_PREBUILD_PYTHON:-}" ]]; then echo "$GPU_PREBUILD_PYTHON"; return; fi
  find_python 3.12 || { echo "gpu_prebuild: no Python 3.12 found (set GPU_PREBUILD_PYTHON)" >&2; return 1; }
}

if [[ ! -x "$VENV/bin/python" ]]; then
  "$(py312)" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q "torch==$TORCH_RELEASE" numpy pybind11 ninja setuptools wheel
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc --all)}"
export FASTGAN_CUDA=1 FASTGAN_EMU=0
"$VENV/bin/python" setup.py -q build_ext --inplace
SO="$("$VENV/bin/python" - <<'EOF'
import os, sysconfig
import fastgan._ext as e
info = e.build_info()
assert e.C is not None, e.load_error
assert info["with_cuda"] and not info["with_emu"] and e.stale_reason() is None, info
print(os.path.relpath(e.C.__file__))
EOF
)"
# debug info (Python's -g) is two thirds of the file and of no use there: stripped, under the carry limit
command -v strip >/dev/null && strip --strip-debug "$SO"
SIZE=$(stat -c %s "$SO")
echo "gpu_prebuild: $SO ($(( SIZE / 1048576 )) MiB; torch $TORCH_RELEASE, archs $TORCH_CUDA_ARCH_LIST)"
echo "device tool: run(command=\"bash benchmarks/gpu_check.sh\", carry=[\"$SO\"], timeout_s=420)"
if (( SIZE > 60 * 1048576 )); then
  echo "gpu_prebuild: WARNING: over the device tool's 64 MiB carry limit with the rest of what is carried" >&2
fi
