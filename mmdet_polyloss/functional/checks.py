"""Every argument and input check of the losses, in one place.

A wrong type raises ``TypeError``, a wrong value ``ValueError``; both name the
argument, the value it got and, where there is one, the mathematical reason,
so that a bad config or a mismatched head fails at the call with a message a
user can act on, not deep inside torch.

Value checks of tensors (labels in range, targets in [0, 1], probabilities
for ``activated``) need the values on the host: one sync with the device per
call. :func:`set_value_checks` (or ``POLYLOSS_VALUE_CHECKS=0`` in the
environment) turns them off; shapes, dtypes and hyper-parameters are always
checked, since that costs no sync. docs/benchmarks.md gives the measured cost.
With them off, bad values are the caller's responsibility: a focal class label
outside [0, C] counts as background (as in mmcv's CUDA kernel), a target
outside [0, 1] is used as it is.
"""
import json
import math
import os
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .common import AvgFactor, CrossEntropySettings, PolyParams, is_per_sample_weight

REDUCTIONS = ('none', 'mean', 'sum')
#: ``F.cross_entropy``'s default, as mmdet's.
DEFAULT_IGNORE_INDEX = -100

_value_checks = os.environ.get('POLYLOSS_VALUE_CHECKS', '1') != '0'


def set_value_checks(enabled: bool) -> bool:
    """Turn the tensor value checks (one host sync per call) on or off, for the
    whole process; returns the previous setting. On by default."""
    global _value_checks
    previous, _value_checks = _value_checks, check_bool('enabled', enabled)
    return previous


def value_checks_enabled() -> bool:
    """True while the tensor value checks run (see :func:`set_value_checks`)."""
    return _value_checks


# ----------------------------------------------------------------- scalars


def check_bool(name: str, value: object) -> bool:
    """``value`` must be a bool (or numpy bool): a string such as 'False' is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f'{name} must be a bool, got {value!r} of type {type(value).__name__}')


#: The largest magnitude a setting may have: the losses compute in float32 (or
#: float64), and a number float32 cannot hold would overflow at the first call.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_real(name: str, value: object, *, minimum: Optional[float] = None,
               maximum: Optional[float] = None, largest: float = FLOAT32_MAX) -> float:
    """Return ``value`` as a finite float inside [minimum, maximum] whose
    magnitude is at most ``largest`` (by default what float32 can hold)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(
            f'{name} must be a real number, got {value!r} of type {type(value).__name__}')
    if not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    if abs(value) > largest:
        raise ValueError(f'{name}={value!r} is too large: the loss computes in float32, '
                         f'so its magnitude must be at most {largest:.8g}')
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value!r}')
    if maximum is not None and value > maximum:
        raise ValueError(f'{name} must be <= {maximum}, got {value!r}')
    return float(value)


def check_int(name: str, value: object, what: str = 'an int') -> int:
    """``value`` must be an integer (a bool or float is refused); ``what`` says
    what the message asks for."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'{name} must be {what}, got {value!r} of type {type(value).__name__}')
    return int(value)


def check_label_index(name: str, value: object, what: str = 'an int') -> int:
    """An int that int64 labels can be compared with (``ignore_index``)."""
    value = check_int(name, value, what)
    if not -2**63 <= value < 2**63:
        raise ValueError(f'{name} must fit in int64 (the labels\' dtype), got {value!r}')
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of the strings ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f'{name} must be one of {tuple(choices)}, got {value!r} of type '
                        f'{type(value).__name__}')
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
    return value


def check_reduction(reduction: object, avg_factor: AvgFactor,
                    name: str = 'reduction') -> str:
    """Validate ``reduction`` (called ``name`` in errors) and ``avg_factor``, and
    their combination.

    mmdet's rules: ``avg_factor`` divides the sum in ``'mean'``, is ignored by
    ``'none'``, and is an error with ``'sum'``.
    """
    reduction = check_choice(name, reduction, REDUCTIONS)
    _check_avg_factor_fits(reduction, avg_factor, name)
    return reduction


def check_module_reduction(reduction: str, reduction_override: object,
                           avg_factor: AvgFactor) -> str:
    """The reduction of a loss module's call: ``reduction_override`` if given
    (validated here), else the module's ``reduction`` (validated in its
    ``__init__``); either checked with ``avg_factor`` as :func:`check_reduction`,
    the errors naming the argument the reduction came from."""
    if reduction_override is not None:
        return check_reduction(reduction_override, avg_factor, name='reduction_override')
    _check_avg_factor_fits(reduction, avg_factor, 'reduction')
    return reduction


def _check_avg_factor_fits(reduction: str, avg_factor: AvgFactor, name: str) -> None:
    """``avg_factor`` valid, and not given with 'sum' (``name`` holds the reduction)."""
    check_avg_factor(avg_factor)
    if reduction == 'sum' and avg_factor is not None:
        raise ValueError(
            f"avg_factor={_brief(avg_factor)} cannot be used with {name}='sum'; "
            "use reduction='mean' to divide the sum by avg_factor")


def check_avg_factor(avg_factor: object) -> None:
    """``avg_factor``: None, a finite number >= 0, or a one-element real tensor.

    A tensor's value is not checked: that would cost a host sync (mmdet heads
    pass tensors that are already reduced across GPUs).
    """
    if avg_factor is None:
        return
    expected = 'avg_factor must be None, a finite number >= 0 or a one-element tensor'
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() == 1 and not avg_factor.is_complex() \
                and avg_factor.dtype != torch.bool:
            return
    elif isinstance(avg_factor, (bool, np.bool_)) or not isinstance(avg_factor, Real):
        raise TypeError(f'{expected}, got {avg_factor!r} of type {type(avg_factor).__name__}')
    elif math.isfinite(avg_factor) and avg_factor >= 0:
        return
    raise ValueError(f'{expected}, got {_describe_value(avg_factor)}')


# ----------------------------------------------------- focal hyper-parameters


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


def check_epsilons(epsilons: object) -> Tuple[float, ...]:
    """Poly-N's ``epsilons``: a non-empty sequence of finite numbers, as floats.
    (Their bound: :func:`check_epsilon_bounds`.)"""
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence):
        raise TypeError(f'epsilons must be a non-empty sequence of numbers, got {epsilons!r} '
                        f'of type {type(epsilons).__name__}')
    if len(epsilons) == 0:
        raise ValueError(f'epsilons must be a non-empty sequence of numbers, got {epsilons!r}')
    return tuple(check_real(f'epsilons[{j}]', e, largest=FLOAT32_MAX / (j + 1))
                 for j, e in enumerate(epsilons))


def check_epsilon_bounds(epsilons: Tuple[float, ...], allow_negative_loss: bool,
                         alpha: float = -1.0, alpha_weighted_poly: bool = True) -> None:
    """Refuse Poly-N coefficients (validated numbers) below the bound that keeps
    the loss >= 0, unless ``allow_negative_loss`` (a validated bool).

    Focal loss is ``alpha_t * sum_j (1 - p_t)^(gamma + j) / j``; Poly-N adds
    ``w * epsilons[j-1]`` to the coefficient of ``(1 - p_t)^(gamma + j)``, with
    ``w = alpha_t`` (``alpha_weighted_poly``, or no alpha weighting at all,
    ``alpha < 0``: then every bound is ``-1/j``; cross-entropy is this case) or
    ``w = 1`` (then ``-min(alpha, 1 - alpha)/j``). While every coefficient stays
    >= 0 the loss is >= 0 and minimal at the target. Below, it is negative for
    confident correct predictions and its gradient pushes them away from the
    target, so that needs an explicit ``allow_negative_loss=True``.
    """
    if allow_negative_loss:
        return
    weighted = alpha_weighted_poly or alpha < 0
    scale = 1.0 if weighted else min(alpha, 1.0 - alpha)
    for j, eps in enumerate(epsilons, start=1):
        if eps < -scale / j:  # keep in step with has_non_negative_coefficients
            label = 'epsilon' if len(epsilons) == 1 else f'epsilons[{j - 1}]'
            if weighted:
                bound = '-1' if j == 1 else f'-1/{j}'
            else:
                bound = (f'{-scale / j + 0.0:g} (with alpha_weighted_poly=False the bound is '
                         f'-min(alpha, 1 - alpha)/{j}, alpha={alpha!r})')
            raise ValueError(
                f'{label}={eps!r} is below {bound}: the loss then goes negative for '
                'confident correct predictions and its gradient pushes them away '
                'from the target. Pass allow_negative_loss=True to use it anyway.')


def has_non_negative_coefficients(epsilons: Sequence[float], alpha: float,
                                  alpha_weighted_poly: bool) -> bool:
    """True when no coefficient of the loss's expansion in ``1 - p_t`` is negative
    (the bounds of :func:`check_epsilon_bounds`): then the loss is >= 0."""
    scale = 1.0 if alpha_weighted_poly or alpha < 0 else min(alpha, 1.0 - alpha)
    return all(eps >= -scale / j for j, eps in enumerate(epsilons, start=1))


def check_poly_params(epsilons: Sequence[float], gamma: float, alpha: float,
                      alpha_weighted_poly: bool, allow_negative_loss: bool) -> PolyParams:
    """All hyper-parameters of the Poly-N focal loss, validated together, each once."""
    gamma, alpha = check_focal_params(gamma, alpha)
    weighted = check_bool('alpha_weighted_poly', alpha_weighted_poly)
    return _poly_params(check_epsilons(epsilons), gamma, alpha, weighted, allow_negative_loss)


def check_poly1_params(epsilon: float, gamma: float, alpha: float,
                       alpha_weighted_poly: bool, allow_negative_loss: bool) -> PolyParams:
    """:func:`check_poly_params` for Poly-1, whose one coefficient is the number
    ``epsilon`` (so named in errors)."""
    epsilon = check_real('epsilon', epsilon)
    gamma, alpha = check_focal_params(gamma, alpha)
    weighted = check_bool('alpha_weighted_poly', alpha_weighted_poly)
    return _poly_params((epsilon,), gamma, alpha, weighted, allow_negative_loss)


def _poly_params(epsilons: Tuple[float, ...], gamma: float, alpha: float, weighted: bool,
                 allow_negative_loss: object) -> PolyParams:
    """The PolyParams of checked numbers, after the last check: the epsilon bounds."""
    allow = check_bool('allow_negative_loss', allow_negative_loss)
    check_epsilon_bounds(epsilons, allow, alpha, weighted)
    return PolyParams(epsilons, gamma, alpha, weighted,
                      has_non_negative_coefficients(epsilons, alpha, weighted), allow)


# ------------------------------------------------------ focal loss inputs


def check_focal_inputs(pred: Tensor, target: Tensor, weight: Optional[Tensor],
                       activated: bool, ignore_index: Optional[int] = None
                       ) -> Tuple[bool, Tensor]:
    """Validate pred/target/weight; return whether ``target`` holds class indices,
    and ``target`` with its integers in a dtype compared by value (:func:`label_values`).

    Accepted forms (mmdet's ``FocalLoss`` contract, plus dense index maps):
      * ``pred`` (N, C, *) with integer ``target`` (N, *) in [0, C]; C is
        background, and ``ignore_index`` (if given) is allowed too;
      * ``pred`` of any shape with a ``target`` of the same shape holding
        per-element targets in [0, 1] (one-hot or soft scores).
    ``weight``: the shape of ``pred``, (N,) per sample, ``pred`` flattened, or
    for index targets the shape of ``target`` (one per location). The value
    checks cost one host sync (see :func:`set_value_checks`).
    """
    check_logits(pred)
    check_tensor('target', target)
    if target.shape == pred.shape:
        is_index, target = False, label_values('target', target)
    elif (pred.dim() >= 2 and target.dim() == pred.dim() - 1
          and target.shape == pred.shape[:1] + pred.shape[2:]):
        target, is_index = check_class_indices(target, pred, 'target'), True
    else:
        raise ValueError(
            f'target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)}: '
            'expected class indices (N, *) for pred (N, C, *), or per-element targets '
            'of the same shape as pred')
    if ignore_index is not None and not is_index:
        raise ValueError(f'ignore_index={ignore_index!r} needs class-index targets, got '
                         f'targets of the shape of pred {tuple(pred.shape)}')
    if weight is not None:
        check_weight_shape(weight, pred, target if is_index else None)
    if _value_checks and target.numel():  # ignored labels pass the range check as 0
        _check_focal_values(pred, target if ignore_index is None else
                            target.masked_fill(target == ignore_index, 0),
                            is_index, activated, ignore_index)
    return is_index, target


def _check_focal_values(pred: Tensor, target: Tensor, is_index: bool, activated: bool,
                        ignore_index: Optional[int]) -> None:
    """Labels in [0, C] or targets in [0, 1], and probabilities in [0, 1] for
    ``activated``: the ranges (min, max) come back in one sync. NaN fails every
    comparison below."""
    checked = [target.to(torch.uint8) if target.dtype == torch.bool else target]
    checked += [pred] if activated else []
    extremes = [torch.stack(torch.aminmax(t)) for t in checked]
    if len(extremes) > 1:
        values = torch.cat([e.double() for e in extremes]).tolist()
    else:  # the usual case: aminmax + stack, two small kernels
        values = extremes[0].tolist()
    upper = pred.shape[1] if is_index else 1
    if not (values[0] >= 0 and values[1] <= upper):
        if is_index:
            bad = target[(target < 0) | (target > pred.shape[1])]
            also = '' if ignore_index is None else f' or ignore_index={ignore_index}'
            raise ValueError(
                f'target labels must be in [0, {pred.shape[1]}] (num_classes={pred.shape[1]} '
                f'is background){also}, got {_first(bad)}')
        bad = target[~((target >= 0) & (target <= 1))]
        raise ValueError(f'target values must be in [0, 1], got {_first(bad)}')
    if activated and not (values[2] >= 0 and values[3] <= 1):
        bad = pred[~((pred >= 0) & (pred <= 1))]
        raise ValueError(
            f'pred must hold probabilities in [0, 1] when activated=True, got {_first(bad)}')


def check_tensor(name: str, value: object) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f'{name} must be a tensor, got {type(value).__name__}')


def check_logits(pred: object) -> None:
    """``pred`` must be a floating-point tensor."""
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        raise TypeError(f'pred must be a floating-point tensor, got {_describe(pred)}')


def check_class_indices(labels: Tensor, pred: Tensor, name: str) -> Tensor:
    """Class-index ``labels`` must be integers (a float or bool label would be
    truncated silently) and ``pred`` (N, C, ...) must have at least one class;
    returns the labels in a dtype compared by value (see :func:`label_values`)."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f'{name} of shape {tuple(labels.shape)} for pred of shape {tuple(pred.shape)} '
            f'must hold integer class indices, got dtype {labels.dtype}')
    if pred.shape[1] == 0:
        raise ValueError(f'pred of shape {tuple(pred.shape)} has no classes (dim 1 is 0)')
    labels = label_values(name, labels)
    # compared with an ignore_index in their own dtype, int32 labels 0 equal 2**32
    return labels.long() if labels.dtype in _NARROW_LABELS else labels


#: Class-index dtypes read as int64 (:func:`check_class_indices`): compared with an
#: ``ignore_index`` in their own dtype, the index wraps around (int32 0 equals 2**32).
_NARROW_LABELS = (torch.int8, torch.int16, torch.int32)


def label_values(name: str, labels: Tensor) -> Tensor:
    """``labels`` with uint8 as int64, so that 255 is 255 (torch compares a uint8
    255 equal to -1, an ``ignore_index``); the other unsigned integer dtypes (which
    torch cannot reduce) are a TypeError. Other dtypes are returned as they are."""
    if not labels.dtype.is_signed and labels.dtype not in (torch.uint8, torch.bool):
        raise TypeError(f'{name} has dtype {labels.dtype}, which the losses do not take: '
                        'use a signed integer dtype or uint8')
    return labels.long() if labels.dtype == torch.uint8 else labels


def check_weight_shape(weight: Tensor, pred: Tensor, labels: Optional[Tensor] = None) -> None:
    """``weight`` must broadcast as mmdet's focal loss does (see check_focal_inputs);
    with class-index ``labels``, their shape (one weight per location) is allowed too."""
    if not isinstance(weight, Tensor):
        raise TypeError(f'weight must be a tensor or None, got {type(weight).__name__}')
    ok = (weight.shape == pred.shape or is_per_sample_weight(weight, pred)
          or (weight.dim() == 1 and weight.numel() == pred.numel())
          or (labels is not None and weight.shape == labels.shape))
    if not ok:
        per_location = '' if labels is None else ', the shape of target'
        raise ValueError(
            f'weight shape {tuple(weight.shape)} does not fit pred shape {tuple(pred.shape)}: '
            f'expected the shape of pred, (N,) with one weight per sample{per_location}, or '
            'pred flattened')


# ------------------------------------------------------------ cross-entropy


def check_cross_entropy_settings(epsilon: float, class_weight: Optional[Sequence[float]],
                                 ignore_index: Optional[int], avg_non_ignore: bool,
                                 allow_negative_loss: bool,
                                 label_smoothing: float = 0.0) -> CrossEntropySettings:
    """All settings of the Poly-1 cross-entropy, validated together, each once."""
    epsilon = check_real('epsilon', epsilon)
    allow = check_bool('allow_negative_loss', allow_negative_loss)
    check_epsilon_bounds((epsilon,), allow)
    smoothing = check_real('label_smoothing', label_smoothing, minimum=0.0)
    if smoothing >= 1:
        raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing!r}: at 1 '
                         'every target is uniform and the label is lost')
    return CrossEntropySettings(epsilon, check_class_weight(class_weight),
                                check_ignore_index(ignore_index),
                                check_bool('avg_non_ignore', avg_non_ignore), smoothing, allow)


def check_soft_targets(target: Tensor, pred: Tensor) -> None:
    """Probabilities over dim 1: a floating tensor of ``pred``'s shape, every value
    in [0, 1] and each distribution summing to 1 (within 1e-4; 1e-2 for fp16 and
    bf16 targets). The value checks cost one host sync (see :func:`set_value_checks`)."""
    if target.shape != pred.shape or not target.is_floating_point():
        raise ValueError(
            f'soft targets must be a floating-point tensor of pred\'s shape {tuple(pred.shape)}, '
            f'got {target.dtype} of shape {tuple(target.shape)}')
    if not _value_checks or not target.numel():
        return
    tolerance = 1e-2 if target.dtype in (torch.float16, torch.bfloat16) else 1e-4
    off = (target.sum(dim=1, dtype=torch.float32) - 1).abs().max()
    low, high, worst = torch.stack([*torch.aminmax(target.float()), off]).tolist()  # one sync
    if not (low >= 0 and high <= 1):
        bad = target[~((target >= 0) & (target <= 1))]
        raise ValueError(f'soft targets must be probabilities in [0, 1], got {_first(bad)}')
    if not worst <= tolerance:
        raise ValueError(f'soft targets must sum to 1 over the classes (dim 1) within '
                         f'{tolerance:g}, got a sum off by {worst:.3g}')


def check_ignore_index(ignore_index: Optional[int]) -> int:
    """An int, or None for the default (-100)."""
    if ignore_index is None:
        return DEFAULT_IGNORE_INDEX
    return check_label_index('ignore_index', ignore_index, 'an int or None')


def check_class_weight(class_weight: Union[None, Sequence[float], str, os.PathLike]
                       ) -> Optional[Tuple[float, ...]]:
    """``class_weight``: None, a sequence of finite non-negative numbers, or the
    path of a file of them (see :func:`read_class_weight`). Their number is
    checked per call, against the classes of ``pred`` (:func:`check_class_count`)."""
    if class_weight is None:
        return None
    if isinstance(class_weight, (str, os.PathLike)):
        class_weight = read_class_weight(class_weight)
    elif isinstance(class_weight, bytes) or not isinstance(class_weight, Sequence):
        raise TypeError(f'class_weight must be a sequence of numbers, a file path or None, '
                        f'got {class_weight!r} of type {type(class_weight).__name__}')
    values = tuple(check_real(f'class_weight[{i}]', v) for i, v in enumerate(class_weight))
    if not values or not all(v >= 0 for v in values):
        raise ValueError('class_weight must hold one per class finite non-negative weights, '
                         f'got {class_weight!r}')
    return values


def check_class_count(class_weight: Optional[Tuple[float, ...]], num_classes: int) -> None:
    """Class weights (validated by :func:`check_class_weight`), one per class."""
    if class_weight is not None and len(class_weight) != num_classes:
        raise ValueError(f'class_weight must hold {num_classes} finite non-negative weights, '
                         f'got {class_weight!r}')


def read_class_weight(path: Union[str, os.PathLike]) -> Tuple[float, ...]:
    """The weights in a file: a ``.npy`` array, a ``.json`` list, or numbers
    separated by whitespace or commas in any other text file."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f'class_weight {name!r} is a string but no such file: give a '
                         'sequence of numbers or the path of a file of them')
    try:
        if name.endswith('.npy'):
            values = np.load(name, allow_pickle=False).astype(float).ravel().tolist()
        elif name.endswith('.json'):
            with open(name) as f:
                values = json.load(f)
        else:
            with open(name) as f:
                values = [float(word) for word in f.read().replace(',', ' ').split()]
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f'class_weight file {name!r} does not hold a list of numbers: '
                         f'{error}') from error
    if not isinstance(values, list):
        raise ValueError(f'class_weight file {name!r} holds a {type(values).__name__}, '
                         'not a list of numbers')
    return tuple(check_real(f'class_weight[{i}] (in {name})', v) for i, v in enumerate(values))


def check_labels_in_range(label: Tensor, low: float, high: float, ignore_index: int,
                          what: str) -> None:
    """Every label in [low, high] or equal to ``ignore_index``; one host sync
    (skipped while value checks are off)."""
    if not _value_checks or not label.numel():
        return
    bad = ~(((label >= low) & (label <= high)) | (label == ignore_index))
    if bad.any():
        value = label[bad].flatten()[0].item()
        raise ValueError(f'label {what} must be in [{low}, {high}] or ignore_index='
                         f'{ignore_index}, got {value!r}')


# ------------------------------------------------------------ formatting


def _first(values: Tensor) -> str:
    return f'{values.flatten()[0].item()!r} ({values.numel()} bad value(s))'


def _brief(value: object) -> str:
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
