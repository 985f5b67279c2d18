"""Poly losses registered in ``mmdet.registry.MODELS``."""
from .poly_focal_loss import Poly1FocalLoss, PolyNFocalLoss

__all__ = ['Poly1FocalLoss', 'PolyNFocalLoss']
