"""Argument and input validation shared by the losses.

Every check raises ``ValueError`` naming the argument and the value it got,
so that a bad config or a mismatched head fails at the call with a message a
user can act on, not deep inside torch.
"""
import math
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str, avg_factor: Optional[Union[float, Tensor]],
                    name: str = 'reduction') -> None:
    """Validate ``reduction`` and its combination with ``avg_factor``.

    mmdet's rules: ``avg_factor`` divides the sum in ``'mean'``, is ignored by
    ``'none'``, and is an error with ``'sum'``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f'{name} must be one of {REDUCTIONS}, got {reduction!r}')
    check_avg_factor(avg_factor)
    if reduction == 'sum' and avg_factor is not None:
        raise ValueError(
            f"avg_factor={_short(avg_factor)} cannot be used with {name}='sum'; "
            "use reduction='mean' to divide the sum by avg_factor")


def check_avg_factor(avg_factor: object) -> None:
    """``avg_factor``: None, a finite number >= 0, or a one-element real tensor.

    A tensor's value is not checked: that would cost a host sync (mmdet heads
    pass tensors that are already reduced across GPUs).
    """
    if avg_factor is None:
        return
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() == 1 and not avg_factor.is_complex() \
                and avg_factor.dtype != torch.bool:
            return
    elif isinstance(avg_factor, Real) and not isinstance(avg_factor, bool) \
            and math.isfinite(avg_factor) and avg_factor >= 0:
        return
    raise ValueError('avg_factor must be None, a finite number >= 0 or a one-element '
                     f'tensor, got {_describe_value(avg_factor)}')


def check_real(name: str, value: object, *, minimum: Optional[float] = None,
               maximum: Optional[float] = None) -> float:
    """Return ``value`` as a finite float inside [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value!r}')
    if maximum is not None and value > maximum:
        raise ValueError(f'{name} must be <= {maximum}, got {value!r}')
    return float(value)


def check_focal_params(gamma: float, alpha: float) -> Tuple[float, float]:
    """Validate the focal parameters: ``gamma >= 0``; ``alpha <= 1``.

    A negative ``alpha`` turns the class-balance weighting off (alpha_t = 1).
    """
    gamma = check_real('gamma', gamma, minimum=0.0)
    alpha = check_real('alpha', alpha)
    if alpha > 1:
        raise ValueError(
            f'alpha must be in [0, 1] (or negative to disable alpha weighting), got {alpha!r}')
    return gamma, alpha


def check_epsilons(epsilons: Sequence[float], allow_negative_loss: bool,
                   name: str = 'epsilons', alpha: float = -1.0,
                   alpha_weighted_poly: bool = True) -> Tuple[float, ...]:
    """Validate the Poly-N coefficients.

    Focal loss is ``alpha_t * sum_j (1 - p_t)^(gamma + j) / j``; Poly-N adds
    ``w * epsilons[j-1]`` to the coefficient of ``(1 - p_t)^(gamma + j)``, with
    ``w = alpha_t`` (``alpha_weighted_poly``, or no alpha weighting at all,
    ``alpha < 0``: then every bound is ``-1/j``; cross-entropy is this case) or
    ``w = 1`` (then ``-min(alpha, 1 - alpha)/j``). While every coefficient stays
    >= 0 the loss is >= 0 and minimal at the target. Below, it is negative for
    confident correct predictions and its gradient pushes them away from the
    target, so that needs an explicit ``allow_negative_loss=True``.
    """
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence) \
            or len(epsilons) == 0:
        raise ValueError(f'{name} must be a non-empty sequence of numbers, got {epsilons!r}')
    values = tuple(check_real(f'{name}[{j}]', e) for j, e in enumerate(epsilons))
    if allow_negative_loss:
        return values
    weighted = alpha_weighted_poly or alpha < 0
    scale = 1.0 if weighted else min(alpha, 1.0 - alpha)
    for j, eps in enumerate(values, start=1):
        if eps < -scale / j:
            label = 'epsilon' if len(values) == 1 else f'{name}[{j - 1}]'
            if weighted:
                bound = '-1' if j == 1 else f'-1/{j}'
            else:
                bound = (f'{-scale / j + 0.0:g} (with alpha_weighted_poly=False the bound is '
                         f'-min(alpha, 1 - alpha)/{j}, alpha={alpha!r})')
            raise ValueError(
                f'{label}={eps!r} is below {bound}: the loss then goes negative for '
                'confident correct predictions and its gradient pushes them away '
                'from the target. Pass allow_negative_loss=True to use it anyway.')
    return values


def check_inputs(pred: Tensor, target: Tensor, weight: Optional[Tensor],
                 activated: bool) -> bool:
    """Validate pred/target/weight; return True when ``target`` holds class indices.

    Accepted forms (mmdet's ``FocalLoss`` contract):
      * ``pred`` (N, C) with integer ``target`` (N,) in [0, C]; C is background;
      * ``pred`` of any shape with a ``target`` of the same shape holding
        per-element targets in [0, 1] (one-hot or soft scores).
    ``weight``: the shape of ``pred``, or (N,) per sample, or ``pred``
    flattened. Costs one host sync for the value checks.
    """
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        raise ValueError(f'pred must be a floating-point tensor, got {_describe(pred)}')
    if not isinstance(target, Tensor):
        raise ValueError(f'target must be a tensor, got {type(target).__name__}')
    if target.shape == pred.shape:
        is_index = False
    elif target.dim() == 1 and pred.dim() == 2 and target.shape[0] == pred.shape[0]:
        check_class_indices(target, pred, 'target')
        is_index = True
    else:
        raise ValueError(
            f'target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected class indices of shape (N,) for pred (N, C), or per-element targets '
            'of the same shape as pred')
    if weight is not None:
        check_weight_shape(weight, pred)

    # One host sync for all value checks: the ranges (min, max) of the
    # checked tensors come back together. NaN fails every comparison below.
    checked = [target.to(torch.uint8) if target.dtype == torch.bool else target]
    checked += [pred] if activated else []
    if target.numel() == 0:
        flags = [False] * len(checked)
    else:
        extremes = [torch.stack(torch.aminmax(t)) for t in checked]
        if len(extremes) > 1:
            values = torch.cat([e.double() for e in extremes]).tolist()
        else:  # the usual case: aminmax + stack, two small kernels
            values = extremes[0].tolist()
        upper = pred.shape[1] if is_index else 1
        flags = [not (values[0] >= 0 and values[1] <= upper)]
        if activated:
            flags.append(not (values[2] >= 0 and values[3] <= 1))
    if flags[0]:
        if is_index:
            bad = target[(target < 0) | (target > pred.shape[1])]
            raise ValueError(
                f'target labels must be in [0, {pred.shape[1]}] (num_classes={pred.shape[1]} '
                f'is background), got {_first(bad)}')
        bad = target[~((target >= 0) & (target <= 1))]
        raise ValueError(f'target values must be in [0, 1], got {_first(bad)}')
    if activated and flags[1]:
        bad = pred[~((pred >= 0) & (pred <= 1))]
        raise ValueError(
            f'pred must hold probabilities in [0, 1] when activated=True, got {_first(bad)}')
    return is_index


def check_class_indices(labels: Tensor, pred: Tensor, name: str) -> None:
    """Class-index ``labels`` must be integers (a float or bool label would be
    truncated silently) and ``pred`` (N, C, ...) must have at least one class."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f'{name} of shape {tuple(labels.shape)} for pred of shape {tuple(pred.shape)} '
            f'must hold integer class indices, got dtype {labels.dtype}')
    if pred.shape[1] == 0:
        raise ValueError(f'pred of shape {tuple(pred.shape)} has no classes (dim 1 is 0)')


def check_weight_shape(weight: Tensor, pred: Tensor) -> None:
    """``weight`` must broadcast as mmdet's focal loss does (see check_inputs)."""
    if not isinstance(weight, Tensor):
        raise ValueError(f'weight must be a tensor or None, got {type(weight).__name__}')
    ok = (weight.shape == pred.shape or is_per_sample_weight(weight, pred)
          or (weight.dim() == 1 and weight.numel() == pred.numel()))
    if not ok:
        raise ValueError(
            f'weight shape {tuple(weight.shape)} does not fit pred shape {tuple(pred.shape)}: '
            'expected the shape of pred, (N,) with one weight per sample, or pred flattened')


def is_per_sample_weight(weight: Tensor, pred: Tensor) -> bool:
    """True for one weight per sample: shape (N,) or (N, 1) for pred (N, ...)."""
    return (weight.dim() >= 1 and pred.dim() >= 1 and weight.shape[0] == pred.shape[0]
            and weight.numel() == pred.shape[0] and weight.shape != pred.shape)


def _first(values: Tensor) -> str:
    return f'{values.flatten()[0].item()!r} ({values.numel()} bad value(s))'


def _short(value: object) -> str:
    if isinstance(value, Tensor):
        return repr(value.item()) if value.numel() == 1 else f'tensor of shape {tuple(value.shape)}'
    return repr(value)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f'tensor of dtype {value.dtype}'
    return type(value).__name__


def _describe_value(value: object) -> str:
    if isinstance(value, Tensor):
        return f'a tensor of shape {tuple(value.shape)} and dtype {value.dtype}'
    return repr(value)
