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
# torch's CMake package wants a whole CUDA toolkit (cuBLAS, cuSPARSE, NVRTC, ...),
# where this machine's nvcc comes with the compiler and runtime only. NVIDIA's
# wheels, installed with torch, carry the rest: one folder of links joins the
# two into a toolkit root (unversioned library names included).
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
[ -x "$CUDA_HOME/bin/nvcc" ] || CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
NV=$("$VENV/bin/python" -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
SHIM="$ROOT/build/cuda-toolkit"
rm -rf "$SHIM"
mkdir -p "$SHIM/include" "$SHIM/lib64"
ln -s "$CUDA_HOME/bin" "$SHIM/bin"
for d in nvvm targets; do [ -d "$CUDA_HOME/$d" ] && ln -s "$CUDA_HOME/$d" "$SHIM/$d"; done
for pair in include:include lib64:lib; do
  for dir in "$CUDA_HOME/${pair%%:*}" "$NV"/*/"${pair##*:}"; do
    [ -d "$dir" ] || continue
    for f in "$dir"/*; do
      [ -e "$SHIM/${pair%%:*}/$(basename "$f")" ] || ln -s "$f" "$SHIM/${pair%%:*}/"
    done
  done
done
for f in "$SHIM"/lib64/lib*.so.*; do
  base="${f%%.so.*}.so"
  [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
done
# The compilers see the joined headers too: the CUDA toolkit that CMake's
# CUDA language support finds is nvcc's own.
export CPATH="$SHIM/include${CPATH:+:$CPATH}"
export EXTRA_CMAKE_FLAGS="-DCUDA_TOOLKIT_ROOT_DIR=$SHIM -DCUDAToolkit_ROOT=$SHIM -DCMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc"
PYTHON="$VENV/bin/python" BUILD="$ROOT/build/cuda" exec scripts/gpu_check.sh "${1:-$ROOT/build/cuda-check}"
