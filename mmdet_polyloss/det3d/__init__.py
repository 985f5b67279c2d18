"""MMDetection3D support: anchor-based 3D heads that take the Poly focal losses.

Import it from a config (``custom_imports=dict(imports=['mmdet_polyloss.det3d'],
allow_failed_imports=False)``): it registers, in ``mmdet3d.registry.MODELS``,
``PolyFocalAnchor3DHead``, ``PolyFocalShapeAwareHead`` and ``PolyFocalPartA2RPNHead``
(:mod:`mmdet_polyloss.det3d.heads`). It needs mmdet3d (``pip install .[3d]``);
``import mmdet_polyloss`` does not import this subpackage.
"""
try:
    import mmdet3d  # noqa: F401
except ImportError as error:
    raise ImportError(
        "mmdet_polyloss.det3d needs mmdet3d, which cannot be imported here: install the "
        "[3d] extra (pip install 'mmdet-polyloss[3d]', or bash tools/setup_env.sh)") from error

from .heads import (  # noqa: E402
    COVERED_HEADS,
    FOCAL_TYPE_LOSSES,
    PolyFocalAnchor3DHead,
    PolyFocalPartA2RPNHead,
    PolyFocalShapeAwareHead,
    check_focal_head_setup,
)

__all__ = ['PolyFocalAnchor3DHead', 'PolyFocalShapeAwareHead', 'PolyFocalPartA2RPNHead',
           'COVERED_HEADS', 'FOCAL_TYPE_LOSSES', 'check_focal_head_setup']
