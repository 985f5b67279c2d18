# Faster R-CNN R50-FPN 1x COCO, cross-entropy baseline (mmdet: 37.4 box AP).
#
# mmdet's faster-rcnn_r50_fpn_1x_coco.py unchanged but for the checkpoint hook
# (below), re-exported so that the baseline and its Poly-1 variant sit in one
# folder for tools/sweep_report.py.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

# Checkpoints a crash cannot break (docs/reliability.md); merged into mmdet's
# CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
