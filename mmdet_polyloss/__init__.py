"""Poly-1 / Poly-N focal and Poly-1 cross-entropy losses (Leng et al., ICLR 2022)
for MMDetection 3.x.

``import mmdet_polyloss`` (or ``custom_imports=dict(imports=['mmdet_polyloss'])``
in a config) registers the losses in ``mmdet.registry.MODELS``, the crash-safe
``AtomicCheckpointHook`` in ``mmdet.registry.HOOKS``, and mmengine's checkpoint
types with torch's weights-only unpickler (:mod:`mmdet_polyloss.engine.checkpoint`).
The functions in :mod:`mmdet_polyloss.functional` are plain PyTorch.
"""
from .engine import AtomicCheckpointHook, register_mmengine_safe_globals
from .functional import (
    poly1_binary_cross_entropy,
    poly1_cross_entropy,
    poly1_focal_loss,
    polyn_focal_loss,
)
from .losses import Poly1CrossEntropyLoss, Poly1FocalLoss, PolyNFocalLoss

__version__ = '0.1.0'
__all__ = ['Poly1FocalLoss', 'PolyNFocalLoss', 'Poly1CrossEntropyLoss', 'AtomicCheckpointHook',
           'polyn_focal_loss', 'poly1_focal_loss', 'poly1_cross_entropy',
           'poly1_binary_cross_entropy', '__version__']

register_mmengine_safe_globals()
