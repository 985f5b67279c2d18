#!/usr/bin/env bash
# Create (or refresh) .venv-floor/: the declared minimum torch (tools/constraints-floor.txt)
# without mmdet, mmcv or mmengine, for the functional layer's floor check in
# tools/run_tests.sh. Idempotent: returns in seconds when nothing changed.
#
# Environment: POLYLOSS_FLOOR_VENV (default <repo>/.venv-floor), PYTHON (python3.11).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${POLYLOSS_FLOOR_VENV:-$ROOT/.venv-floor}
CONSTRAINTS=$ROOT/tools/constraints-floor.txt
STAMP=$VENV/.polyloss-floor-done
KEY=$(cat "$CONSTRAINTS" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  exit 0
fi
echo "[setup_floor_env] creating $VENV (torch $(sed -n 's/^torch==//p' "$CONSTRAINTS"), no mmdet)"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3.11}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" \
    torch numpy pytest hypothesis
echo "$KEY" > "$STAMP"
