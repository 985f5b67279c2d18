#!/usr/bin/env bash
# The GPU check, in two parts that each fit one command's time on a GPU machine:
#   bash tools/dev/gpu_check.sh [loss|trees|all]     (default: all, both one after the other)
# loss (about 4 minutes on an H200): the CUDA tests and the GPU benchmark with a RetinaNet
# training step (it stops at once where torch sees no CUDA device); trees (not yet run on a
# GPU): the pretrained trees comparison, focal and Poly-1 at -1, seed 0, trained and tested
# through tools/sweep.py on the GPU, fp32 and --amp (TREES_TIMEOUT seconds each, default 200;
# run again, it resumes what a timeout stopped, and retrains what the loss code changed).
# Each part's steps, with their timeouts' kill delays and the carried wheels' install, end
# within 600 s.
# Written under $OUT (default gpu_results/): environment.txt, pytest_cuda*.log,
# benchmark_cuda.md and .log; trees_data.log, trees_{fp32,amp}.log and .md (the sweep
# reports; the runs: work_dirs/gpu_check_trees/).
# On a CUDA machine with torch, Triton, pytest and hypothesis, after `bash
# tools/dev/prepare_gpu_carry.sh` where pip works and with its .gpu_carry/ (GPU_CARRY) copied
# along: its wheels (mmengine, mmdet, mmcv without compiled ops) go into a temporary folder,
# its mmcv sources become MMCV_SRC, from which mmcv's CUDA focal kernel is JIT-built
# (mmcv_cuda_focal.py). Without it the machine needs mmdet and mmcv's compiled ops.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_results}
GPU_CARRY=${GPU_CARRY:-$ROOT/.gpu_carry}
PART=${1:-all}
case $PART in loss|trees|all) ;; *) echo "gpu_check.sh: expected loss, trees or all, got" \
  "'$PART'" >&2; exit 2 ;; esac
want() { [ "$PART" = all ] || [ "$PART" = "$1" ]; }
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
if ls "$GPU_CARRY"/wheels/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d /tmp/polyloss-site.XXXX)
  trap 'rm -rf "$SITE"' EXIT
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$SITE" "$GPU_CARRY"/wheels/*.whl; then
    export PYTHONPATH=$SITE:$PYTHONPATH
  else
    echo "gpu_check.sh: the carried wheels in $GPU_CARRY/wheels did not install (above);" \
      "going on with this machine's packages" >&2
    status=1
  fi
fi
MMCV_KERNELS=$(ls -d "$GPU_CARRY"/mmcv-*/ 2>/dev/null | head -n 1)
MMCV_SRC=${MMCV_SRC:-${MMCV_KERNELS%/}}
step() {  # step TITLE LOG SHOWN COMMAND...: COMMAND's output into $OUT/LOG, SHOWN lines of it
  echo "== $1"; local log=$OUT/$2 shown=$3 start=$SECONDS; shift 3
  "$@" 2>&1 | tee "$log" | tail -n "$shown"
  local code=${PIPESTATUS[0]}
  echo "   ($((SECONDS - start)) s, exit status $code)"
  [ "$code" -eq 0 ] || status=1
  return "$code"
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__, torch.cuda.get_device_name())'
  python3 -c 'import mmdet, mmengine, mmcv; print("mmdet", mmdet.__version__, "mmengine",
mmengine.__version__, "mmcv", mmcv.__version__)'; echo "MMCV_SRC=$MMCV_SRC"; } 2>&1 | tee "$OUT/environment.txt"

if want loss && ! step "a CUDA device for torch" cuda_device.log 1 python3 -c 'import sys, torch
sys.exit(0 if torch.cuda.is_available() else "no CUDA device torch can use: the CUDA tests "
         "would run on the CPU only and pass")'; then
  echo "   (the loss part stopped: nothing in it means anything without CUDA)"
elif want loss; then
  # pytest-xdist, where installed, spreads the CPU side over 4 workers. The slow test
  # (Triton's CPU interpreter, CI's job) imports mmdet before the stand-in exists.
  XDIST=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 4")
  step "CUDA tests (tests/functional: every test taking 'device' runs on cuda too)" \
    pytest_cuda.log 15 timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider -rs -m "not slow" \
    $XDIST tests/functional
  if ! python3 -c 'import mmdet' 2>/dev/null || { [ -z "$MMCV_SRC" ] &&
      ! python3 -c 'import mmcv._ext' 2>/dev/null; }; then
    echo "== skipped: CUDA tests against mmdet's FocalLoss (need an mmdet that imports, and" \
      "mmcv's compiled ops or MMCV_SRC to build its kernel from; MMCV_SRC='$MMCV_SRC')"
    status=1
  else
    step "CUDA tests against mmdet's FocalLoss (mmcv's kernel, JIT-built from MMCV_SRC)" \
      pytest_cuda_mmdet.log 15 timeout -k 10 150 python3 -c 'import sys
import pytest
from tools.dev import mmcv_cuda_focal
print("mmcv focal op:", mmcv_cuda_focal.ensure_ops(sys.argv[1] or None), flush=True)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", "-k", "equals_mmdet",
                      "tests/losses/test_poly_focal_loss.py"]))' "$MMCV_SRC"
  fi
  step "GPU benchmark" benchmark_cuda.log +1 timeout -k 10 210 python3 tools/benchmark/benchmark_loss.py \
    --device cuda --dtype float32 float16 bfloat16 ${MMCV_SRC:+--mmcv-src "$MMCV_SRC"} \
    --train-step --train-repeats 20 --out "$OUT/benchmark_cuda.md"
fi

# The pretrained tree-crown comparison (focal, Poly-1 at -1; seed 0) trained and tested on the
# GPU through the sweep, fp32 and --amp. The data and weights are made here from the carried
# wheels (POLYLOSS_CACHE); where mmcv has no compiled ops, the sweep's train.py / test.py get
# the stand-in through gpu_site/sitecustomize.py. AP: $OUT/trees_*.md; each run's wall
# time: the "trained in N s, tested in M s" lines of $OUT/trees_*.log.
if want trees; then
  export POLYLOSS_CACHE=$GPU_CARRY/cache
  TREES_ROOT=work_dirs/gpu_check_trees  # the run folders; their reports are copied to $OUT
  if [ -n "$MMCV_SRC" ]; then
    export POLYLOSS_MMCV_SRC=$MMCV_SRC PYTHONPATH=$ROOT/tools/dev/gpu_site:$PYTHONPATH
  fi
  step "tree data and ImageNet weights" trees_data.log 3 timeout -k 5 60 bash -c \
    'python3 tools/make_tree_data.py && python3 tools/model_converters/mobilenet_v2_imagenet.py'
  for precision in fp32 amp; do
    AMP=(); [ "$precision" = amp ] && AMP=(--amp)
    rm -f "$OUT/trees_$precision.md"  # only this sweep's report, never an older one
    # -k 40: the sweep stops its train.py within 30 s of a TERM; a KILL first would orphan it.
    # As tools/run_demo.sh: the loss code is part of a run's key, and a change retrains.
    step "trees comparison on the GPU ($precision)" "trees_$precision.log" 12 \
      timeout -k 40 "${TREES_TIMEOUT:-200}" \
      python3 tools/sweep.py configs/trees/retinanet_mobilenetv2_fpn_poly1-eps-1_trees.py \
      --baseline configs/trees/retinanet_mobilenetv2_fpn_focal_trees.py --epsilons -1 \
      --launcher pytorch --gpus 1 --work-dir-root "$TREES_ROOT/$precision" \
      ${AMP[@]+"${AMP[@]}"} --retrain-changed --key-files data/polyloss_trees/meta.json \
      data/pretrained/mobilenet_v2_imagenet_mmdet.pth \
      $(ls mmdet_polyloss/functional/*.py mmdet_polyloss/losses/*.py | LC_ALL=C sort) \
      && cp "$TREES_ROOT/$precision/sweep.md" "$OUT/trees_$precision.md"
  done
fi
exit "$status"
