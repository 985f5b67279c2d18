#!/usr/bin/env bash
# The main job, end to end, on data the project generates itself:
#
#   bash tools/run_demo.sh
#
# 1. sets up the environment (tools/setup_env.sh: idempotent, seconds when done)
# 2. generates the synthetic COCO-format shapes dataset in data/polyloss_shapes
#    (skipped when the same dataset is already there)
# 3. trains the focal-loss and the Poly-1 (epsilon -1, or each of EPSILONS)
#    tiny RetinaNet with tools/train.py (configs/demo/), each evaluated on the
#    val split at the end
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
#   SEEDS         training seeds, integers in [0, 2^32), e.g. "0 1 2" (default: 0),
#                 each once (01 is seed 1). Seed 0 runs in
#                 <config name>/, seed N in <config name>_seedN/; with several
#                 seeds the report adds mean +- sd per loss and the per-seed
#                 differences against focal loss.
#   EPSILONS      Poly-1 epsilons trained next to focal loss, each >= -1, e.g.
#                 "-1 -0.5 0.5" for a sweep (default: -1). Epsilon e runs
#                 configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py with
#                 model.bbox_head.loss_cls.epsilon=e in
#                 retinanet_tiny_fpn_poly1-eps<e>_shapes/ (e as in -0.5, +0.5);
#                 the report and plot put every epsilon on one axis.
#   FORCE=1       retrain even if a finished run exists (the way out when a
#                 finished run is damaged, e.g. its checkpoint deleted: the
#                 script stops and says so)
#   DRY_RUN=1     print the train / test / report commands it would run, and
#                 nothing else (no set-up, data, training or evaluation)
#   POLYLOSS_VENV the virtual environment (default: .venv in the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, before any cd: a relative POLYLOSS_VENV means the caller's directory.
export POLYLOSS_VENV=$(realpath -ms "${POLYLOSS_VENV:-$ROOT/.venv}")
cd "$ROOT"
WORK_DIR=${WORK_DIR:-work_dirs/demo}
DATA_DIR=data/polyloss_shapes  # where configs/demo/ read it (data_root)
PY=$POLYLOSS_VENV/bin/python
POLY1_CONFIG=configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py
say() { printf '\n[run_demo] %s\n' "$*"; }
DRY=${DRY_RUN:-0}
# tools/<script> with the environment's python; with DRY_RUN=1 only printed.
tool() { if [ "$DRY" = 1 ]; then echo "DRY_RUN: $*"; else "$PY" "$@"; fi; }

# SEEDS and EPSILONS are checked in Python (integers in [0, 2^32), decimals >= -1,
# each once; see tools/lib/run_settings.py), with any python3 before set-up.
CHECK_PY=$PY
[ -x "$CHECK_PY" ] || CHECK_PY=python3
seed_list=$("$CHECK_PY" tools/lib/run_settings.py SEEDS "${SEEDS:-0}") || exit
eps_list=$("$CHECK_PY" tools/lib/run_settings.py EPSILONS "${EPSILONS:--1}") || exit
read -r -a seeds <<< "$seed_list"
# The trainings: (config, run name, --cfg-options for the loss), focal first.
CONFIGS=(configs/demo/retinanet_tiny_fpn_focal_shapes.py)
NAMES=(retinanet_tiny_fpn_focal_shapes)
LOSS_OPTIONS=("")
for name_eps in $eps_list; do  # as in the COCO config names: -1, -0.5, 0, +0.5
  name=retinanet_tiny_fpn_poly1-eps${name_eps}_shapes
  CONFIGS+=("$POLY1_CONFIG")
  NAMES+=("$name")
  # Epsilon -1 is the config file as it stands.
  LOSS_OPTIONS+=("$([ "$name_eps" = -1 ] || echo "model.bbox_head.loss_cls.epsilon=$name_eps")")
done
# Every (seed, training): its work dir, config and --cfg-options (one word
# each, no spaces: passed unquoted).
run_dirs=()
run_cfgs=()
run_options=()
for seed in "${seeds[@]}"; do
  for j in "${!CONFIGS[@]}"; do
    run_dirs+=("$WORK_DIR/${NAMES[$j]}$([ "$seed" = 0 ] || echo "_seed$seed")")
    run_cfgs+=("${CONFIGS[$j]}")
    run_options+=("randomness.seed=$seed${LOSS_OPTIONS[$j]:+ ${LOSS_OPTIONS[$j]}}")
  done
done
start=$(date +%s)

if [ "$DRY" = 1 ]; then
  say "DRY_RUN=1: the commands only, no set-up, data, training or evaluation"
else
  say "1/5 environment"
  bash tools/setup_env.sh
  say "2/5 synthetic dataset in $DATA_DIR"
  "$PY" tools/make_demo_data.py "$DATA_DIR"
fi

say "3/5 training (mmengine logs every 10 iterations)"
for i in "${!run_dirs[@]}"; do
  dir=${run_dirs[$i]}
  run=$(basename "$dir")
  if [ "$DRY" != 1 ]; then
    # A finished run is reused only if config, loss options, seed, demo base,
    # dataset and the code that trains (the package and tools/train.py) are
    # unchanged.
    key=$({ cat "${run_cfgs[$i]}" configs/demo/_base_/*.py "$DATA_DIR/meta.json" \
                tools/train.py $(find mmdet_polyloss -name '*.py' | LC_ALL=C sort)
            echo "${run_options[$i]}"; } | sha256sum | cut -c1-16)
    if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$dir/.demo-done" 2>/dev/null)" = "$key" ]; then
      last=$(cat "$dir/last_checkpoint" 2>/dev/null) || true
      damage=
      if [ -z "$last" ]; then damage="no last_checkpoint file"
      elif [ ! -s "$last" ]; then damage="$last is missing or empty"; fi
      if [ -n "$damage" ]; then  # e.g. a checkpoint deleted by hand
        echo "run_demo: error: the finished run in $dir is damaged ($damage);" \
             "FORCE=1 retrains it" >&2
        exit 2
      fi
      say "$run: finished run found in $dir, not retraining (FORCE=1 to redo)"
      continue
    fi
    rm -rf "$dir"
  fi
  say "$run: training (${run_options[$i]})"
  t0=$(date +%s)
  tool tools/train.py "${run_cfgs[$i]}" --work-dir "$dir" --cfg-options ${run_options[$i]}
  if [ "$DRY" != 1 ]; then
    say "$run: trained in $(( $(date +%s) - t0 )) s"
    echo "$key" > "$dir/.demo-done"
  fi
done

say "4/5 COCO evaluation of the final checkpoints with tools/test.py"
for i in "${!run_dirs[@]}"; do
  dir=${run_dirs[$i]}
  ckpt=$dir/LAST_CHECKPOINT
  if [ "$DRY" != 1 ]; then
    ckpt=$(cat "$dir/last_checkpoint")
    if [ -f "$dir/.demo-tested" ] && [ "$dir/.demo-tested" -nt "$ckpt" ]; then
      say "$(basename "$dir"): already evaluated"
      continue
    fi
  fi
  # Seed and loss options too: the report reads them from the config this run dumps.
  status=0
  tool tools/test.py "${run_cfgs[$i]}" "$ckpt" --work-dir "$dir" --cfg-options ${run_options[$i]} \
    || status=$?
  if [ "$status" = 2 ]; then  # a user error, e.g. a checkpoint that cannot be read
    echo "run_demo: error: tools/test.py refused the run in $dir (above); FORCE=1 retrains it" >&2
    exit 2
  fi
  [ "$status" = 0 ] || exit "$status"
  [ "$DRY" = 1 ] || touch "$dir/.demo-tested"
done

say "5/5 comparison (COCO bbox metrics on the val split, in %)"
tool tools/sweep_report.py "${run_dirs[@]}" \
  --out-png "$WORK_DIR/sweep.png" --out-md "$WORK_DIR/sweep.md"
say "table: $WORK_DIR/sweep.md, plot: $WORK_DIR/sweep.png, " \
  "total $(( $(date +%s) - start )) s"
