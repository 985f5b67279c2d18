# FCOS R50-caffe-FPN GN-head 1x COCO, focal-loss baseline.
#
# mmdet's fcos_r50-caffe_fpn_gn-head_1x_coco.py unchanged (focal loss), re-
# exported so the whole sweep lives in one folder and tools/sweep_report.py
# finds it.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
