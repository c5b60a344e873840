#!/usr/bin/env bash
# The CUDA build leg (make test-cuda-build): the CUDA operators compiled and
# linked against pip's CUDA build of PyTorch, here, without a GPU.
#
# Installs torch 2.14.1 for CUDA (about 5.5 GB with NVIDIA's runtime wheels,
# once) into a virtual environment, then runs scripts/gpu_check.sh with it:
# configure (CUDA kernels and CUDA operators ON), build, the C/C++ suites and
# the Python suites. With no device visible the CUDA tests skip and the
# benchmarks are not run; on a GPU machine the same script measures.
#   scripts/cuda_build.sh [OUT_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv-cuda}
TORCH=${TORCH:-torch==2.14.1}
cd "$ROOT"
[ -x "$VENV/bin/python" ] || ${PYTHON:-python3} -m venv "$VENV"
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH#torch==}')" 2>/dev/null ||
  "$VENV/bin/python" -m pip install -q "$TORCH" numpy pytest expecttest
# googletest built with this torch's flags (the GPU machines have no Debian package).
[ -f third_party/googletest/CMakeLists.txt ] || cp -r /usr/src/googletest third_party/googletest
# The CUDA toolkit beside nvcc may lack the math libraries' headers that torch's
# CUDA headers include; NVIDIA's wheels, installed with torch, carry them.
NV=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]) + "/nvidia")' 2>/dev/null || true)
if [ -n "$NV" ]; then
  for inc in "$NV"/*/include; do CPATH="${CPATH:+$CPATH:}$inc"; done
  export CPATH
fi
PYTHON="$VENV/bin/python" BUILD="$ROOT/build/cuda" exec scripts/gpu_check.sh "${1:-$ROOT/build/cuda-check}"
