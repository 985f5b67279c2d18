"""Poly losses registered in ``mmdet.registry.MODELS``."""
from .poly_cross_entropy_loss import Poly1CrossEntropyLoss
from .poly_focal_loss import Poly1FocalLoss, PolyNFocalLoss

__all__ = ['Poly1FocalLoss', 'PolyNFocalLoss', 'Poly1CrossEntropyLoss']
