"""Poly-1 / Poly-N focal and Poly-1 cross-entropy losses (Leng et al., ICLR 2022)
for MMDetection 3.x.

``import mmdet_polyloss`` (or ``custom_imports=dict(imports=['mmdet_polyloss'])``
in a config) registers the losses in ``mmdet.registry.MODELS`` and the
crash-safe ``AtomicCheckpointHook`` in ``mmdet.registry.HOOKS``. Without mmdet
installed, the pure-PyTorch API in :mod:`mmdet_polyloss.functional` still works.
"""
from .functional import (
    poly1_binary_cross_entropy,
    poly1_cross_entropy,
    poly1_focal_loss,
    polyn_focal_loss,
)

__version__ = '0.1.0'
__all__ = ['polyn_focal_loss', 'poly1_focal_loss', 'poly1_cross_entropy',
           'poly1_binary_cross_entropy', '__version__']

try:
    import mmdet  # noqa: F401
except ModuleNotFoundError as err:
    if err.name != 'mmdet':  # mmdet is installed but broken: say so
        raise
else:
    from .engine.hooks import AtomicCheckpointHook  # registers the hook
    from .losses import Poly1CrossEntropyLoss, Poly1FocalLoss, PolyNFocalLoss  # noqa: F401 (registers)
    __all__ += ['Poly1FocalLoss', 'PolyNFocalLoss', 'Poly1CrossEntropyLoss', 'AtomicCheckpointHook']
