#!/usr/bin/env bash
# Set up the environment (idempotent) and run the test suite.
#
#   bash tools/run_tests.sh                 # everything, as CI runs it
#   bash tools/run_tests.sh -m "not slow"   # quick subset (no training runs)
#
# Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, before any cd: a relative POLYLOSS_VENV means the caller's directory.
export POLYLOSS_VENV=$(realpath -ms "${POLYLOSS_VENV:-$ROOT/.venv}")
bash "$ROOT/tools/setup_env.sh"
VENV=$POLYLOSS_VENV
cd "$ROOT"
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "[run_tests] pytest collected no tests: treating that as a failure" >&2
fi
exit "$status"
