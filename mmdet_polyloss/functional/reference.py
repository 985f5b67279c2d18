r"""The Poly-N focal loss written out in composed torch ops (autograd gradient).

The reference every faster path is checked against, and the path for soft
targets, probabilities (``activated``) and float64. With logit ``x``, target
``t`` in [0, 1] and ``p = sigmoid(x)``::

    p_t     = t * p + (1 - t) * (1 - p)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)        (1 when alpha < 0)
    PolyN   = alpha_t * (1 - p_t)^gamma * BCE(x, t) + w * sum_j eps_j * (1 - p_t)^(gamma + j)

with ``w = alpha_t`` (``alpha_weighted_poly``) or 1. Nothing here validates.

Two forms. :func:`poly_focal_elementwise` computes the terms as written, in
float32 (or float64) ops: accurate in absolute terms. :func:`poly_focal_exact`
is for float64 logits and keeps *relative* precision down to the smallest
losses: at epsilon -1 the loss of a confident element is a difference of nearly
equal numbers, ``CE - q`` with ``q = 1 - p_t``, so for hard targets it uses
``CE = sum_j q^j / j``::

    alpha_t * CE + w * P(q) = alpha_t * R_N(q) + sum_{j<=N} (alpha_t / j + w * eps_j) q^j

with the tail ``R_N(q) = sum_{j>N} q^j / j`` summed as a series for ``q <= 1/2``
(and as ``CE - sum_{j<=N} q^j / j`` above, where nothing cancels). Every term
is then >= 0 when the coefficients are, and ``q``, ``CE`` come from the logits
directly (``sigmoid(-z)``, ``log(1 + e^-z)``), never as ``1 - p``.

The two building blocks are defined here: :func:`horner` (every polynomial in
``q``) and :func:`softplus` (``CE = softplus(-z)``). The hard-target terms are
written three times, and the three must agree: here in composed ops, in
:mod:`.fused` (the same :func:`horner`, in place, and a faster softplus) and in
:mod:`.triton_kernels` (``_terms``: Horner unrolled, softplus through
``log1p``). tests/functional/test_forms_agree.py compares the three.

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

from .common import PolyParams, compute_dtype, dense_target, zero_ignored


def horner(x: Tensor, coefficients: Sequence, *, in_place: bool = False) -> Tensor:
    """``sum_k coefficients[k] * x^k`` (k from 0) by Horner's rule:
    ``acc = c[-1]``, then ``acc = acc * x + c`` down to ``c[0]``.

    Out of place (autograd; a coefficient may be a tensor, one per element), or
    with ``in_place`` in one new buffer (numbers only, no autograd through it:
    the fused path's eager ops). ``triton_kernels._terms`` unrolls the same steps.
    """
    acc = torch.full_like(x, coefficients[-1]) if in_place else \
        torch.zeros_like(x) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        acc = acc.mul_(x).add_(c) if in_place else acc * x + c
    return acc


def polynomial(x: Tensor, coefficients: Sequence, *, in_place: bool = False) -> Tensor:
    """``sum_j coefficients[j-1] * x^j`` (j from 1): ``x * horner(x, coefficients)``."""
    acc = horner(x, coefficients, in_place=in_place)
    return acc.mul_(x) if in_place else acc * x


def poly_focal_elementwise(pred: Tensor, target: Tensor, params: PolyParams,
                           activated: bool) -> Tensor:
    """Unreduced loss for per-element targets in [0, 1] of ``pred``'s shape."""
    if activated:
        prob = pred
        # binary_cross_entropy clamps log at -100, as mmdet's activated focal loss.
        ce = F.binary_cross_entropy(prob, target, reduction='none')
        one_minus_pt = prob * (1 - target) + (1 - prob) * target
    else:
        ce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
        one_minus_pt = _one_minus_pt(pred, target)
    # The clamp keeps d/dq q^gamma finite at q = 0 for 0 < gamma < 1; it only
    # moves values below float32's smallest normal, where the loss is ~0.
    one_minus_pt = one_minus_pt.clamp_min(torch.finfo(torch.float32).tiny)
    poly = polynomial(one_minus_pt, params.epsilons)
    alpha_t = _alpha_t(target, params)
    if alpha_t is None:
        inner = ce + poly
    else:
        inner = alpha_t * (ce + poly) if params.alpha_weighted_poly else alpha_t * ce + poly
    return _focal_factor(one_minus_pt, _clamp_rounding(inner, params), params.gamma)


def poly_focal_exact(pred: Tensor, target: Tensor, params: PolyParams) -> Tensor:
    """:func:`poly_focal_elementwise` for logits, keeping relative precision (see
    the module docstring); meant for float64, where it is the 'auto' path."""
    q = _one_minus_pt(pred, target)
    ce = target * softplus(-pred) + (1 - target) * softplus(pred)
    alpha_t = _alpha_t(target, params)
    weight = 1.0 if alpha_t is None else alpha_t
    poly_weight = weight if params.alpha_weighted_poly else 1.0
    direct = weight * ce + poly_weight * polynomial(q, params.epsilons)
    # Hard targets: CE = -log(1 - q) = sum_j q^j / j, regrouped with P(q).
    order = len(params.epsilons)
    coefficients = [weight / j + poly_weight * eps
                    for j, eps in enumerate(params.epsilons, start=1)]
    regrouped = weight * series_tail(q, ce, order) + polynomial(q, coefficients)
    inner = torch.where((target == 0) | (target == 1), regrouped, direct)
    return _focal_factor(q.clamp_min(torch.finfo(torch.float32).tiny),
                         _clamp_rounding(inner, params), params.gamma)


#: Terms of the series for ``R_N(q)``: q^K <= 2^-57 < 1e-17 relative at q = 1/2.
_TAIL_TERMS = 57
_TAIL_SERIES_BELOW = 0.5


def series_tail(q: Tensor, ce: Tensor, order: int) -> Tensor:
    """``R_N(q) = -log(1 - q) - sum_{j<=N} q^j / j = sum_{j>N} q^j / j`` (N = ``order``):
    a series for ``q <= 1/2``, else ``ce - sum_{j<=N} q^j / j`` (``ce = -log(1 - q)``,
    computed from the logits), where the difference loses nothing."""
    small = q.clamp_max(_TAIL_SERIES_BELOW)
    series = polynomial(small, [1.0 / (order + 1 + k) for k in range(_TAIL_TERMS)])
    series = series * small.pow(order)  # polynomial's terms start at q^1
    partial = polynomial(q, [1.0 / j for j in range(1, order + 1)])
    return torch.where(q <= _TAIL_SERIES_BELOW, series, ce - partial)


def softplus(x: Tensor) -> Tensor:
    """``softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)``, the definition
    the other forms (``fused._softplus``, ``triton_kernels._terms``) follow; here
    with full relative precision in both tails (F.softplus returns ``x`` above
    20 and so drops up to e^-20 relative)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _one_minus_pt(logits: Tensor, target: Tensor) -> Tensor:
    """``1 - p_t = t * sigmoid(-x) + (1 - t) * sigmoid(x)``: for a hard target
    one sigmoid of the logit, never ``1 - p`` (which loses a small ``1 - p``)."""
    return target * torch.sigmoid(-logits) + (1 - target) * torch.sigmoid(logits)


def _alpha_t(target: Tensor, params: PolyParams) -> Optional[Tensor]:
    """``alpha * t + (1 - alpha) * (1 - t)``, or None without alpha weighting."""
    if params.alpha < 0:
        return None
    return params.alpha * target + (1 - params.alpha) * (1 - target)


def _clamp_rounding(inner: Tensor, params: PolyParams) -> Tensor:
    """``inner`` >= 0 when the loss is (``params.non_negative``): below 0 is rounding."""
    return inner.clamp_min(0) if params.non_negative else inner


def _focal_factor(one_minus_pt: Tensor, inner: Tensor, gamma: float) -> Tensor:
    return one_minus_pt.pow(gamma) * inner if gamma != 0 else inner


def poly_focal_from_labels(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                           params: PolyParams) -> Tensor:
    """Weighted element-wise loss of logits (N, C) for class indices (N,) in [0, C],
    in ``pred``'s compute dtype; ``weight`` is None or broadcasts against (N, C)."""
    x = zero_ignored(pred.to(compute_dtype(pred)), weight)
    loss = poly_focal_elementwise(x, dense_target(labels, x), params, activated=False)
    return loss if weight is None else loss * weight
