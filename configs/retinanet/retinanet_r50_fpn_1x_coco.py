# RetinaNet R50-FPN 1x COCO, focal-loss baseline (36.5 box AP in mmdet).
#
# mmdet's retinanet_r50_fpn_1x_coco.py (focal loss) unchanged but for the
# checkpoint hook (below), re-exported so the whole sweep lives in one folder
# and tools/sweep_report.py finds it.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

# Checkpoints a crash cannot break (docs/reliability.md); merged into mmdet's
# CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
