#!/usr/bin/env bash
# Rehearses scripts/gpu_check.sh here, without a GPU, against the PyTorch 2.x
# CUDA build that the GPU machines carry (torch 2.11.0 for CUDA 13): installs
# it into a virtual environment (about 4.6 GB, once), then runs the check,
# which configures, builds the CUDA operators and links them against torch's
# CUDA libraries, and runs the C/C++ and Python suites (CUDA tests skip; the
# benchmarks need a device and are skipped).
#   scripts/torch2_rehearsal.sh [OUT_DIR]        (make gpu-rehearsal)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/build-torch2-venv}
TORCH=${TORCH:-torch==2.11.0}
cd "$ROOT"
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH#torch==}')" 2>/dev/null ||
  "$VENV/bin/python" -m pip install -q "$TORCH"
[ -f third_party/googletest/CMakeLists.txt ] || cp -r /usr/src/googletest third_party/googletest
PYTHON="$VENV/bin/python" BUILD="$ROOT/build-torch2" exec scripts/gpu_check.sh "${1:-$ROOT/build-torch2/rehearsal}"
