r"""Fused Poly-N focal loss for class-index targets: analytic gradient, one node.

For a hard target write ``z = x`` for the target class and ``z = -x``
elsewhere, ``q = 1 - p_t = sigmoid(-z)``, ``CE = softplus(-z)``,
``P(q) = sum_j eps_j q^j`` and ``w = alpha_t`` (alpha-weighted) or 1::

    L     = q^gamma * (alpha_t * CE + w * P(q))
    -dL/dz = q^gamma * (gamma * (1 - q) * (alpha_t * CE + w * P(q))
                        + q * (alpha_t + w * (1 - q) * P'(q)))

so ``dL/dx = +G`` on negatives and ``-G`` on the target class, with ``G`` the
right-hand side. No power of ``q`` below ``gamma`` appears, so the gradient is
finite for every ``gamma >= 0`` and every logit.

With ~99% background, every element is first treated as a negative (one
dense pass, no one-hot), then the one target element per row is corrected
through a gather/scatter of N elements. Only the logits, labels and weight
are saved for backward; the rest is recomputed. No host sync. On CUDA with
Triton the dense passes run as one kernel each way (``triton_kernels``).
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PolyParams(NamedTuple):
    """Hyper-parameters of the loss, already validated."""
    epsilons: Tuple[float, ...]
    gamma: float
    alpha: float
    alpha_weighted_poly: bool

    def alpha_t(self, positive: bool) -> float:
        if self.alpha < 0:
            return 1.0
        return self.alpha if positive else 1.0 - self.alpha

    def poly_weight(self, positive: bool) -> float:
        return self.alpha_t(positive) if self.alpha_weighted_poly else 1.0


def _polynomial(q: Tensor, eps: Sequence[float]) -> Tensor:
    """``P(q) = sum_j eps_j q^j`` (Horner)."""
    acc = torch.full_like(q, eps[-1])
    for c in reversed(eps[:-1]):
        acc = acc.mul_(q).add_(c)
    return acc.mul_(q)


def _polynomial_derivative(q: Tensor, eps: Sequence[float]) -> Tensor:
    """``P'(q) = sum_j j eps_j q^(j-1)`` (Horner)."""
    coeffs = [j * e for j, e in enumerate(eps, start=1)]
    acc = torch.full_like(q, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc.mul_(q).add_(c)
    return acc


def _mul_pow_(out: Tensor, q: Tensor, gamma: float) -> Tensor:
    """``out *= q^gamma`` in place, without a temporary for gamma in {0, 1, 2}."""
    if gamma == 0:
        return out
    if gamma == 1:
        return out.mul_(q)
    if gamma == 2:
        return out.mul_(q).mul_(q)
    return out.mul_(q.pow(gamma))


def hard_target_loss(q: Tensor, ce: Tensor, params: PolyParams, positive: bool) -> Tensor:
    """``L`` from ``q = 1 - p_t`` and ``CE``; overwrites ``ce``."""
    alpha_t, w = params.alpha_t(positive), params.poly_weight(positive)
    inner = ce.mul_(alpha_t)
    if len(params.epsilons) == 1:
        inner.add_(q, alpha=w * params.epsilons[0])
    else:
        inner.add_(_polynomial(q, params.epsilons).mul_(w))
    return _mul_pow_(inner, q, params.gamma)


def hard_target_grad(q: Tensor, ce: Tensor, params: PolyParams, positive: bool) -> Tensor:
    """``G = -dL/dz`` from ``q`` and ``CE``; overwrites ``ce``."""
    alpha_t, w = params.alpha_t(positive), params.poly_weight(positive)
    gamma = params.gamma
    p_t = torch.sub(1.0, q)
    inner = hard_target_loss(q, ce, params._replace(gamma=0.0), positive)  # alpha_t*CE + w*P
    if len(params.epsilons) == 1:
        slope = p_t.mul(w * params.epsilons[0]).add_(alpha_t)  # alpha_t + w (1-q) P'
    else:
        slope = _polynomial_derivative(q, params.epsilons).mul_(p_t).mul_(w).add_(alpha_t)
    grad = slope.mul_(q)
    if gamma != 0:
        grad.add_(inner.mul_(p_t), alpha=gamma)
    return _mul_pow_(grad, q, gamma)


def _negative_terms(x: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.sigmoid(x), F.softplus(x)


def _positive_terms(x: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.sigmoid(-x), F.softplus(-x)


def _target_columns(labels: Tensor, num_classes: int) -> Tuple[Tensor, Tensor]:
    """(N, 1) column of each row's target class (clamped) and its positive mask."""
    is_positive = labels < num_classes
    return labels.clamp(max=num_classes - 1).unsqueeze(1), is_positive.unsqueeze(1)


def dense_loss_cpu(x: Tensor, labels: Tensor, weight: Optional[Tensor],
                   params: PolyParams) -> Tensor:
    """Element-wise weighted loss (N, C) for float ``x`` and labels in [0, C]."""
    loss = hard_target_loss(*_negative_terms(x), params, positive=False)
    column, is_positive = _target_columns(labels, x.shape[1])
    x_target = x.gather(1, column)
    correction = (hard_target_loss(*_positive_terms(x_target), params, positive=True)
                  - hard_target_loss(*_negative_terms(x_target), params, positive=False))
    loss.scatter_add_(1, column, correction.mul_(is_positive))
    return loss if weight is None else loss.mul_(weight)


def dense_grad_cpu(x: Tensor, labels: Tensor, weight: Optional[Tensor], params: PolyParams,
                   grad_output: Tensor) -> Tensor:
    """``dL/dx`` (N, C) times ``weight`` and ``grad_output`` (scalar or (N, C))."""
    grad = hard_target_grad(*_negative_terms(x), params, positive=False)
    column, is_positive = _target_columns(labels, x.shape[1])
    x_target = x.gather(1, column)
    correction = (hard_target_grad(*_positive_terms(x_target), params, positive=True)
                  .neg_()
                  .sub_(hard_target_grad(*_negative_terms(x_target), params, positive=False)))
    grad.scatter_add_(1, column, correction.mul_(is_positive))
    if weight is not None:
        grad.mul_(weight)
    return grad.mul_(grad_output)


def _use_triton(pred: Tensor, params: PolyParams) -> bool:
    """Triton for CUDA fp32/fp16/bf16 (float64 keeps its precision in eager ops)."""
    if not pred.is_cuda or pred.dtype == torch.float64:
        return False
    from . import triton_kernels
    return triton_kernels.AVAILABLE and triton_kernels.supports(params)


class FusedPolyFocalIndex(torch.autograd.Function):
    """Poly-N focal loss for (N, C) logits and labels (N,) in [0, C].

    Returns the weighted element-wise loss (``reduce_sum=False``) or its sum,
    in float32 for half inputs. ``weight`` is None, (N, 1) or (N, C) and gets
    no gradient.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                params: PolyParams, reduce_sum: bool) -> Tensor:
        ctx.params, ctx.reduce_sum = params, reduce_sum
        ctx.save_for_backward(pred, labels, weight)
        if _use_triton(pred, ctx.params):
            from .triton_kernels import triton_forward
            return triton_forward(pred, labels, weight, params, reduce_sum)
        loss = dense_loss_cpu(_compute_view(pred), labels, weight, params)
        return loss.sum() if reduce_sum else loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        pred, labels, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        if _use_triton(pred, ctx.params):
            from .triton_kernels import triton_backward
            grad = triton_backward(pred, labels, weight, ctx.params, grad_output)
        else:
            grad = dense_grad_cpu(_compute_view(pred), labels, weight, ctx.params,
                                  grad_output.to(torch.promote_types(pred.dtype,
                                                                     torch.float32)))
        return grad.to(pred.dtype), None, None, None, None


def _compute_view(pred: Tensor) -> Tensor:
    """``pred`` in its compute dtype: half types in float32, others as they are."""
    return pred.to(torch.promote_types(pred.dtype, torch.float32)).contiguous()
