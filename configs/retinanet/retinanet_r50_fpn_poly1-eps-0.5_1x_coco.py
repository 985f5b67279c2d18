# RetinaNet R50-FPN 1x COCO, Poly-1 focal loss, epsilon = -0.5.
#
# mmdet's retinanet_r50_fpn_1x_coco.py with only the classification loss
# replaced: Poly-1 focal with epsilon -0.5 (alpha-weighted epsilon term). The
# merged loss_cls keeps mmdet's use_sigmoid, gamma, alpha and loss_weight.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='Poly1FocalLoss',
            epsilon=-0.5,
        )))

# The one other change: checkpoints a crash cannot break (docs/reliability.md);
# merged into mmdet's CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
