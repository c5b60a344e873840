#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a CUDA GPU, PyTorch 2.x, nvcc
# and CMake but no internet and no Debian packages:
#   scripts/gpu_check.sh OUT_DIR
# Builds against torch's own CMake package (googletest from
# third_party/googletest if present: `cp -r /usr/src/googletest third_party/`
# on a Debian machine, then carry it), runs the C/C++ and Python suites
# (CUDA tests included), the kernel bandwidth benchmark and the MWN, LFT and
# MetaXL A/B benchmarks on CUDA. Logs and JSON go to OUT_DIR. ~8 minutes.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUILD=${BUILD:-$ROOT/build-gpu}
mkdir -p "$OUT"
cd "$ROOT"
status=0
step() { echo "== $1"; }
run() {  # run NAME CMD...: log to OUT/NAME.log, remember failures
  local name=$1; shift
  step "$name"
  if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (rc $?), tail:"; tail -25 "$OUT/$name.log"; status=1; fi
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -2; } | tee "$OUT/machine.txt"

PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
GTEST_NOTE="googletest: third_party/googletest"
[ -f third_party/googletest/CMakeLists.txt ] || GTEST_NOTE="googletest: not found, C/C++ suites skipped (copy /usr/src/googletest to third_party/googletest)"
echo "$GTEST_NOTE" | tee -a "$OUT/machine.txt"
ARCH=$($PY -c 'import torch; p=torch.cuda.get_device_properties(0); print(f"{p.major}{p.minor}")')
run configure cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DEVOGRAD_PYTHON="$(command -v $PY)" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DEVOGRAD_SANITIZE=OFF
run build cmake --build "$BUILD" -j"$(nproc)"
export EVOGRAD_LIBRARY="$BUILD/libevograd_ops.so" PYTHONPATH="$ROOT/torch_ops" PYTHONUNBUFFERED=1
run ctest bash -c "cd '$BUILD' && ctest --output-on-failure -E pytest"
run pytest_cuda $PY -m pytest -q -rs -p no:cacheprovider tests/python/test_cuda.py tests/python/test_ops.py tests/python/test_step.py
run kernel_bench timeout 120 $PY examples/kernels/bench.py --device cuda --log2-sizes 20 22 24 26 --out "$OUT/kernels"
run mwn_bench timeout 200 $PY examples/mwn/bench.py --device cuda --repeats 5 --out "$OUT/mwn_bench"
run lft_bench timeout 150 $PY examples/lft/bench.py --device cuda --fit-12gb --out "$OUT/lft_bench"
run metaxl_bench timeout 90 $PY examples/metaxl/bench.py --device cuda --out "$OUT/metaxl_bench"
echo "== done: status $status; logs in $OUT"
exit $status
