#!/usr/bin/env bash
# The main job, end to end, on data the project generates itself:
#
#   bash tools/run_demo.sh
#
# 1. sets up the environment (tools/setup_env.sh: idempotent, seconds when done)
# 2. generates the synthetic COCO-format shapes dataset in data/polyloss_shapes
#    (skipped when the same dataset is already there)
# 3. trains the focal-loss and the Poly-1 (epsilon -1) tiny RetinaNet with
#    tools/train.py (configs/demo/), each evaluated on the val split at the end
# 4. evaluates each final checkpoint with tools/test.py (COCO bbox AP / AR)
# 5. prints the comparison table (baseline first, deltas in AP points) and
#    writes the AP / AR vs epsilon plot
#
# About 7 minutes on 2 CPU cores once the environment exists. A second run
# reuses finished trainings (a `.demo-done` marker holding a hash of the
# config, the demo base, the dataset parameters and the package's code; any
# change retrains) and
# takes well under a minute; FORCE=1 retrains from scratch.
#
# Environment:
#   WORK_DIR      where runs, table and plot go (default: work_dirs/demo;
#                 a relative path is relative to the repository root)
#   SEEDS         training seeds, e.g. "0 1 2" (default: 0). Seed 0 runs in
#                 <config name>/, seed N in <config name>_seedN/; with several
#                 seeds the report adds mean +- sd per loss and the per-seed
#                 differences against focal loss.
#   FORCE=1       retrain even if a finished run exists
#   POLYLOSS_VENV the virtual environment (default: .venv in the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, before any cd: a relative POLYLOSS_VENV means the caller's directory.
export POLYLOSS_VENV=$(realpath -ms "${POLYLOSS_VENV:-$ROOT/.venv}")
cd "$ROOT"
WORK_DIR=${WORK_DIR:-work_dirs/demo}
DATA_DIR=data/polyloss_shapes  # where configs/demo/ read it (data_root)
PY=$POLYLOSS_VENV/bin/python
CONFIGS=(
  configs/demo/retinanet_tiny_fpn_focal_shapes.py
  configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py
)
say() { printf '\n[run_demo] %s\n' "$*"; }
for seed in ${SEEDS:-0}; do
  case $seed in
    *[!0-9]*) echo "run_demo: SEEDS must hold non-negative integers, got '$seed' in" \
                   "SEEDS='$SEEDS'" >&2; exit 2 ;;
  esac
done
start=$(date +%s)

say "1/5 environment"
bash tools/setup_env.sh

say "2/5 synthetic dataset in $DATA_DIR"
"$PY" tools/make_demo_data.py "$DATA_DIR"

say "3/5 training (mmengine logs every 10 iterations)"
run_dirs=()
run_cfgs=()
run_seeds=()
for seed in ${SEEDS:-0}; do
  for cfg in "${CONFIGS[@]}"; do
    name=$(basename "$cfg" .py)
    run=$name$([ "$seed" = 0 ] || echo "_seed$seed")
    dir=$WORK_DIR/$run
    run_dirs+=("$dir")
    run_cfgs+=("$cfg")
    run_seeds+=("$seed")
    # A finished run is reused only if config, demo base, dataset, seed and the
    # code that trains (the package and tools/train.py) are unchanged.
    key=$(cat "$cfg" configs/demo/_base_/*.py "$DATA_DIR/meta.json" tools/train.py \
          $(find mmdet_polyloss -name '*.py' | LC_ALL=C sort) | sha256sum | cut -c1-16)
    [ "$seed" = 0 ] || key=$key-seed$seed
    if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$dir/.demo-done" 2>/dev/null)" = "$key" ]; then
      say "$run: finished run found in $dir, not retraining (FORCE=1 to redo)"
      continue
    fi
    rm -rf "$dir"
    say "$run: training (seed $seed)"
    t0=$(date +%s)
    "$PY" tools/train.py "$cfg" --work-dir "$dir" --cfg-options randomness.seed="$seed"
    say "$run: trained in $(( $(date +%s) - t0 )) s"
    echo "$key" > "$dir/.demo-done"
  done
done

say "4/5 COCO evaluation of the final checkpoints with tools/test.py"
for i in "${!run_dirs[@]}"; do
  dir=${run_dirs[$i]}
  ckpt=$(cat "$dir/last_checkpoint")
  if [ -f "$dir/.demo-tested" ] && [ "$dir/.demo-tested" -nt "$ckpt" ]; then
    say "$(basename "$dir"): already evaluated"
    continue
  fi
  # The seed too: the report reads it from the config this run dumps.
  "$PY" tools/test.py "${run_cfgs[$i]}" "$ckpt" --work-dir "$dir" \
      --cfg-options randomness.seed="${run_seeds[$i]}"
  touch "$dir/.demo-tested"
done

say "5/5 comparison (COCO bbox metrics on the val split, in %)"
"$PY" tools/sweep_report.py "${run_dirs[@]}" \
  --out-png "$WORK_DIR/sweep.png" --out-md "$WORK_DIR/sweep.md"
say "table: $WORK_DIR/sweep.md, plot: $WORK_DIR/sweep.png, " \
  "total $(( $(date +%s) - start )) s"
