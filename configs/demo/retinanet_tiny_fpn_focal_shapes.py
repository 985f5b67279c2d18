# Demo baseline: the tiny RetinaNet on the synthetic shapes dataset with
# mmdet's focal loss (gamma 2, alpha 0.25), as set in the shared base.
# Train: python tools/train.py configs/demo/retinanet_tiny_fpn_focal_shapes.py
_base_ = './_base_/retinanet_tiny_fpn_shapes.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0)))
