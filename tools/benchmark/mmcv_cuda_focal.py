"""mmdet's FocalLoss CUDA path, for benchmarking where mmcv has no CUDA ops.

mmdet's ``FocalLoss`` sends integer labels on CUDA to mmcv's hand-written
kernel (``mmcv.ops.sigmoid_focal_loss``). Where mmcv's CUDA ops are built,
:func:`load` returns that op. Otherwise it JIT-compiles mmcv's own kernel
header (``sigmoid_focal_loss_cuda_kernel.cuh``, from an mmcv source tree the
caller points to) behind a small launcher that does what mmcv's does: the
host-synchronising label check, one kernel launch, fp32/fp16 only. The
Python side mirrors mmcv's ``SigmoidFocalLossFunction`` plus mmdet's weight
and reduction wrapper, so the timing covers the same work.
"""
import os
from typing import Callable, Optional

import torch
from torch import Tensor

_LAUNCHER = r'''
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include "common_cuda_helper.hpp"
using at::Tensor;
#define PYTORCH_CUDA_HELPER  // mmcv's helper pulls in THC headers that torch 2.x removed
#include "sigmoid_focal_loss_cuda_kernel.cuh"

static void check_labels(const Tensor& input, const Tensor& target) {
  // mmcv's launcher checks the labels on the host: one sync per call.
  TORCH_CHECK(target.max().item<int64_t>() <= input.size(1),
              "target label should smaller or equal than num classes");
}

void focal_forward(Tensor input, Tensor target, Tensor output, double gamma, double alpha) {
  check_labels(input, target);
  const int n = output.numel();
  at::cuda::CUDAGuard guard(input.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "focal_forward", [&] {
    sigmoid_focal_loss_forward_cuda_kernel<scalar_t>
        <<<GET_BLOCKS(n), THREADS_PER_BLOCK, 0, stream>>>(
            n, input.data_ptr<scalar_t>(), target.data_ptr<int64_t>(), nullptr,
            output.data_ptr<scalar_t>(), gamma, alpha, input.size(1));
  });
  AT_CUDA_CHECK(cudaGetLastError());
}

void focal_backward(Tensor input, Tensor target, Tensor grad_input, double gamma,
                    double alpha) {
  const int n = grad_input.numel();
  at::cuda::CUDAGuard guard(input.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(input.scalar_type(), "focal_backward", [&] {
    sigmoid_focal_loss_backward_cuda_kernel<scalar_t>
        <<<GET_BLOCKS(n), THREADS_PER_BLOCK, 0, stream>>>(
            n, input.data_ptr<scalar_t>(), target.data_ptr<int64_t>(), nullptr,
            grad_input.data_ptr<scalar_t>(), gamma, alpha, input.size(1));
  });
  AT_CUDA_CHECK(cudaGetLastError());
}
'''

_DECLARATIONS = '''
void focal_forward(at::Tensor input, at::Tensor target, at::Tensor output, double gamma,
                   double alpha);
void focal_backward(at::Tensor input, at::Tensor target, at::Tensor grad_input,
                    double gamma, double alpha);
'''


def _build(mmcv_src: str, verbose: bool = False):
    from torch.utils.cpp_extension import load_inline
    csrc = os.path.join(mmcv_src, 'mmcv', 'ops', 'csrc', 'common')
    header = os.path.join(csrc, 'cuda', 'sigmoid_focal_loss_cuda_kernel.cuh')
    if not os.path.isfile(header):
        raise ValueError(f'mmcv_src={mmcv_src!r} holds no {header}')
    return load_inline(name='mmcv_sigmoid_focal_bench', cpp_sources=_DECLARATIONS,
                       cuda_sources=_LAUNCHER, functions=['focal_forward', 'focal_backward'],
                       extra_include_paths=[csrc, os.path.join(csrc, 'cuda')],
                       extra_cuda_cflags=['-O3'], verbose=verbose)


def load(mmcv_src: Optional[str]) -> Callable[..., Tensor]:
    """``loss(pred, labels, weight, avg_factor)`` as mmdet FocalLoss runs it on CUDA."""
    try:
        from mmcv.ops import sigmoid_focal_loss as op  # real mmcv with CUDA ops
    except Exception:  # noqa: BLE001  (no mmcv, or mmcv without compiled ops)
        if mmcv_src is None:
            raise RuntimeError('mmcv CUDA ops are not importable and no mmcv source '
                               'tree was given (--mmcv-src)')
        ext = _build(mmcv_src)
        op = _make_function(ext).apply

    def loss(pred: Tensor, labels: Tensor, weight: Optional[Tensor], avg_factor: float,
             gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
        # mmdet.models.losses.focal_loss.sigmoid_focal_loss: unreduced op, then weight.
        out = op(pred.contiguous(), labels.contiguous(), gamma, alpha, None, 'none')
        if weight is not None:
            out = out * weight.view(-1, 1)
        return out.sum() / (avg_factor + torch.finfo(torch.float32).eps)

    return loss


def _make_function(ext):
    class SigmoidFocal(torch.autograd.Function):
        """mmcv's SigmoidFocalLossFunction with reduction='none'."""

        @staticmethod
        def forward(ctx, pred, labels, gamma, alpha, weight, reduction):
            output = pred.new_zeros(pred.shape)
            ext.focal_forward(pred, labels, output, float(gamma), float(alpha))
            ctx.save_for_backward(pred, labels)
            ctx.gamma, ctx.alpha = float(gamma), float(alpha)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            pred, labels = ctx.saved_tensors
            grad = pred.new_zeros(pred.shape)
            ext.focal_backward(pred, labels, grad, ctx.gamma, ctx.alpha)
            grad *= grad_output
            return grad, None, None, None, None, None

    return SigmoidFocal
