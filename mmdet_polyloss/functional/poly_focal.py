r"""Poly-N focal loss in plain PyTorch (no mmdet import): the public API.

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

This module validates and dispatches: float64 logits go to the exact form
(:mod:`.reference`), other class-index targets to the fused analytic-gradient
path (:mod:`.fused`), everything else to the composed reference formula
(:mod:`.reference`). Tests and benchmarks force a path with the private
``_polyn_focal_loss_on_path``; the public functions have no such switch.

Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification
Loss Functions", ICLR 2022 (arXiv 2204.12511).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from .checks import (
    check_bool,
    check_choice,
    check_focal_inputs,
    check_label_index,
    check_poly1_params,
    check_poly_params,
    check_reduction,
)
from .common import (
    AvgFactor,
    PolyParams,
    broadcast_weight,
    compute_dtype,
    dense_target,
    is_per_sample_weight,
    scale_sum,
    weight_reduce,
    zero_ignored,
)
from .fused import PolyFocalFusedFunction
from .reference import poly_focal_elementwise, poly_focal_exact


def polyn_focal_loss(pred: Tensor,
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
                     ignore_index: Optional[int] = None) -> Tensor:
    r"""Sigmoid Poly-N focal loss (see the module docstring for the formula).

    The path follows the inputs: float64 logits take the exact form of
    :mod:`.reference` (full relative precision); other class-index targets with
    logits and a weight that needs no gradient the fused analytic-gradient path
    (:mod:`.fused`); the rest the composed formula.

    Args:
        pred: logits (or probabilities if ``activated``), shape (N, C) or a
            dense map (N, C, *), or any shape when ``target`` has the same shape.
        target: class indices (N,) or (N, *) in [0, C] where C means
            background, or per-element targets in [0, 1] of ``pred``'s shape.
        weight: element-wise weight of the shape of ``pred``, one per sample
            (N,), or for class indices one per location (the shape of ``target``).
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
            the epsilon terms; see ``checks.check_epsilon_bounds``).
        ignore_index: a class-index label whose elements get loss and gradient 0
            on every class; 'mean' without ``avg_factor`` then averages over the
            other elements. None (the default): no label is ignored.

    Returns:
        The loss, in float32 for half-precision ``pred`` (float64 stays
        float64); element-wise of the shape of ``pred`` for 'none'.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
        >>> labels = torch.tensor([0, 2])  # class 0; background
        >>> polyn_focal_loss(logits, labels, epsilons=(-1.0, 0.5), reduction='sum')
        tensor(0.1629)
    """
    params = check_poly_params(epsilons, gamma, alpha, alpha_weighted_poly,
                               allow_negative_loss)
    return _checked_call(pred, target, weight, params, activated, reduction, avg_factor,
                         ignore_index)


def poly1_focal_loss(pred: Tensor,
                     target: Tensor,
                     weight: Optional[Tensor] = None,
                     *,
                     epsilon: float = 1.0,
                     gamma: float = 2.0,
                     alpha: float = 0.25,
                     alpha_weighted_poly: bool = True,
                     activated: bool = False,
                     reduction: str = 'mean',
                     avg_factor: AvgFactor = None,
                     allow_negative_loss: bool = False,
                     ignore_index: Optional[int] = None) -> Tensor:
    """Sigmoid Poly-1 focal loss: :func:`polyn_focal_loss` with ``epsilons=(epsilon,)``.

    ``FL + epsilon * alpha_t * (1 - p_t)^(gamma + 1)``; see the module docstring.
    ``epsilon`` >= -1 (``-min(alpha, 1 - alpha)`` with ``alpha_weighted_poly=False``)
    unless ``allow_negative_loss``; the other arguments are :func:`polyn_focal_loss`'s.

    Example::

        >>> import torch
        >>> logits, labels = torch.zeros(1, 3), torch.tensor([1])
        >>> # focal loss: (1/2)^2 log 2 * (alpha + 2 (1 - alpha)), alpha = 0.25
        >>> poly1_focal_loss(logits, labels, epsilon=0.0, reduction='sum')
        tensor(0.3033)
    """
    params = check_poly1_params(epsilon, gamma, alpha, alpha_weighted_poly,
                                allow_negative_loss)
    return _checked_call(pred, target, weight, params, activated, reduction, avg_factor,
                         ignore_index)


def _checked_call(pred: Tensor, target: Tensor, weight: Optional[Tensor], params: PolyParams,
                  activated: object, reduction: object, avg_factor: AvgFactor,
                  ignore_index: object, path: str = 'auto') -> Tensor:
    """A functional call: its options validated (``params`` are already), then the loss."""
    return poly_focal_with_params(
        pred, target, weight, params, activated=check_bool('activated', activated),
        reduction=check_reduction(reduction, avg_factor), avg_factor=avg_factor,
        ignore_index=None if ignore_index is None else
        check_label_index('ignore_index', ignore_index),
        path=path)


def poly_focal_with_params(pred: Tensor, target: Tensor, weight: Optional[Tensor],
                           params: PolyParams, *, activated: bool, reduction: str,
                           avg_factor: AvgFactor, ignore_index: Optional[int] = None,
                           path: str = 'auto') -> Tensor:
    """:func:`polyn_focal_loss` with every argument but the tensors validated
    already (``params`` by :func:`.checks.check_poly_params`, ``reduction`` with
    ``avg_factor`` by :func:`.checks.check_reduction`; the modules validate their
    settings once): checks the tensors, then dispatches. Class-index maps
    (N, C, *) are computed as (N * prod(*), C) rows; ``ignore_index`` labels count
    as background with weight 0, and 'mean' without ``avg_factor`` then averages
    over the elements not ignored. ``path`` other than 'auto' is for tests and
    benchmarks (see :func:`_polyn_focal_loss_on_path`)."""
    is_index, target = check_focal_inputs(pred, target, weight, activated, ignore_index)
    if not is_index:
        return _dispatch(pred, target, weight, params, activated, reduction, avg_factor,
                         path, is_index=False)
    rows, labels, row_weight = (pred, target, weight) if pred.dim() == 2 else \
        _as_rows(pred, target, weight)
    if ignore_index is None:
        loss = _dispatch(rows, labels, row_weight, params, activated, reduction, avg_factor,
                         path, is_index=True)
    else:
        valid = labels != ignore_index
        labels = labels.masked_fill(~valid, rows.shape[1])
        mask = valid.to(compute_dtype(rows))
        row_weight = mask if row_weight is None else \
            broadcast_weight(row_weight, rows) * mask.unsqueeze(1)
        average = reduction == 'mean' and avg_factor is None
        loss = _dispatch(rows, labels, row_weight, params, activated,
                         'sum' if average else reduction, avg_factor, path, is_index=True)
        if average:  # over the elements not ignored (0 when all are)
            loss = loss / (valid.sum() * rows.shape[1]).clamp_min(1)
    if reduction == 'none' and pred.dim() != 2:
        loss = loss.reshape(*pred.shape[:1], *pred.shape[2:], pred.shape[1]).movedim(-1, 1)
    return loss


#: The paths :func:`_polyn_focal_loss_on_path` can force; 'auto' chooses by the inputs.
PATHS = ('auto', 'fused', 'reference')


def _polyn_focal_loss_on_path(path: str, pred: Tensor, target: Tensor,
                              weight: Optional[Tensor] = None, *,
                              epsilons: Sequence[float] = (1.0,), gamma: float = 2.0,
                              alpha: float = 0.25, alpha_weighted_poly: bool = True,
                              activated: bool = False, reduction: str = 'mean',
                              avg_factor: AvgFactor = None, allow_negative_loss: bool = False,
                              ignore_index: Optional[int] = None) -> Tensor:
    """For tests and benchmarks: :func:`polyn_focal_loss` (the same keyword arguments)
    on the path ``path`` names.

    'fused': the fused analytic-gradient path (:mod:`.fused`), for class-index
    targets with logits and a weight that needs no gradient; 'reference': the
    composed formula through autograd (:func:`.reference.poly_focal_elementwise`),
    also for float64, where 'auto' takes the more exact
    :func:`.reference.poly_focal_exact`; 'auto': as :func:`polyn_focal_loss`.
    """
    params = check_poly_params(epsilons, gamma, alpha, alpha_weighted_poly,
                               allow_negative_loss)
    return _checked_call(pred, target, weight, params, activated, reduction, avg_factor,
                         ignore_index, path=check_choice('path', path, PATHS))


def _as_rows(pred: Tensor, labels: Tensor, weight: Optional[Tensor]):
    """(N, C, *) logits, (N, *) labels and a weight in any accepted shape, as
    (M, C) rows, (M,) labels and a weight of (M, C) or (M,)."""
    num_classes = pred.shape[1]
    rows = pred.movedim(1, -1).reshape(-1, num_classes)
    if weight is None or weight.shape == labels.shape:
        row_weight = weight if weight is None else weight.reshape(-1)
    elif is_per_sample_weight(weight, pred):
        row_weight = weight.reshape(-1, *([1] * (labels.dim() - 1))).expand(labels.shape)
        row_weight = row_weight.reshape(-1)
    else:  # the shape of pred, or pred flattened
        row_weight = weight.reshape(pred.shape).movedim(1, -1).reshape(-1, num_classes)
    return rows, labels.reshape(-1), row_weight


def _dispatch(pred: Tensor, target: Tensor, weight: Optional[Tensor], params: PolyParams,
              activated: bool, reduction: str, avg_factor: AvgFactor, path: str,
              is_index: bool) -> Tensor:
    """The checked call on its path (see :func:`polyn_focal_loss`): fused, exact
    (float64) or the reference formula; ``path`` forces one (see :data:`PATHS`)."""
    dtype = compute_dtype(pred)
    fusable = is_index and not activated and (weight is None or not weight.requires_grad)
    if path == 'fused' and not fusable:
        raise ValueError("path='fused' needs class-index targets, logits "
                         '(activated=False) and a weight that needs no gradient')
    if path == 'auto':
        if dtype == torch.float64 and not activated:
            path = 'exact'
        else:
            path = 'fused' if fusable else 'reference'
    if path == 'fused':
        if weight is not None:
            weight = broadcast_weight(weight, pred).to(dtype)
        loss = PolyFocalFusedFunction.apply(pred, target, weight, params,
                                            reduction != 'none', torch.is_grad_enabled())
        if reduction == 'none':
            return loss
        return scale_sum(loss, pred.numel(), reduction, avg_factor)

    pred = zero_ignored(pred.to(dtype), weight)  # weight 0: ignored, whatever the logit
    target = dense_target(target, pred) if is_index else target.to(dtype)
    if path == 'exact':
        loss = poly_focal_exact(pred, target, params)
    else:
        loss = poly_focal_elementwise(pred, target, params, activated)
    return weight_reduce(loss, weight, reduction, avg_factor)
