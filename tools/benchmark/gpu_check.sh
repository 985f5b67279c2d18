#!/usr/bin/env bash
# The GPU check: on a CUDA machine that already has torch (with Triton), pytest
# and hypothesis, run the CUDA tests of the pure-torch parts, the GPU
# benchmark and the per-call overhead profile; write everything under $OUT
# (default: gpu_results/). About 3 minutes on an H200.
#
#   MMCV_SRC=/path/to/mmcv-2.1.0 bash tools/benchmark/gpu_check.sh
#
# MMCV_SRC: an unpacked mmcv 2.1.0 source tree, only needed when mmcv's CUDA
# ops are not installed: the benchmark then JIT-compiles mmcv's focal kernel
# as the baseline (pip download --no-deps --no-binary :all: --no-build-isolation
# mmcv==2.1.0, in an environment with torch, then untar). mmdet is not needed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__, torch.cuda.get_device_name())'; } 2>&1 | tee "$OUT/environment.txt"

echo "== CUDA tests (tests/functional: every test taking 'device' runs on cuda too)"
# pytest-xdist, where installed, spreads the CPU side over 4 workers.
XDIST=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 4")
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs $XDIST tests/functional 2>&1 |
  tee "$OUT/pytest_cuda.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== GPU benchmark"
timeout 280 python3 tools/benchmark/benchmark_loss.py --device cuda \
    --dtype float32 float16 bfloat16 ${MMCV_SRC:+--mmcv-src "$MMCV_SRC"} \
    --out "$OUT/benchmark_cuda.md" 2>&1 | tee "$OUT/benchmark_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== where the fixed per-call time goes (host vs device, profiler tables)"
timeout 90 python3 tools/benchmark/profile_cuda_overhead.py \
    ${MMCV_SRC:+--mmcv-src "$MMCV_SRC"} 2>&1 | tee "$OUT/profile_cuda_overhead.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit "$status"
