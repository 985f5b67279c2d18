# Tree-crown baseline: the tiny RetinaNet of the shared base with mmdet's
# focal loss (gamma 2, alpha 0.25).
# Data: python tools/make_tree_data.py
# Train: python tools/train.py configs/trees/retinanet_tiny_fpn_focal_trees.py
_base_ = './_base_/retinanet_tiny_fpn_trees.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0)))
