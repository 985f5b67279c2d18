# PointPillars on Waymo (every frame), vehicle:
# Poly-1 focal loss, epsilon = 0.5, one of the sweep's.
#
# The epsilon -1 config below (mmdet3d's config with PolyFocalAnchor3DHead and
# Poly-1 focal) with epsilon 0.5.
_base_ = './pointpillars_hv_secfpn_sbn-all_poly1-eps-1_16xb2-2x_waymo-3d-car.py'

model = dict(pts_bbox_head=dict(loss_cls=dict(epsilon=0.5)))
