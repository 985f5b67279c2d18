#!/usr/bin/env bash
# Train on a SLURM cluster, one task per GPU (mmengine's slurm launcher):
#   GPUS=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options ...]
# Environment: GPUS (total, default 8), GPUS_PER_NODE (default min(GPUS, 8)),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun flags), PYTHON.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options ...]" >&2
  exit 2
fi
# shellcheck source=lib/srun_tool.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/srun_tool.sh"
srun_tool train.py "$1" "$2" "$3" --work-dir="$4" "${@:5}"
