# Faster R-CNN R50-FPN 1x COCO, Poly-1 cross-entropy, epsilon = -1.
#
# mmdet's faster-rcnn_r50_fpn_1x_coco.py with only the RoI box classifier's
# loss replaced by softmax Poly-1 cross-entropy at epsilon -1 (the paper's
# Mask R-CNN setting, without the mask branch). The merged loss_cls keeps
# mmdet's use_sigmoid=False and loss_weight; the RPN loss stays as it is.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

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
