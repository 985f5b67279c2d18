#!/usr/bin/env bash
# Test a checkpoint with torchrun on NUM_PROCS GPUs (or CPU processes) per node:
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options ...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [test.py options ...]" >&2
  exit 2
fi
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" \
  -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$3" "$TOOLS/test.py" "$1" "$2" --launcher pytorch "${@:4}"
