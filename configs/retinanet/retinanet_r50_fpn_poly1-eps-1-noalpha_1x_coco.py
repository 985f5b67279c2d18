# RetinaNet R50-FPN 1x COCO, Poly-1 focal loss, epsilon = -1, epsilon term NOT
# alpha-weighted.
#
# mmdet's retinanet_r50_fpn_1x_coco.py with only the classification loss
# replaced: Poly-1 focal with epsilon -1 and alpha_weighted_poly=False, the
# form most public ports use (FL + eps * (1 - pt)^(gamma+1)); see the README,
# "What Poly-1 focal loss is", for why the default weights the epsilon term by
# alpha_t. In this form epsilon -1 makes the loss of confident positives
# negative (leading coefficient alpha - 1 = -0.75), hence allow_negative_loss.
# The merged loss_cls keeps mmdet's use_sigmoid, gamma, alpha and loss_weight.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='Poly1FocalLoss',
            epsilon=-1.0,
            alpha_weighted_poly=False,
            allow_negative_loss=True,
        )))

# The one other change: checkpoints a crash cannot break (docs/reliability.md);
# merged into mmdet's CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
