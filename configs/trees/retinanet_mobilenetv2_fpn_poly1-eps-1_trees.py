# Tree-crown Poly-1, pretrained: the same ImageNet MobileNetV2 RetinaNet, data
# and recipe as the pretrained focal baseline, with the Poly-1 focal loss at
# epsilon -1 (alpha-weighted epsilon term). Only bbox_head.loss_cls differs
# from retinanet_mobilenetv2_fpn_focal_trees.py; tools/sweep.py sets other
# epsilons through --cfg-options.
_base_ = './_base_/retinanet_mobilenetv2_fpn_trees.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            type='Poly1FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            epsilon=-1.0,
            alpha_weighted_poly=True,
            loss_weight=1.0)))
