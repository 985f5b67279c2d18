#!/usr/bin/env bash
# Create or refresh .venv/: pinned torch, mmcv 2.1.0 built with its CPU ops (about
# 14 min on 2 cores once; the wheel is cached), mmengine, mmdet and this package
# (editable, test extras). Idempotent: seconds when nothing changed.
# Environment: POLYLOSS_VENV (default <repo>/.venv), POLYLOSS_CACHE (the mmcv wheel;
# default ${XDG_CACHE_HOME:-~/.cache}/mmdet-polyloss), PYTHON (default python3.11), MAX_JOBS
# (compiler processes for the mmcv build; default: the number of cores),
# FORCE_CUDA=1 (build mmcv's CUDA ops too; needs nvcc matching torch's CUDA), POLYLOSS_3D=0
# (leave out mmdet3d and its runtime dependencies, the [3d] extra; the 3D tests then skip).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${POLYLOSS_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
CACHE=${POLYLOSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmdet-polyloss}
CONSTRAINTS=$ROOT/tools/constraints.txt

say() { printf '[setup_env] %s\n' "$*"; }
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }

TORCH=$(pin torch)
MMCV=$(pin mmcv)
CUDA_TAG=$([ "${FORCE_CUDA:-0}" = 1 ] && echo cuda || echo cpu)
WITH_3D=${POLYLOSS_3D:-1}
# Everything that decides what the venv holds (this script's steps too); a change re-runs
# the install.
STAMP_KEY=$(cat "$CONSTRAINTS" "$ROOT/pyproject.toml" "$ROOT/tools/requirements-3d.txt" \
  "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)-$CUDA_TAG-3d$WITH_3D
STAMP=$VENV/.polyloss-setup-done
up_to_date() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ] &&
  "$VENV/bin/python" -c '' 2>/dev/null; }

if up_to_date; then
  say "environment up to date: $VENV"
  exit 0
fi
# One set-up at a time per venv (run_demo.sh and run_tests.sh started together); the one
# that waited finds the venv made.
mkdir -p "$(dirname "$VENV")"
exec 8>"$VENV.setup-lock"
if ! flock -n 8; then
  say "waiting for another set-up of $VENV to finish"
  flock 8
fi
if up_to_date; then
  say "environment up to date: $VENV (made by the set-up waited for)"
  exit 0
fi

if ! "$VENV/bin/python" -c '' 2>/dev/null; then
  command -v "$PYTHON" >/dev/null || { say "error: no $PYTHON (set PYTHON to a Python 3.11)"; exit 1; }
  if [ -d "$VENV" ] && [ -n "$(ls -A "$VENV")" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    say "error: $VENV holds files and is no virtual environment (POLYLOSS_VENV?): not touched"
    exit 1
  fi
  say "creating virtual environment $VENV with $PYTHON"
  # --clear only over a venv whose python no longer runs (its interpreter gone)
  "$PYTHON" -m venv $([ -f "$VENV/pyvenv.cfg" ] && echo --clear) "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

say "installing torch==$TORCH and torchvision (local wheels; about a minute the first time)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" pip torch torchvision

PYTAG=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_DIR=$CACHE/wheels/mmcv-$MMCV-torch-$TORCH-$PYTAG-$CUDA_TAG
mmcv_wheel() { ls "$WHEEL_DIR"/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n 1; }

# One build at a time per cache (checkouts sharing it): the one that waited finds the wheel.
if [ -z "$(mmcv_wheel)" ]; then
  if ! mkdir -p "$CACHE" 2>/dev/null || ! : 2>/dev/null >>"$CACHE/.mmcv-build-lock"; then
    say "error: no mmcv $MMCV wheel in $WHEEL_DIR, and the cache $CACHE (POLYLOSS_CACHE)" \
      "cannot be written to build one into"
    exit 1
  fi
  exec 9>>"$CACHE/.mmcv-build-lock"
  if ! flock -n 9; then
    say "waiting for another build of mmcv into $CACHE (about 14 minutes on 2 cores)"
    flock 9
  fi
fi
if [ -z "$(mmcv_wheel)" ]; then
  say "no cached mmcv $MMCV wheel for torch $TORCH in $WHEEL_DIR: building it from source"
  say "this compiles mmcv's C++ ops: about 14 minutes on 2 cores, once per machine"
  # No build isolation: build tools go into the venv, with the old setuptools mmcv's
  # setup.py needs; the install below restores the pinned one (torch needs >= 77).
  say "installing mmcv build requirements (setuptools<70, wheel, ninja, numpy)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" wheel ninja numpy
  "${PIP[@]}" install -q 'setuptools<70'
  SRC=$(mktemp -d)
  trap 'rm -rf "$SRC"' EXIT
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: \
      "mmcv==$MMCV" -d "$SRC"
  tar -xzf "$SRC"/mmcv-"$MMCV".tar.gz -C "$SRC"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/mmcv-$MMCV/setup.py"
  mkdir -p "$WHEEL_DIR"
  start=$(date +%s)
  LOG=$CACHE/mmcv-build.log
  say "build log: $LOG"
  # -v streams each compiler call, so the long build never looks hung; the whole log is kept.
  # Built beside, then moved in: the cache never holds a half-written wheel.
  set +e  # pip's own status decides, not grep's (no line matched is no failure)
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel -v --no-deps \
      --no-build-isolation -w "$SRC/wheel" "$SRC/mmcv-$MMCV" 2>&1 | tee "$LOG" |
    grep --line-buffered -iE '\[[0-9]+/[0-9]+\]|error|Stored in'
  code=${PIPESTATUS[0]}
  set -e
  built=$(ls "$SRC"/wheel/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n 1 || true)
  if [ "$code" -ne 0 ] || [ -z "$built" ]; then
    say "mmcv build failed (pip exit status $code); the last lines of $LOG:"
    tail -n 25 "$LOG"
    exit 1
  fi
  mv "$built" "$WHEEL_DIR/"
  say "mmcv built in $(( $(date +%s) - start )) s: $(mmcv_wheel)"
fi
say "installing $(basename "$(mmcv_wheel)") from the cache"
"${PIP[@]}" install -q --no-deps "$(mmcv_wheel)"

say "installing mmengine, mmdet and mmdet_polyloss (editable, with test extras)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" setuptools mmengine mmdet -e "$ROOT[test]"
# mmcv's own runtime requirements (it was installed with --no-deps).
"${PIP[@]}" install -q -c "$CONSTRAINTS" addict packaging Pillow pyyaml yapf opencv-python

if [ "$WITH_3D" = 1 ]; then
  # The [3d] extra (pyproject.toml) without what mmdet3d 1.4.0 declares but never imports
  # to build, train and test a LiDAR detector (open3d, tensorboard, jupyter through
  # nuscenes-devkit): mmdet3d, nuscenes-devkit and lyft_dataset_sdk without their
  # declared dependencies, then the ones their imports need, all pinned.
  say "installing mmdet3d and its runtime dependencies (the [3d] extra)"
  start=$(date +%s)
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps mmdet3d nuscenes-devkit lyft_dataset_sdk
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -r "$ROOT/tools/requirements-3d.txt"
  say "mmdet3d installed in $(( $(date +%s) - start )) s"
fi

say "checking the install"
WITH_3D=$WITH_3D "$VENV/bin/python" - <<'PY'
import os, torch, torchvision, mmcv, mmengine, mmdet
from mmcv.ops import nms  # needs the compiled ops
import mmdet_polyloss
print(f"[setup_env] torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}")
if os.environ['WITH_3D'] == '1':
    import mmdet3d
    import mmdet_polyloss.det3d  # registers the heads in mmdet3d's registry
    print(f"[setup_env] mmdet3d {mmdet3d.__version__}")
PY
echo "$STAMP_KEY" > "$STAMP"
say "done: activate with 'source $VENV/bin/activate'"
