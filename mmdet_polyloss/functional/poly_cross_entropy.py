r"""Poly-1 cross-entropy, softmax and sigmoid, in plain PyTorch (no mmdet import).

Softmax, per sample with label ``y`` and class weight ``w_y`` (1 without
``class_weight``)::

    Poly1 = w_y * (-log p_y + epsilon * (1 - p_y))

The class weight multiplies the epsilon term exactly as it multiplies CE, so
``epsilon = -1`` removes the leading term ``w_y (1 - p_y)`` of the expansion
``w_y * sum_j (1 - p_y)^j / j`` for every class, however uneven the weights.

Sigmoid, per element with target ``t`` and ``pos_weight`` ``c`` (mmdet
passes ``class_weight`` there)::

    Poly1 = -(c t log p + (1 - t) log(1 - p)) + epsilon * (c t (1 - p) + (1 - t) p)

each log term keeping its own leading polynomial term, as for softmax.
Ignored labels contribute 0. Reductions follow mmdet's ``CrossEntropyLoss``.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (check_class_indices, check_epsilons, check_real, check_reduction,
                     check_weight_shape)
from .fused import compute_dtype
from .poly_focal import AvgFactor, broadcast_weight, dense_target, weight_reduce

DEFAULT_IGNORE_INDEX = -100  # F.cross_entropy's default, as mmdet's


def poly1_cross_entropy(pred: Tensor,
                        label: Tensor,
                        weight: Optional[Tensor] = None,
                        *,
                        epsilon: float = 1.0,
                        class_weight: Optional[Sequence[float]] = None,
                        ignore_index: Optional[int] = None,
                        reduction: str = 'mean',
                        avg_factor: AvgFactor = None,
                        avg_non_ignore: bool = False,
                        allow_negative_loss: bool = False) -> Tensor:
    """Softmax Poly-1 cross-entropy (see the module docstring).

    Args:
        pred: logits (N, C, *) over C classes (dim 1).
        label: class indices (N, *) in [0, C), or ``ignore_index``.
        weight: per-sample weight of the shape of ``label``.
        epsilon: added to the coefficient of ``(1 - p_y)``; >= -1.
        class_weight: C non-negative weights, one per class.
        ignore_index: label to ignore (default -100).
        reduction, avg_factor: mmdet's rules.
        avg_non_ignore: with 'mean' and no ``avg_factor``, average over the
            non-ignored labels only.
    """
    epsilon, ignore_index = check_common_args(epsilon, reduction, avg_factor, ignore_index,
                                          allow_negative_loss)
    x = _upcast(pred)
    _check_label_tensor(label)
    if pred.dim() < 2 or label.shape != pred.shape[:1] + pred.shape[2:]:
        raise ValueError(
            f'label shape {tuple(label.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected logits (N, C, *) and class indices (N, *)')
    check_class_indices(label, pred, 'label')
    num_classes = pred.shape[1]
    _check_labels(label, 0, num_classes - 1, ignore_index, 'class indices')
    class_weight = _class_weight(class_weight, num_classes, pred)
    if weight is not None and weight.shape != label.shape:
        raise ValueError(f'weight shape {tuple(weight.shape)} does not match label shape '
                         f'{tuple(label.shape)}: expected one weight per sample')

    valid = label != ignore_index
    safe_label = torch.where(valid, label, torch.zeros_like(label)).long()
    log_p_y = F.log_softmax(x, dim=1).gather(1, safe_label.unsqueeze(1)).squeeze(1)
    loss = -log_p_y - epsilon * torch.expm1(log_p_y)  # CE + epsilon * (1 - p_y)
    if class_weight is not None:
        loss = loss * class_weight[safe_label]
    loss = loss * valid
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = valid.sum().item()
    return weight_reduce(loss, weight, reduction, avg_factor)


def poly1_binary_cross_entropy(pred: Tensor,
                               label: Tensor,
                               weight: Optional[Tensor] = None,
                               *,
                               epsilon: float = 1.0,
                               class_weight: Optional[Sequence[float]] = None,
                               ignore_index: Optional[int] = None,
                               reduction: str = 'mean',
                               avg_factor: AvgFactor = None,
                               avg_non_ignore: bool = False,
                               allow_negative_loss: bool = False) -> Tensor:
    """Sigmoid Poly-1 cross-entropy, mmdet's ``binary_cross_entropy`` contract.

    ``label`` is either class indices (N,) for ``pred`` (N, C), where C means
    background (all-zero targets, as RPN uses), or targets in [0, 1] of the
    shape of ``pred``. ``ignore_index`` elements get weight 0.
    ``class_weight`` (C,) weights the positive term, like BCE's pos_weight.
    """
    epsilon, ignore_index = check_common_args(epsilon, reduction, avg_factor, ignore_index,
                                          allow_negative_loss)
    x = _upcast(pred)
    _check_label_tensor(label)
    if label.dim() == 1 and pred.dim() == 2 and label.shape[0] == pred.shape[0]:
        check_class_indices(label, pred, 'label')
        num_classes = pred.shape[1]
        _check_labels(label, 0, num_classes, ignore_index, 'class indices')
        valid = (label != ignore_index).unsqueeze(1).expand_as(pred)
        # Ignored rows become background (all-zero targets); ``valid`` drops them.
        target = dense_target(torch.where(label == ignore_index, num_classes, label), x)
    elif label.shape == pred.shape:
        _check_labels(label, 0, 1, ignore_index, 'targets')
        valid = label != ignore_index
        target = torch.where(valid, label, torch.zeros_like(label))
    else:
        raise ValueError(
            f'label shape {tuple(label.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected class indices (N,) for pred (N, C), or targets of the shape of pred')
    if weight is not None:
        check_weight_shape(weight, pred)
    pos_weight = _class_weight(class_weight, pred.shape[-1], pred)

    target = target.to(x.dtype)
    prob = torch.sigmoid(x)
    positive_part = target * (1 - prob)
    if pos_weight is not None:
        positive_part = positive_part * pos_weight
    loss = (F.binary_cross_entropy_with_logits(x, target, pos_weight=pos_weight,
                                               reduction='none')
            + epsilon * (positive_part + (1 - target) * prob))
    valid = valid.to(x.dtype)
    weight = valid if weight is None else broadcast_weight(weight, pred).to(x.dtype) * valid
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = valid.sum().item()
    return weight_reduce(loss, weight, reduction, avg_factor)


def check_common_args(epsilon: float, reduction: str, avg_factor: AvgFactor,
                      ignore_index: Optional[int],
                      allow_negative_loss: bool) -> Tuple[float, int]:
    """Validate the arguments both Poly-1 CE forms share; return epsilon, ignore_index."""
    epsilon = check_real('epsilon', epsilon)
    check_epsilons((epsilon,), allow_negative_loss)
    check_reduction(reduction, avg_factor)
    if ignore_index is None:
        ignore_index = DEFAULT_IGNORE_INDEX
    elif isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f'ignore_index must be an int or None, got {ignore_index!r}')
    return epsilon, ignore_index


def _check_label_tensor(label: object) -> None:
    if not isinstance(label, Tensor):
        raise ValueError(f'label must be a tensor, got {type(label).__name__}')


def _check_labels(label: Tensor, low: float, high: float, ignore_index: int,
                  what: str) -> None:
    """Every label in [low, high] or equal to ``ignore_index``; one host sync."""
    bad = ~(((label >= low) & (label <= high)) | (label == ignore_index))
    if label.numel() and bad.any():
        value = label[bad].flatten()[0].item()
        raise ValueError(f'label {what} must be in [{low}, {high}] or ignore_index='
                         f'{ignore_index}, got {value!r}')


def check_class_weight(class_weight: Optional[Sequence[float]],
                       num_classes: Optional[int] = None) -> Optional[Tuple[float, ...]]:
    """Validate ``class_weight``: finite, non-negative, ``num_classes`` long if given."""
    if class_weight is None:
        return None
    try:
        values = tuple(float(v) for v in class_weight)
    except (TypeError, ValueError):
        values = ()
    if (not values or (num_classes is not None and len(values) != num_classes)
            or not all(math.isfinite(v) and v >= 0 for v in values)):
        count = 'one per class' if num_classes is None else f'{num_classes}'
        raise ValueError(f'class_weight must hold {count} finite non-negative weights, '
                         f'got {class_weight!r}')
    return values


def _class_weight(class_weight: Optional[Sequence[float]], num_classes: int,
                  like: Tensor) -> Optional[Tensor]:
    values = check_class_weight(class_weight, num_classes)
    if values is None:
        return None
    return torch.tensor(values, device=like.device, dtype=_upcast(like).dtype)


def _upcast(pred: Tensor) -> Tensor:
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        raise ValueError(f'pred must be a floating-point tensor, got '
                         f'{pred.dtype if isinstance(pred, Tensor) else type(pred).__name__}')
    return pred.to(compute_dtype(pred))
