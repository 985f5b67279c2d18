"""Pure-PyTorch Poly losses: no mmdet import, usable from any framework."""
from .poly_cross_entropy import poly1_binary_cross_entropy, poly1_cross_entropy
from .poly_focal import poly1_focal_loss, poly_focal_loss, weight_reduce

__all__ = ['poly_focal_loss', 'poly1_focal_loss', 'poly1_cross_entropy',
           'poly1_binary_cross_entropy', 'weight_reduce']
