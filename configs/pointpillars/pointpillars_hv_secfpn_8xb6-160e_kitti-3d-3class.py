# PointPillars on KITTI, 3 classes: focal-loss baseline.
#
# mmdet3d's config (below; mmdet.FocalLoss in mmdet3d's own Anchor3DHead) unchanged
# but for the checkpoint hook, re-exported so the sweep's baseline and its Poly-1
# runs live in one folder.
_base_ = 'mmdet3d::pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py'

custom_imports = dict(imports=['mmdet_polyloss.det3d'], allow_failed_imports=False)

# Checkpoints a crash cannot break (docs/reliability.md); merged into mmdet3d's
# CheckpointHook settings, which it keeps. Named with mmdet's scope (mmdet3d's is default).
default_hooks = dict(checkpoint=dict(type='mmdet.AtomicCheckpointHook'))
