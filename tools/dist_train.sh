#!/usr/bin/env bash
# Train with torchrun on NUM_PROCS GPUs (without CUDA: CPU processes over gloo) per node:
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options ...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NUM_PROCS [train.py options ...]" >&2
  exit 2
fi
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" \
  -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$2" "$TOOLS/train.py" "$1" --launcher pytorch "${@:3}"
