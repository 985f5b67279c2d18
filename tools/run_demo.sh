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
#   SEEDS         training seeds, e.g. "0 1 2" (default: 0). Seed 0 runs in
#                 <config name>/, seed N in <config name>_seedN/; with several
#                 seeds the report adds mean +- sd per loss and the per-seed
#                 differences against focal loss.
#   EPSILONS      Poly-1 epsilons trained next to focal loss, each >= -1, e.g.
#                 "-1 -0.5 0.5" for a sweep (default: -1). Epsilon e runs
#                 configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py with
#                 model.bbox_head.loss_cls.epsilon=e in
#                 retinanet_tiny_fpn_poly1-eps<e>_shapes/ (e as in -0.5, +0.5);
#                 the report and plot put every epsilon on one axis.
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
POLY1_CONFIG=configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py
say() { printf '\n[run_demo] %s\n' "$*"; }
for seed in ${SEEDS:-0}; do
  case $seed in
    *[!0-9]*) echo "run_demo: SEEDS must hold non-negative integers, got '$seed' in" \
                   "SEEDS='$SEEDS'" >&2; exit 2 ;;
  esac
done
# The runs: (config, run name, --cfg-options for the loss), focal first.
CONFIGS=(configs/demo/retinanet_tiny_fpn_focal_shapes.py)
NAMES=(retinanet_tiny_fpn_focal_shapes)
LOSS_OPTIONS=("")
for eps in ${EPSILONS:--1}; do
  # A plain decimal >= -1 (below, the loss goes negative; see the README),
  # written as in the COCO config names: -1, -0.5, 0, +0.5.
  if ! name_eps=$(awk -v e="$eps" 'BEGIN {
        if (e !~ /^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)$/ || e + 0 < -1) exit 1
        v = e + 0; if (v == 0) v = 0  # no -0
        printf "%s%g", (v > 0 ? "+" : ""), v }'); then
    echo "run_demo: EPSILONS must hold decimal numbers >= -1, got '$eps' in EPSILONS='$EPSILONS'" >&2
    exit 2
  fi
  name=retinanet_tiny_fpn_poly1-eps${name_eps}_shapes
  case " ${NAMES[*]} " in
    *" $name "*) echo "run_demo: EPSILONS lists epsilon $name_eps twice: EPSILONS='$EPSILONS'" >&2
                 exit 2 ;;
  esac
  CONFIGS+=("$POLY1_CONFIG")
  NAMES+=("$name")
  # Epsilon -1 is the config file as it stands (its finished runs stay valid).
  LOSS_OPTIONS+=("$([ "$name_eps" = -1 ] || echo "model.bbox_head.loss_cls.epsilon=$name_eps")")
done
start=$(date +%s)

say "1/5 environment"
bash tools/setup_env.sh

say "2/5 synthetic dataset in $DATA_DIR"
"$PY" tools/make_demo_data.py "$DATA_DIR"

say "3/5 training (mmengine logs every 10 iterations)"
run_dirs=()
run_cfgs=()
run_options=()
for seed in ${SEEDS:-0}; do
  for j in "${!CONFIGS[@]}"; do
    cfg=${CONFIGS[$j]}
    run=${NAMES[$j]}$([ "$seed" = 0 ] || echo "_seed$seed")
    dir=$WORK_DIR/$run
    # The options are one word (no spaces), hence unquoted below.
    options="randomness.seed=$seed ${LOSS_OPTIONS[$j]}"
    run_dirs+=("$dir")
    run_cfgs+=("$cfg")
    run_options+=("$options")
    # A finished run is reused only if config (and loss options), demo base,
    # dataset, seed and the code that trains (the package and tools/train.py)
    # are unchanged.
    key=$({ cat "$cfg" configs/demo/_base_/*.py "$DATA_DIR/meta.json" tools/train.py \
                $(find mmdet_polyloss -name '*.py' | LC_ALL=C sort)
            [ -z "${LOSS_OPTIONS[$j]}" ] || echo "${LOSS_OPTIONS[$j]}"
          } | sha256sum | cut -c1-16)
    [ "$seed" = 0 ] || key=$key-seed$seed
    if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$dir/.demo-done" 2>/dev/null)" = "$key" ]; then
      say "$run: finished run found in $dir, not retraining (FORCE=1 to redo)"
      continue
    fi
    rm -rf "$dir"
    say "$run: training (seed $seed)"
    t0=$(date +%s)
    "$PY" tools/train.py "$cfg" --work-dir "$dir" --cfg-options $options
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
  # Seed and loss options too: the report reads them from the config this run dumps.
  "$PY" tools/test.py "${run_cfgs[$i]}" "$ckpt" --work-dir "$dir" \
      --cfg-options ${run_options[$i]}
  touch "$dir/.demo-tested"
done

say "5/5 comparison (COCO bbox metrics on the val split, in %)"
"$PY" tools/sweep_report.py "${run_dirs[@]}" \
  --out-png "$WORK_DIR/sweep.png" --out-md "$WORK_DIR/sweep.md"
say "table: $WORK_DIR/sweep.md, plot: $WORK_DIR/sweep.png, " \
  "total $(( $(date +%s) - start )) s"
