# ATSS R50-FPN 1x COCO, focal-loss baseline.
#
# mmdet's atss_r50_fpn_1x_coco.py unchanged (focal loss), re-exported so the
# whole sweep lives in one folder and tools/sweep_report.py finds it.
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'
