#!/usr/bin/env bash
# Create (or refresh) .venv-floor/: the declared minimum torch (tools/constraints-floor.txt)
# with mmengine, mmdet and mmcv without its compiled ops (mmcv-lite: the package
# imports mmdet's registries, which need no ops), for the floor check in
# tools/run_tests.sh. Idempotent: returns in seconds when nothing changed.
#
# Environment: POLYLOSS_FLOOR_VENV (default <repo>/.venv-floor), PYTHON (python3.11),
# POLYLOSS_CACHE (where the mmcv-lite wheel is kept, as tools/setup_env.sh keeps mmcv's).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${POLYLOSS_FLOOR_VENV:-$ROOT/.venv-floor}
CONSTRAINTS=$ROOT/tools/constraints-floor.txt
CACHE=${POLYLOSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmdet-polyloss}
STAMP=$VENV/.polyloss-floor-done
KEY=$(cat "$CONSTRAINTS" "$0" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  exit 0
fi
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }
echo "[setup_floor_env] creating $VENV (torch $(pin torch), mmdet $(pin mmdet), mmcv-lite $(pin mmcv))"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3.11}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -c "$CONSTRAINTS" torch numpy pytest hypothesis mmengine mmdet setuptools wheel
WHEELS=$CACHE/wheels/mmcv-lite-$(pin mmcv)
if ! ls "$WHEELS"/mmcv_lite-*.whl >/dev/null 2>&1; then
  SRC=$(mktemp -d)
  trap 'rm -rf "$SRC"' EXIT
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --no-binary :all: --no-build-isolation "mmcv==$(pin mmcv)" -d "$SRC"
  tar -xzf "$SRC/mmcv-$(pin mmcv).tar.gz" -C "$SRC"
  mkdir -p "$WHEELS"
  MMCV_WITH_OPS=0 "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
      --no-build-isolation -w "$WHEELS" "$SRC/mmcv-$(pin mmcv)"
fi
"${PIP[@]}" --no-deps "$WHEELS"/mmcv_lite-*.whl
"${PIP[@]}" -c "$CONSTRAINTS" addict packaging Pillow pyyaml yapf opencv-python
echo "$KEY" > "$STAMP"
