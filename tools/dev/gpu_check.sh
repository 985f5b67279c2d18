#!/usr/bin/env bash
# The GPU check (about 4 minutes on an H200 without the trees comparison, which has not run
# yet): the CUDA tests, the GPU benchmark with a RetinaNet training step and the pretrained
# trees comparison, written under $OUT (default gpu_results/: environment.txt,
# pytest_cuda*.log, benchmark_cuda.md and .log, trees_*/). On a CUDA machine with torch, Triton,
# pytest and hypothesis, after `bash tools/dev/prepare_gpu_carry.sh` where pip works and
# with its .gpu_carry/ (GPU_CARRY) copied along: its wheels (mmengine, mmdet, mmcv without
# compiled ops) go into a temporary folder, its mmcv sources become MMCV_SRC, from which
# mmcv's CUDA focal kernel is JIT-built (mmcv_cuda_focal.py). Without it the machine needs
# mmdet, and mmcv's compiled ops for the baseline and the training step.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_results}
GPU_CARRY=${GPU_CARRY:-$ROOT/.gpu_carry}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ls "$GPU_CARRY"/wheels/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d /tmp/polyloss-site.XXXX)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$SITE" "$GPU_CARRY"/wheels/*.whl && export PYTHONPATH=$SITE:$PYTHONPATH
fi
MMCV_KERNELS=$(ls -d "$GPU_CARRY"/mmcv-*/ 2>/dev/null | head -n 1)
MMCV_SRC=${MMCV_SRC:-${MMCV_KERNELS%/}}
status=0
step() {  # step TITLE LOG SHOWN COMMAND...: COMMAND's output into $OUT/LOG, SHOWN lines of it
  echo "== $1"; local log=$OUT/$2 shown=$3; shift 3
  "$@" 2>&1 | tee "$log" | tail -n "$shown"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__, torch.cuda.get_device_name())'
  python3 -c 'import mmdet, mmengine, mmcv; print("mmdet", mmdet.__version__, "mmengine",
mmengine.__version__, "mmcv", mmcv.__version__)'; echo "MMCV_SRC=$MMCV_SRC"; } 2>&1 | tee "$OUT/environment.txt"

# pytest-xdist, where installed, spreads the CPU side over 4 workers. The slow test
# (Triton's CPU interpreter, CI's job) imports mmdet before the stand-in exists.
XDIST=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 4")
step "CUDA tests (tests/functional: every test taking 'device' runs on cuda too)" \
  pytest_cuda.log 15 timeout 180 python3 -m pytest -q -p no:cacheprovider -rs -m "not slow" \
  $XDIST tests/functional
if [ -n "$MMCV_SRC" ] && python3 -c 'import mmdet' 2>/dev/null; then
  step "CUDA tests against mmdet's FocalLoss (mmcv's kernel, JIT-built from MMCV_SRC)" \
    pytest_cuda_mmdet.log 15 timeout 150 python3 -c 'import sys
import pytest
from tools.dev import mmcv_cuda_focal
print("mmcv focal op:", mmcv_cuda_focal.ensure_ops(sys.argv[1]), flush=True)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", "-k", "equals_mmdet",
                      "tests/losses/test_poly_focal_loss.py"]))' "$MMCV_SRC"
fi
step "GPU benchmark" benchmark_cuda.log +1 timeout 300 python3 tools/benchmark/benchmark_loss.py \
  --device cuda --dtype float32 float16 bfloat16 ${MMCV_SRC:+--mmcv-src "$MMCV_SRC"} \
  --train-step --train-repeats 20 --out "$OUT/benchmark_cuda.md"

# The pretrained tree-crown comparison (focal, Poly-1 at -1; seed 0) trained and tested on the
# GPU through the sweep, fp32 and AMP (TREES=0 skips it). The data and weights are made here
# from the carried wheels; the sweep's train.py / test.py get the stand-in mmcv ops through
# gpu_site/sitecustomize.py. Per-run wall time and AP: $OUT/trees_*/sweep.md and the log.
if [ "${TREES:-1}" != 0 ] && [ -n "$MMCV_SRC" ]; then
  export POLYLOSS_CACHE=$GPU_CARRY/cache POLYLOSS_MMCV_SRC=$MMCV_SRC
  export PYTHONPATH=$ROOT/tools/dev/gpu_site:$PYTHONPATH
  step "tree data and ImageNet weights" trees_data.log 3 timeout 240 bash -c \
    'python3 tools/make_tree_data.py && python3 tools/model_converters/mobilenet_v2_imagenet.py'
  for precision in fp32 amp; do
    AMP=(); [ "$precision" = amp ] && AMP=(--cfg-options optim_wrapper.type=AmpOptimWrapper)
    step "trees comparison on the GPU ($precision)" "trees_$precision.log" 12 timeout 420 \
      python3 tools/sweep.py configs/trees/retinanet_mobilenetv2_fpn_poly1-eps-1_trees.py \
      --baseline configs/trees/retinanet_mobilenetv2_fpn_focal_trees.py --epsilons -1 \
      --launcher pytorch --gpus 1 --work-dir-root "$OUT/trees_$precision" "${AMP[@]}" \
      --key-files data/polyloss_trees/meta.json data/pretrained/mobilenet_v2_imagenet_mmdet.pth
  done
fi
exit "$status"
