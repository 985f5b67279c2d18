r"""The Poly-N focal loss written out in composed torch ops (autograd gradient).

The reference every faster path is checked against, and the path for soft
targets, probabilities (``activated``) and float64. With logit ``x``, target
``t`` in [0, 1] and ``p = sigmoid(x)``::

    p_t     = t * p + (1 - t) * (1 - p)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)        (1 when alpha < 0)
    PolyN   = alpha_t * (1 - p_t)^gamma * BCE(x, t) + w * sum_j eps_j * (1 - p_t)^(gamma + j)

with ``w = alpha_t`` (``alpha_weighted_poly``) or 1. Nothing here validates.

Example::

    >>> import torch
    >>> from mmdet_polyloss.functional.common import PolyParams
    >>> params = PolyParams(epsilons=(0.0,), gamma=0.0, alpha=-1.0, alpha_weighted_poly=True)
    >>> x, t = torch.tensor([0.0]), torch.tensor([1.0])
    >>> poly_focal_elementwise(x, t, params, activated=False)  # BCE: log 2
    tensor([0.6931])
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import PolyParams, compute_dtype, dense_target


def polynomial(x: Tensor, coefficients: Sequence[float]) -> Tensor:
    """``sum_j coefficients[j-1] * x^j`` by Horner's rule (out of place: autograd)."""
    acc = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * x + c
    return acc * x


def poly_focal_elementwise(pred: Tensor, target: Tensor, params: PolyParams,
                           activated: bool) -> Tensor:
    """Unreduced loss for per-element targets in [0, 1] of ``pred``'s shape."""
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
    poly = polynomial(one_minus_pt, params.epsilons)
    if params.alpha >= 0:
        alpha = params.alpha
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        inner = alpha_t * (ce + poly) if params.alpha_weighted_poly else alpha_t * ce + poly
    else:
        inner = ce + poly
    gamma = params.gamma
    return one_minus_pt.pow(gamma) * inner if gamma != 0 else inner


def poly_focal_from_labels(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                           params: PolyParams) -> Tensor:
    """Weighted element-wise loss of logits (N, C) for class indices (N,) in [0, C],
    in ``pred``'s compute dtype; ``weight`` is None or broadcasts against (N, C)."""
    x = pred.to(compute_dtype(pred))
    loss = poly_focal_elementwise(x, dense_target(labels, x), params, activated=False)
    return loss if weight is None else loss * weight
