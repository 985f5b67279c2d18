"""pytest plugin: route the fused loss through the Triton kernels in Triton's
CPU interpreter, as CUDA does (used by tests/functional/test_triton_kernels.py
to run the loss tests once more that way; `-p triton_everywhere`)."""
import os

os.environ['TRITON_INTERPRET'] = '1'

import torch  # noqa: E402

from mmdet_polyloss.functional import fused, triton_kernels  # noqa: E402


def _use_triton(pred: torch.Tensor, params: fused.PolyParams) -> bool:
    return pred.dtype != torch.float64 and triton_kernels.supports(params)


fused._use_triton = _use_triton
