# Mask R-CNN R50-FPN 1x COCO, Poly-1 cross-entropy, epsilon = -1.
#
# The PolyLoss paper's COCO setting (its Table 1): mmdet's
# mask-rcnn_r50_fpn_1x_coco.py with only the RoI box classifier's loss
# replaced by softmax Poly-1 cross-entropy at epsilon -1. The merged loss_cls
# keeps mmdet's use_sigmoid=False and loss_weight; RPN and mask losses stay
# as they are.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='Poly1CrossEntropyLoss',
                epsilon=-1.0,
            ))))

# The one other change: checkpoints a crash cannot break (docs/reliability.md);
# merged into mmdet's CheckpointHook settings, which it keeps.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
