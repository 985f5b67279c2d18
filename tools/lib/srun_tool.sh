# srun_tool SCRIPT PARTITION JOB_NAME ARGS...: tools/SCRIPT under srun, one task per GPU,
# with mmengine's slurm launcher (for tools/slurm_train.sh and slurm_test.sh, which say
# what their environment sets).
srun_tool() {
  local script=$1 partition=$2 job_name=$3
  shift 3
  local tools gpus=${GPUS:-8}
  case $gpus in ''|*[!0-9]*|0) echo "${0##*/}: GPUS must be a positive integer, got '$gpus'" >&2
    return 2 ;; esac
  tools=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local gpus_per_node=${GPUS_PER_NODE:-$(( gpus < 8 ? gpus : 8 ))}
  # shellcheck disable=SC2086  # SRUN_ARGS is a list of flags
  PYTHONPATH="$tools/..${PYTHONPATH:+:$PYTHONPATH}" \
  srun -p "$partition" --job-name="$job_name" --gres=gpu:"$gpus_per_node" --ntasks="$gpus" \
    --ntasks-per-node="$gpus_per_node" --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 ${SRUN_ARGS:-} "${PYTHON:-python}" -u "$tools/$script" \
    --launcher=slurm "$@"
}
