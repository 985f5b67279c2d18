# Mask R-CNN R50-FPN 1x COCO, cross-entropy baseline (mmdet: 38.2 box AP,
# 34.7 mask AP).
#
# mmdet's mask-rcnn_r50_fpn_1x_coco.py unchanged, re-exported so that the
# baseline and its Poly-1 variant sit in one folder for tools/sweep_report.py.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
