#!/usr/bin/env bash
# Set up the environment (idempotent), lint, and run the test suite.
#
#   bash tools/run_tests.sh                 # everything, as CI runs it
#   bash tools/run_tests.sh -m "not slow"   # quick subset (no training runs)
#
# Steps: tools/setup_env.sh; ruff (pyproject.toml's rules); the functional
# layer's tests on the declared minimum torch (.venv-floor/: mmdet with mmcv
# without compiled ops; skip with POLYLOSS_FLOOR=0); then pytest with the
# extra arguments given.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, before any cd: a relative POLYLOSS_VENV means the caller's directory.
export POLYLOSS_VENV=$(realpath -ms "${POLYLOSS_VENV:-$ROOT/.venv}")
bash "$ROOT/tools/setup_env.sh"
VENV=$POLYLOSS_VENV
cd "$ROOT"

echo "[run_tests] ruff check"
"$VENV/bin/ruff" check .

if [ "${POLYLOSS_FLOOR:-1}" != 0 ]; then
  bash "$ROOT/tools/setup_floor_env.sh"
  FLOOR=${POLYLOSS_FLOOR_VENV:-$ROOT/.venv-floor}
  floor_torch=$("$FLOOR/bin/python" -c 'import torch; print("torch", torch.__version__)')
  echo "[run_tests] functional layer on $floor_torch"
  PYTHONPATH=$ROOT "$FLOOR/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
      tests/functional tests/test_package_structure.py
fi

# pytest-xdist: a worker per CPU plus one (the Slurm tests, grouped on one worker by
# tests/conftest.py, mostly wait); POLYLOSS_TEST_WORKERS=N sets it, 0 runs in this
# process. One torch thread each (OMP_NUM_THREADS): more oversubscribe the cores.
WORKER_COUNT=${POLYLOSS_TEST_WORKERS:-$(( $(nproc) + 1 ))}
WORKERS=(-n "$WORKER_COUNT" --dist loadgroup)
if [ "$WORKER_COUNT" = 0 ]; then
  WORKERS=()
else
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
status=0
"$VENV/bin/python" -m pytest "${WORKERS[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "[run_tests] pytest collected no tests: treating that as a failure" >&2
fi
exit "$status"
