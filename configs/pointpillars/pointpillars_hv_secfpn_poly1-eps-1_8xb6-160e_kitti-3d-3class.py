# PointPillars on KITTI, 3 classes: Poly-1 focal loss, epsilon = -1.
#
# mmdet3d's config (below) with the classification loss replaced: Poly-1 focal with
# epsilon -1 (alpha-weighted epsilon term); the merged loss_cls keeps mmdet3d's
# use_sigmoid, gamma, alpha and loss_weight. mmdet3d's Anchor3DHead samples anchors
# for every loss type but 'mmdet.FocalLoss' and 'mmdet.GHMC', so the head is
# PolyFocalAnchor3DHead: mmdet3d's head with sampling off for a focal-type loss, as
# mmdet3d has it for FocalLoss (mmdet_polyloss/det3d/heads.py).
_base_ = 'mmdet3d::pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py'

custom_imports = dict(imports=['mmdet_polyloss.det3d'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        type='PolyFocalAnchor3DHead',
        loss_cls=dict(
            type='mmdet.Poly1FocalLoss',
            epsilon=-1.0,
        )))

# The other change: checkpoints a crash cannot break (docs/reliability.md); merged
# into mmdet3d's CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='mmdet.AtomicCheckpointHook'))
