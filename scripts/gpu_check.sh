#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a CUDA GPU, PyTorch 2.x, nvcc
# and CMake but no internet and no Debian packages:
#   scripts/gpu_check.sh OUT_DIR
# Builds against torch's own CMake package (googletest from
# third_party/googletest if present: `cp -r /usr/src/googletest third_party/`
# on a Debian machine, then carry it), runs the C/C++ and Python suites
# (CUDA tests included), the kernel bandwidth benchmark and the MWN, LFT and
# MetaXL A/B benchmarks on CUDA. Logs and JSON go to OUT_DIR, all of them
# also to OUT_DIR.tar.gz, the tables to OUT_DIR/summary.txt and stdout. At
# most BUDGET seconds (540 by default); EXTRA_CMAKE_FLAGS go to the configure
# step (scripts/cuda_build.sh names a CUDA toolkit there). On a machine whose
# results must be copied out (third_party/googletest copied in beside the
# checkout):
#   scripts/gpu_check.sh /tmp/gpu; cp /tmp/gpu.tar.gz /tmp/gpu/summary.txt "$DEST"/
set -uo pipefail
OUT=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUILD=${BUILD:-$ROOT/build-gpu}
mkdir -p "$OUT"
cd "$ROOT"
status=0
# Shared GPU machines often cap a command's time: every step gets at most what
# is left of BUDGET seconds, and a step with under 20 s left is skipped (and
# said so), so that the logs of what ran always come back.
BUDGET=${BUDGET:-540}
START=$SECONDS
step() { echo "== $1"; }
run() {  # run NAME SECONDS CMD...: log to OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  step "$name"
  if [ "$left" -lt 20 ]; then echo "   SKIPPED: time budget spent"; status=1; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then echo "   ok ($((SECONDS - START)) s)"
  else echo "   FAILED (rc $?, $((SECONDS - START)) s), tail:"; tail -25 "$OUT/$name.log"; status=1; fi
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -2; } | tee "$OUT/machine.txt"

PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
GPU=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')
GTEST_NOTE="googletest: third_party/googletest"
[ -f third_party/googletest/CMakeLists.txt ] || GTEST_NOTE="googletest: not found, C/C++ suites skipped (copy /usr/src/googletest to third_party/googletest)"
echo "$GTEST_NOTE" | tee -a "$OUT/machine.txt"
# The GPU's own architecture; without one (a rehearsal of this script) Hopper.
ARCH=$($PY -c 'import torch; p=torch.cuda.get_device_properties(0); print(f"{p.major}{p.minor}")' 2>/dev/null || echo 90)
# Torch's libraries named outright: another libtorch on the system paths
# (a Debian one, say) must not be picked up instead.
run configure 120 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DTORCH_LIBRARY="$TORCH_LIB/libtorch.so" -Dc10_LIBRARY="$TORCH_LIB/libc10.so" \
    -DEVOGRAD_PYTHON="$(command -v $PY)" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DEVOGRAD_SANITIZE=OFF \
    ${EXTRA_CMAKE_FLAGS:-}
grep -q "CUDA operators ON" "$OUT/configure.log" || { echo "   the CUDA operators are not built (see configure.log)"; status=1; }
run build 300 cmake --build "$BUILD" -j"$(nproc)"
export EVOGRAD_LIBRARY="$BUILD/libevograd_ops.so" PYTHONPATH="$ROOT/torch_ops" PYTHONUNBUFFERED=1
run ctest 120 bash -c "cd '$BUILD' && ctest --output-on-failure -E pytest"
# The library's suites (the examples' need tqdm, matplotlib and scikit-learn,
# which GPU machines may lack).
run pytest 240 $PY -m pytest -q -rs -p no:cacheprovider tests/python/test_cuda.py \
    tests/python/test_ops.py tests/python/test_step.py tests/python/test_robustness.py \
    tests/python/test_torch2.py tests/python/test_torchscript.py tests/python/test_packaging.py
# One archive to copy back and the measured tables on stdout, where a
# remote runner that keeps only the output's tail still sees them.
finish() {
  { cat "$OUT/machine.txt"
    for f in "$OUT"/kernels/kernels.txt "$OUT"/kernels_gauss/kernels.txt "$OUT"/mwn_bench/*.txt \
             "$OUT"/lft_bench/*.txt "$OUT"/metaxl_bench/*.txt "$OUT"/autocast.log; do
      [ -f "$f" ] && { echo; echo "### $f"; cat "$f"; }
    done; } > "$OUT/summary.txt"
  tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
  cat "$OUT/summary.txt"
  echo "== done: status $status; logs in $OUT, all of it in $OUT.tar.gz"
  exit $status
}
if [ "$GPU" != 1 ]; then
  echo "== no CUDA device visible to torch: benchmarks skipped (a rehearsal: build and tests only)"
  finish
fi
run autocast 120 env EVOGRAD_TEST_DEVICE=cuda $PY -m pytest -q -p no:cacheprovider tests/python/test_autocast.py
run kernel_bench 90 $PY examples/kernels/bench.py --device cuda --log2-sizes 20 22 24 26 --out "$OUT/kernels"
run kernel_bench_gauss 45 $PY examples/kernels/bench.py --device cuda --noise gauss --population 4 --log2-sizes 24 26 --out "$OUT/kernels_gauss"
run mwn_bench 150 $PY examples/mwn/bench.py --device cuda --repeats 5 --out "$OUT/mwn_bench"
run lft_bench 120 $PY examples/lft/bench.py --device cuda --fit-12gb --out "$OUT/lft_bench"
run metaxl_bench 90 $PY examples/metaxl/bench.py --device cuda --out "$OUT/metaxl_bench"
finish
