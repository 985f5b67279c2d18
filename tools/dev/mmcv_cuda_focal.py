"""mmcv's CUDA focal-loss op and NMS where mmcv was installed without compiled ops: a stand-in
``mmcv._ext`` (:func:`ensure_ops`) runs mmcv 2.1.0's own focal kernel header, JIT-compiled
from an mmcv source tree on first use, behind a launcher like mmcv's (the host-synchronising
label check, one launch), so that mmcv's op and mmdet's FocalLoss run unchanged; its ``nms``
is torchvision's (CPU and CUDA), which keeps the boxes mmcv's keeps at mmdet's offset 0, so
that a detector can be tested. Its other ops raise NotImplementedError when called
(``import mmdet`` only imports them)."""
import functools
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Optional

from torch import Tensor

_LAUNCHER = r'''
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "common_cuda_helper.hpp"
using at::Tensor;
#define PYTORCH_CUDA_HELPER  // mmcv's helper pulls in THC headers that torch 2.x removed
#include "sigmoid_focal_loss_cuda_kernel.cuh"

template <bool backward>
void launch(Tensor input, Tensor target, Tensor out, double gamma, double alpha) {
  const int n = out.numel();
  at::cuda::CUDAGuard guard(input.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "sigmoid_focal_loss", [&] {
    auto kernel = backward ? sigmoid_focal_loss_backward_cuda_kernel<scalar_t>
                           : sigmoid_focal_loss_forward_cuda_kernel<scalar_t>;
    kernel<<<GET_BLOCKS(n), THREADS_PER_BLOCK, 0, stream>>>(
        n, input.data_ptr<scalar_t>(), target.data_ptr<int64_t>(), nullptr,
        out.data_ptr<scalar_t>(), gamma, alpha, input.size(1));
  });
  AT_CUDA_CHECK(cudaGetLastError());
}

void focal_forward(Tensor input, Tensor target, Tensor output, double gamma, double alpha) {
  // mmcv's launcher checks the labels on the host: one sync per call.
  TORCH_CHECK(target.max().item<int64_t>() <= input.size(1),
              "target label should smaller or equal than num classes");
  launch<false>(input, target, output, gamma, alpha);
}

void focal_backward(Tensor input, Tensor target, Tensor grad, double gamma, double alpha) {
  launch<true>(input, target, grad, gamma, alpha);
}
'''
_DECLARATIONS = '''
void focal_forward(at::Tensor, at::Tensor, at::Tensor, double, double);
void focal_backward(at::Tensor, at::Tensor, at::Tensor, double, double);
'''
#: What :func:`ensure_ops` answers when the stand-in serves mmcv's focal op.
STAND_IN = 'mmcv 2.1.0 kernel, JIT-built (stand-in mmcv._ext)'


def _kernel_sources(mmcv_src: str) -> str:
    """mmcv's ``ops/csrc/common`` folder in ``mmcv_src``, checked to hold the kernel."""
    csrc = os.path.join(mmcv_src, 'mmcv', 'ops', 'csrc', 'common')
    header = os.path.join(csrc, 'cuda', 'sigmoid_focal_loss_cuda_kernel.cuh')
    if not os.path.isfile(header):
        raise ValueError(f'mmcv_src={mmcv_src!r} holds no {header}')
    return csrc


def _build(mmcv_src: str):
    from torch.utils.cpp_extension import load_inline
    csrc = _kernel_sources(mmcv_src)
    return load_inline(name='mmcv_sigmoid_focal_bench', cpp_sources=_DECLARATIONS,
                       cuda_sources=_LAUNCHER, functions=['focal_forward', 'focal_backward'],
                       extra_include_paths=[csrc, os.path.join(csrc, 'cuda')],
                       extra_cuda_cflags=['-O3'])


def _focal_op(launcher: str):
    """mmcv's ``sigmoid_focal_loss_forward`` or ``_backward``, without per-class weights."""
    def op(self, input: Tensor, target: Tensor, weight: Tensor, out: Tensor, gamma: float,
           alpha: float) -> None:
        if weight.numel():
            raise NotImplementedError('the stand-in focal op takes no per-class weight '
                                      f'(got one of shape {tuple(weight.shape)})')
        getattr(self._kernels, launcher)(input, target, out, gamma, alpha)
    return op


class StandInExt(types.ModuleType):
    """A stand-in for ``mmcv._ext`` with mmcv's sigmoid focal loss and NMS only."""
    sigmoid_focal_loss_forward = _focal_op('focal_forward')
    sigmoid_focal_loss_backward = _focal_op('focal_backward')

    def __init__(self, mmcv_src: str) -> None:
        super().__init__('mmcv._ext', 'stand-in: sigmoid focal loss and nms (mmcv_cuda_focal)')
        self._mmcv_src = mmcv_src
        # Found by importlib (pkgutil.find_loader raises on a module without a spec); no
        # loader, so mmengine's mmcv_full_available() says False: no DCN or SyncBN ops here.
        self.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None, origin=__file__)

    @staticmethod
    def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
        """mmcv's ``nms``: the kept boxes' indices, highest score first (offset 0 only)."""
        if offset != 0:
            raise NotImplementedError(f'the stand-in nms takes offset 0 only, got {offset}')
        from torchvision.ops import nms
        return nms(boxes, scores, iou_threshold)

    @functools.cached_property
    def _kernels(self):
        return _build(self._mmcv_src)

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def not_built(*args, **kwargs):
            raise NotImplementedError(
                f'mmcv op {name!r} is not available: mmcv has no compiled ops here and the '
                'stand-in from tools/dev/mmcv_cuda_focal.py has only sigmoid_focal_loss and nms')
        return not_built


def ensure_ops(mmcv_src: Optional[str]) -> str:
    """Make ``mmcv.ops`` importable; return where its focal op comes from.
    ``RuntimeError`` when mmcv is missing, or has no compiled ops and no ``mmcv_src``."""
    if importlib.util.find_spec('mmcv') is None:
        raise RuntimeError('mmcv is not installed (mmcv-lite, without ops, is enough '
                           'together with --mmcv-src)')
    if isinstance(sys.modules.get('mmcv._ext'), StandInExt):
        return STAND_IN
    if importlib.util.find_spec('mmcv._ext') is not None:
        return "mmcv's compiled ops"
    if mmcv_src is None:
        raise RuntimeError('mmcv has no compiled ops here and no mmcv source tree was '
                           'given (--mmcv-src) to JIT-build its focal kernel from')
    _kernel_sources(mmcv_src)
    sys.modules['mmcv._ext'] = StandInExt(mmcv_src)
    return STAND_IN
