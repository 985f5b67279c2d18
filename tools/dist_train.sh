#!/usr/bin/env bash
# Train on several GPUs (or CPU processes) of one or more nodes with torchrun.
#
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options ...]
#
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes train on the CPU over gloo.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NUM_PROCS [train.py options ...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}

PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" \
  "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
