r"""Poly-N focal loss in plain PyTorch (no mmdet import).

Sigmoid, per class and per anchor. With logit ``x``, target ``t`` in [0, 1],
``p = sigmoid(x)``::

    p_t     = t * p + (1 - t) * (1 - p)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)        (1 when alpha < 0)
    FL      = alpha_t * (1 - p_t)^gamma * BCE(x, t)
    PolyN   = FL + w * sum_j epsilons[j-1] * (1 - p_t)^(gamma + j)

with ``w = alpha_t`` (``alpha_weighted_poly=True``, the paper's form) or
``w = 1`` (the form of most public ports). Focal loss expands as
``alpha_t * sum_j (1 - p_t)^(gamma + j) / j``, so the alpha-weighted Poly-1
moves its leading coefficient from ``alpha_t`` to ``alpha_t * (1 + epsilon)``:
``epsilon = -1`` removes the leading term exactly and ``epsilon >= -1`` keeps
the loss non-negative. Poly-1 is PolyN with ``epsilons=(epsilon,)``.

Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
Loss Functions", ICLR 2022 (arXiv 2204.12511).
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (check_epsilons, check_focal_params, check_inputs, check_real,
                     check_reduction, is_per_sample_weight)
from .fused import FusedPolyFocalIndex, PolyParams, compute_dtype

AvgFactor = Optional[Union[float, Tensor]]


def poly_focal_loss(pred: Tensor,
                    target: Tensor,
                    weight: Optional[Tensor] = None,
                    *,
                    epsilons: Sequence[float] = (1.0,),
                    gamma: float = 2.0,
                    alpha: float = 0.25,
                    alpha_weighted_poly: bool = True,
                    activated: bool = False,
                    reduction: str = 'mean',
                    avg_factor: AvgFactor = None,
                    allow_negative_loss: bool = False,
                    implementation: str = 'auto') -> Tensor:
    r"""Sigmoid Poly-N focal loss (see the module docstring for the formula).

    Args:
        pred: logits (or probabilities if ``activated``), shape (N, C), or any
            shape when ``target`` has the same shape.
        target: class indices (N,) in [0, C] where C means background, or
            per-element targets in [0, 1] of the same shape as ``pred``.
        weight: element-wise weight of the shape of ``pred``, or one per
            sample, (N,).
        epsilons: ``epsilons[j-1]`` is added to the coefficient of
            ``(1 - p_t)^(gamma + j)`` (times alpha_t if ``alpha_weighted_poly``).
        gamma: focusing parameter, >= 0.
        alpha: weight of positives in [0, 1]; negative disables alpha_t.
        alpha_weighted_poly: multiply the epsilon terms by alpha_t.
        activated: ``pred`` already holds probabilities.
        reduction: 'none', 'mean' or 'sum'.
        avg_factor: with 'mean', the sum is divided by ``avg_factor + eps``
            instead of the number of elements (mmdet's rule).
        allow_negative_loss: allow epsilons below the bound that keeps the
            loss >= 0 (``-1/j``; ``-min(alpha, 1 - alpha)/j`` without alpha_t on
            the epsilon terms; see ``checks.check_epsilons``).
        implementation: 'auto' uses the fused analytic-gradient path
            (:mod:`.fused`) for class-index targets with logits and a weight
            that needs no gradient, and composed autograd ops otherwise;
            'reference' always uses the composed ops.

    Returns:
        The loss, in float32 for half-precision ``pred`` (float64 stays
        float64); element-wise of the shape of ``pred`` for 'none'.
    """
    gamma, alpha = check_focal_params(gamma, alpha)
    epsilons = check_epsilons(epsilons, allow_negative_loss, alpha=alpha,
                              alpha_weighted_poly=alpha_weighted_poly)
    check_reduction(reduction, avg_factor)
    is_index = check_inputs(pred, target, weight, activated)

    if implementation not in ('auto', 'reference'):
        raise ValueError(
            f"implementation must be 'auto' or 'reference', got {implementation!r}")

    dtype = compute_dtype(pred)
    if (implementation == 'auto' and is_index and not activated
            and (weight is None or not weight.requires_grad)):
        params = PolyParams(epsilons, gamma, alpha, bool(alpha_weighted_poly))
        if weight is not None:
            weight = broadcast_weight(weight, pred).to(dtype)
        loss = FusedPolyFocalIndex.apply(pred, target, weight, params, reduction != 'none',
                                         torch.is_grad_enabled())
        return loss if reduction == 'none' else _scale_sum(loss, pred.numel(), reduction,
                                                           avg_factor)

    pred = pred.to(dtype)
    target = dense_target(target, pred) if is_index else target.to(dtype)
    loss = poly_focal_elementwise(pred, target, epsilons, gamma, alpha,
                                  alpha_weighted_poly, activated)
    return weight_reduce(loss, weight, reduction, avg_factor)


def poly_focal_elementwise(pred: Tensor, target: Tensor, epsilons: Sequence[float],
                           gamma: float, alpha: float, alpha_weighted_poly: bool,
                           activated: bool) -> Tensor:
    """Unreduced loss for per-element float targets; no validation.

    Written as composed torch ops so autograd supplies the gradient.
    """
    if activated:
        prob = pred
        # binary_cross_entropy clamps log at -100, as mmdet's activated focal loss.
        ce = F.binary_cross_entropy(prob, target, reduction='none')
    else:
        prob = torch.sigmoid(pred)
        ce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    one_minus_pt = prob * (1 - target) + (1 - prob) * target
    # The clamp keeps d/dq q^gamma finite at q = 0 for 0 < gamma < 1; it only
    # moves values below float32's smallest normal, where the loss is ~0.
    one_minus_pt = one_minus_pt.clamp_min(torch.finfo(torch.float32).tiny)
    poly = _polynomial(one_minus_pt, epsilons)
    if alpha >= 0:
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        inner = alpha_t * (ce + poly) if alpha_weighted_poly else alpha_t * ce + poly
    else:
        inner = ce + poly
    return one_minus_pt.pow(gamma) * inner if gamma != 0 else inner


def weight_reduce(loss: Tensor, weight: Optional[Tensor], reduction: str,
                  avg_factor: AvgFactor) -> Tensor:
    """Apply ``weight`` then reduce with mmdet's ``weight_reduce_loss`` rules.

    Unlike mmdet, a 'mean' over zero elements is 0 (with a gradient), not NaN.
    """
    if weight is not None:
        loss = loss * broadcast_weight(weight, loss).to(loss.dtype)
    if reduction == 'none':
        return loss
    return _scale_sum(loss.sum(), loss.numel(), reduction, avg_factor)


def _scale_sum(total: Tensor, numel: int, reduction: str, avg_factor: AvgFactor) -> Tensor:
    """'sum' or 'mean' (over ``numel``, or ``avg_factor + eps``) of a summed loss."""
    if reduction == 'sum':
        return total
    if avg_factor is not None:
        if isinstance(avg_factor, Tensor):  # (1,) or (1, 1) gives a scalar loss too
            avg_factor = avg_factor.reshape(())
        return total / (avg_factor + torch.finfo(torch.float32).eps)
    return total / numel if numel else total


def _polynomial(x: Tensor, coefficients: Sequence[float]) -> Tensor:
    """``sum_j coefficients[j-1] * x^j`` by Horner's rule."""
    acc = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * x + c
    return acc * x


def dense_target(labels: Tensor, pred: Tensor) -> Tensor:
    """One-hot (N, C) targets from class indices in [0, C]; C gives all zeros."""
    num_classes = pred.shape[1]
    return F.one_hot(labels.long(), num_classes + 1)[:, :num_classes].to(pred.dtype)


def broadcast_weight(weight: Tensor, loss: Tensor) -> Tensor:
    """``weight`` (validated by check_weight_shape) shaped to multiply ``loss``."""
    if weight.shape == loss.shape:
        return weight
    if is_per_sample_weight(weight, loss):
        return weight.reshape(loss.shape[0], *([1] * (loss.dim() - 1)))
    return weight.reshape(loss.shape)


def poly1_focal_loss(pred: Tensor,
                     target: Tensor,
                     weight: Optional[Tensor] = None,
                     *,
                     epsilon: float = 1.0,
                     **kwargs) -> Tensor:
    """Sigmoid Poly-1 focal loss: :func:`poly_focal_loss` with ``epsilons=(epsilon,)``.

    ``FL + epsilon * alpha_t * (1 - p_t)^(gamma + 1)``; see the module docstring.
    """
    epsilon = check_real('epsilon', epsilon)
    return poly_focal_loss(pred, target, weight, epsilons=(epsilon,), **kwargs)
