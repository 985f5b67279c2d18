"""Pure-PyTorch Poly losses: no mmdet import, usable from any framework.

Layers, each importing only those above it: ``common`` (settings, dtype,
reductions) -> ``checks`` (validation) -> ``reference`` (the formula in composed
ops) -> ``triton_kernels`` -> ``fused`` (analytic-gradient autograd function)
-> ``poly_focal`` / ``poly_cross_entropy`` (the public functions below).
"""
from .checks import set_value_checks, value_checks_enabled
from .common import weight_reduce
from .poly_cross_entropy import poly1_binary_cross_entropy, poly1_cross_entropy
from .poly_focal import poly1_focal_loss, polyn_focal_loss

__all__ = ['polyn_focal_loss', 'poly1_focal_loss', 'poly1_cross_entropy',
           'poly1_binary_cross_entropy', 'weight_reduce', 'set_value_checks',
           'value_checks_enabled']
