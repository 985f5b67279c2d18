# PointPillars on KITTI, car:
# Poly-1 focal loss, epsilon = 0.5, one of the sweep's.
#
# The epsilon -1 config below (mmdet3d's config with PolyFocalAnchor3DHead and
# Poly-1 focal) with epsilon 0.5.
_base_ = './pointpillars_hv_secfpn_poly1-eps-1_8xb6-160e_kitti-3d-car.py'

model = dict(bbox_head=dict(loss_cls=dict(epsilon=0.5)))
