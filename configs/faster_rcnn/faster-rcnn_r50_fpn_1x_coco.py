# Faster R-CNN R50-FPN 1x COCO, cross-entropy baseline (mmdet: 37.4 box AP).
#
# mmdet's faster-rcnn_r50_fpn_1x_coco.py unchanged, re-exported so that the
# baseline and its Poly-1 variant sit in one folder for tools/sweep_report.py.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
