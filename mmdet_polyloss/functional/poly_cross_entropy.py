r"""Poly-1 cross-entropy, softmax and sigmoid, in plain PyTorch (no mmdet import).

Softmax, per sample with label ``y`` and class weight ``w_y`` (1 without
``class_weight``)::

    Poly1 = w_y * (-log p_y + epsilon * (1 - p_y))

and for soft (or label-smoothed) targets ``t`` over the classes
``sum_c w_c t_c (-log p_c + epsilon * (1 - p_c))``. The class weight
multiplies the epsilon term exactly as it multiplies CE, so
``epsilon = -1`` removes the leading term ``w_y (1 - p_y)`` of the expansion
``w_y * sum_j (1 - p_y)^j / j`` for every class, however uneven the weights.

Sigmoid, per element with target ``t`` and ``pos_weight`` ``c`` (mmdet
passes ``class_weight`` there)::

    Poly1 = -(c t log p + (1 - t) log(1 - p)) + epsilon * (c t (1 - p) + (1 - t) p)

each log term keeping its own leading polynomial term, as for softmax.
Ignored labels contribute 0. Reductions follow mmdet's ``CrossEntropyLoss``.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import (
    check_class_count,
    check_class_indices,
    check_cross_entropy_settings,
    check_labels_in_range,
    check_logits,
    check_reduction,
    check_soft_targets,
    check_tensor,
    check_weight_shape,
    label_values,
)
from .common import (
    AvgFactor,
    CrossEntropySettings,
    broadcast_weight,
    compute_dtype,
    dense_target,
    weight_reduce,
    zero_ignored,
)


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
                        allow_negative_loss: bool = False,
                        label_smoothing: float = 0.0) -> Tensor:
    """Softmax Poly-1 cross-entropy (see the module docstring).

    Args:
        pred: logits (N, C, *) over C classes (dim 1).
        label: class indices (N, *) in [0, C), or ``ignore_index``; or soft
            targets (N, C, *): a probability distribution over dim 1 (no
            entry is ignored: ``ignore_index`` and ``avg_non_ignore`` apply
            to indices only; drop a sample with ``weight`` 0).
        weight: per-sample weight, shape (N, *).
        epsilon: added to the coefficient of ``(1 - p_t)``; >= -1.
        class_weight: C non-negative weights, one per class.
        ignore_index: label to ignore (default -100).
        reduction, avg_factor: mmdet's rules.
        avg_non_ignore: with 'mean' and no ``avg_factor``, average over the
            non-ignored labels only.
        label_smoothing: ``s`` in [0, 1): targets ``t (1 - s) + s / C``. With
            soft or smoothed targets the loss is ``sum_c w_c t_c (-log p_c +
            epsilon (1 - p_c))``, without class weights ``CE + epsilon (1 - p_t)``
            with ``p_t = sum_c t_c p_c`` (the paper's listing; optax's
            ``poly_loss_cross_entropy``).

    Example::

        >>> import torch
        >>> logits, labels = torch.zeros(2, 4), torch.tensor([1, 3])
        >>> poly1_cross_entropy(logits, labels, epsilon=-1.0)  # log 4 - 3/4
        tensor(0.6363)
    """
    settings = check_cross_entropy_settings(epsilon, class_weight, ignore_index,
                                            avg_non_ignore, allow_negative_loss,
                                            label_smoothing)
    return softmax_poly1_with_settings(pred, label, weight, settings,
                                       reduction=check_reduction(reduction, avg_factor),
                                       avg_factor=avg_factor)


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

    Example::

        >>> import torch
        >>> logits, targets = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
        >>> poly1_binary_cross_entropy(logits, targets, epsilon=0.0)  # BCE: log 2
        tensor(0.6931)
    """
    settings = check_cross_entropy_settings(epsilon, class_weight, ignore_index,
                                            avg_non_ignore, allow_negative_loss)
    return sigmoid_poly1_with_settings(pred, label, weight, settings,
                                       reduction=check_reduction(reduction, avg_factor),
                                       avg_factor=avg_factor)


def softmax_poly1_with_settings(pred: Tensor, label: Tensor, weight: Optional[Tensor],
                                settings: CrossEntropySettings, *, reduction: str,
                                avg_factor: AvgFactor) -> Tensor:
    """:func:`poly1_cross_entropy` with settings (``checks.check_cross_entropy_settings``),
    ``reduction`` and ``avg_factor`` (``checks.check_reduction``) validated already:
    checks the tensors only."""
    check_logits(pred)
    check_tensor('label', label)
    soft = pred.dim() >= 2 and label.shape == pred.shape  # (check_soft_targets: its dtype)
    if pred.dim() < 2 or not (soft or label.shape == pred.shape[:1] + pred.shape[2:]):
        raise ValueError(
            f'label shape {tuple(label.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected logits (N, C, *) with class indices (N, *) or soft targets (N, C, *)')
    sample_shape = pred.shape[:1] + pred.shape[2:]
    num_classes, ignore_index = pred.shape[1], settings.ignore_index
    if soft:
        check_soft_targets(label, pred)
    else:
        label = check_class_indices(label, pred, 'label')
        check_labels_in_range(label, 0, num_classes - 1, ignore_index, 'class indices')
    class_weight = _class_weight_tensor(settings, num_classes, pred)
    if weight is not None and weight.shape != sample_shape:
        raise ValueError(f'weight shape {tuple(weight.shape)} does not match the samples '
                         f'{tuple(sample_shape)} of pred {tuple(pred.shape)}: expected one '
                         'weight per sample')

    valid = None if soft else label != ignore_index
    keep = valid if weight is None else (weight != 0 if soft else valid & (weight != 0))
    x = pred.to(compute_dtype(pred))
    if keep is not None:  # ignored rows read as 0: a NaN or inf there reaches nothing
        x = x.masked_fill(~keep.unsqueeze(1), 0)
    log_p = F.log_softmax(x, dim=1)
    if soft or settings.label_smoothing:
        if soft:
            target = label.to(x.dtype)
        else:  # ignored rows get any target: ``valid`` drops them
            target = dense_target(label.masked_fill(~valid, 0), x)
        loss = _poly1_soft(log_p, target, settings, class_weight)
    else:
        safe_label = label.masked_fill(~valid, 0).long()
        log_p_y = log_p.gather(1, safe_label.unsqueeze(1)).squeeze(1)
        # CE + epsilon * (1 - p_y)
        loss = _clamp_rounding(-log_p_y - settings.epsilon * torch.expm1(log_p_y), settings)
        if class_weight is not None:
            loss = loss * class_weight[safe_label]
    if valid is not None:
        loss = loss * valid
        if avg_factor is None and settings.avg_non_ignore and reduction == 'mean':
            avg_factor = valid.sum().item()
    return weight_reduce(loss, weight, reduction, avg_factor)


def _poly1_soft(log_p: Tensor, target: Tensor, settings: CrossEntropySettings,
                class_weight: Optional[Tensor]) -> Tensor:
    """``sum_c w_c t_c (-log p_c + epsilon (1 - p_c))`` over dim 1, after label
    smoothing ``t = t (1 - s) + s / C``; without class weights that is
    ``CE + epsilon * (1 - p_t)`` with ``p_t = sum_c t_c p_c``."""
    smoothing, num_classes = settings.label_smoothing, log_p.shape[1]
    if smoothing:
        target = target * (1 - smoothing) + smoothing / num_classes
    if class_weight is not None:
        target = target * class_weight.reshape(1, -1, *([1] * (log_p.dim() - 2)))
    one_minus_p = -torch.expm1(log_p)  # 1 - p_c, exact where p_c is near 1
    return _clamp_rounding((target * (settings.epsilon * one_minus_p - log_p)).sum(dim=1),
                           settings)


def sigmoid_poly1_with_settings(pred: Tensor, label: Tensor, weight: Optional[Tensor],
                                settings: CrossEntropySettings, *, reduction: str,
                                avg_factor: AvgFactor) -> Tensor:
    """:func:`poly1_binary_cross_entropy` with settings, ``reduction`` and
    ``avg_factor`` validated already: checks the tensors only."""
    check_logits(pred)
    check_tensor('label', label)
    x, ignore_index = pred.to(compute_dtype(pred)), settings.ignore_index
    if label.dim() == 1 and pred.dim() == 2 and label.shape[0] == pred.shape[0]:
        label = check_class_indices(label, pred, 'label')
        num_classes = pred.shape[1]
        check_labels_in_range(label, 0, num_classes, ignore_index, 'class indices')
        valid = (label != ignore_index).unsqueeze(1).expand_as(pred)
        # Ignored rows become background (all-zero targets); ``valid`` drops them.
        target = dense_target(torch.where(label == ignore_index, num_classes, label), x)
    elif label.shape == pred.shape:
        label = label_values('label', label)
        if not label.is_floating_point() and not (
                torch.iinfo(label.dtype).min <= ignore_index <= torch.iinfo(label.dtype).max):
            label = label.long()  # else the index wraps around in the targets' own dtype
        check_labels_in_range(label, 0, 1, ignore_index, 'targets')
        valid = label != ignore_index
        target = torch.where(valid, label, torch.zeros_like(label))
    else:
        raise ValueError(
            f'label shape {tuple(label.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected class indices (N,) for pred (N, C), or targets of the shape of pred')
    if weight is not None:
        check_weight_shape(weight, pred)
    pos_weight = _class_weight_tensor(settings, pred.shape[-1], pred)

    target = target.to(x.dtype)
    x = zero_ignored(x.masked_fill(~valid, 0), weight)  # ignored: read as 0 (NaN, inf)
    positive_part = target * torch.sigmoid(-x)  # t (1 - p): exact where p is near 1
    if pos_weight is not None:
        positive_part = positive_part * pos_weight
    loss = _clamp_rounding(
        F.binary_cross_entropy_with_logits(x, target, pos_weight=pos_weight, reduction='none')
        + settings.epsilon * (positive_part + (1 - target) * torch.sigmoid(x)), settings)
    valid = valid.to(x.dtype)
    weight = valid if weight is None else broadcast_weight(weight, pred).to(x.dtype) * valid
    if avg_factor is None and settings.avg_non_ignore and reduction == 'mean':
        avg_factor = valid.sum().item()
    return weight_reduce(loss, weight, reduction, avg_factor)


def _clamp_rounding(loss: Tensor, settings: CrossEntropySettings) -> Tensor:
    """``loss`` clamped at 0 where it is >= 0 exactly: for ``epsilon >= -1``, since
    ``-log p >= 1 - p``, a computed value below 0 can only be rounding."""
    return loss.clamp_min(0) if settings.epsilon >= -1 else loss


def _class_weight_tensor(settings: CrossEntropySettings, num_classes: int,
                         like: Tensor) -> Optional[Tensor]:
    """The class weights as a tensor beside ``like``, checked against its classes."""
    check_class_count(settings.class_weight, num_classes)
    if settings.class_weight is None:
        return None
    return torch.tensor(settings.class_weight, device=like.device, dtype=compute_dtype(like))
