# PointPillars on Waymo (all frames), vehicle, pedestrian, cyclist:
# Poly-1 focal loss, epsilon = 0.5, one of the sweep's.
#
# The epsilon -1 config below (mmdet3d's config with PolyFocalAnchor3DHead and
# Poly-1 focal) with epsilon 0.5.
_base_ = './pointpillars_hv_secfpn_sbn-all_poly1-eps-1_16xb2-2x_waymo-3d-3class.py'

model = dict(pts_bbox_head=dict(loss_cls=dict(epsilon=0.5)))
