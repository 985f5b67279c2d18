# Tree-crown baseline, pretrained: RetinaNet with an ImageNet MobileNetV2
# backbone (the shared base) and mmdet's focal loss (gamma 2, alpha 0.25).
# Data: python tools/make_tree_data.py
# Weights: python tools/model_converters/mobilenet_v2_imagenet.py
# Train: python tools/train.py configs/trees/retinanet_mobilenetv2_fpn_focal_trees.py
_base_ = './_base_/retinanet_mobilenetv2_fpn_trees.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0)))
