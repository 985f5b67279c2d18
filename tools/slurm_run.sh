#!/usr/bin/env bash
# One run of a sweep as one task of a Slurm job array: train, then test.
#
#   sbatch --array=0-N --requeue --signal=B:USR1@SECONDS ... tools/slurm_run.sh RUN_FILE
#   bash tools/slurm_run.sh RUN_FILE INDEX      (outside Slurm: the same steps, by hand)
#
# The task is tools/lib/sweep/task.py (its docstring says what it does), run with the
# sweep's Python ($POLYLOSS_PYTHON, else python3) from the sweep's checkout
# ($POLYLOSS_ROOT: sbatch runs a copy of this script, which cannot find its own). A task
# requeued after the checkout changed runs the checkout's task.py as it is then.
ROOT=${POLYLOSS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
exec "${POLYLOSS_PYTHON:-python3}" -u "$ROOT/tools/lib/sweep/task.py" "$@"
