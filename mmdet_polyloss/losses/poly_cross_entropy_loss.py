"""MMDetection module for Poly-1 cross-entropy (thin layer over functional).

Validates its arguments once, in ``__init__``, into a ``CrossEntropySettings``
and a :class:`CrossEntropyLossOptions`, and shows them as read-only attributes.
"""
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..functional.checks import (
    REDUCTIONS,
    check_bool,
    check_choice,
    check_cross_entropy_settings,
    check_ignore_index,
    check_module_reduction,
    check_real,
)
from ..functional.common import AvgFactor
from ..functional.poly_cross_entropy import sigmoid_poly1_with_settings, softmax_poly1_with_settings
from .read_only import ReadOnly


@dataclass(frozen=True)
class CrossEntropyLossOptions:
    """A cross-entropy module's validated arguments besides its
    ``CrossEntropySettings``; ``ignore_index`` as given (None: the default)."""
    use_sigmoid: bool
    reduction: str
    loss_weight: float
    ignore_index: Optional[int]


@MODELS.register_module()
class Poly1CrossEntropyLoss(nn.Module):
    r"""Poly-1 cross-entropy, a drop-in for mmdet's ``CrossEntropyLoss``.

    Softmax: ``w_y * (CE + epsilon * (1 - p_y))`` per sample, the class weight
    on both terms. Sigmoid (``use_sigmoid=True``, e.g. RPN): element-wise BCE
    plus ``epsilon * (1 - p_t)``, the class weight (BCE's pos_weight) on the
    positive part of both. ``epsilon=0`` is mmdet's ``CrossEntropyLoss``;
    ``epsilon=-1`` drops the leading polynomial term (the paper's COCO setting).

    Args:
        use_sigmoid: element-wise sigmoid instead of softmax over classes.
        use_mask: must be False (mmdet's argument for mask heads; no mask form).
        epsilon: Poly-1 coefficient, >= -1 unless ``allow_negative_loss``.
        class_weight: one non-negative weight per class.
        ignore_index: label ignored by the loss (default -100).
        reduction: 'none', 'mean' or 'sum'.
        loss_weight: multiplies the reduced loss.
        avg_non_ignore: 'mean' averages over non-ignored labels only.
        allow_negative_loss: allow ``epsilon < -1``.
        label_smoothing: ``s`` in [0, 1), softmax form only: targets
            ``t (1 - s) + s / C`` (the paper's Poly-1 CE listing).

    The softmax form also takes soft targets (N, C, *), distributions over the
    classes, in place of class indices; ``ignore_index`` and ``avg_non_ignore``
    concern indices only (a sample is dropped from soft targets with weight 0).

    Example::

        >>> import torch
        >>> loss = Poly1CrossEntropyLoss(epsilon=-1.0)
        >>> loss(torch.zeros(2, 4), torch.tensor([1, 3]))  # log 4 - 3/4
        tensor(0.6363)
    """

    def __init__(self,
                 use_sigmoid: bool = False,
                 use_mask: bool = False,
                 epsilon: float = 1.0,
                 class_weight: Optional[Sequence[float]] = None,
                 ignore_index: Optional[int] = None,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 avg_non_ignore: bool = False,
                 allow_negative_loss: bool = False,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if check_bool('use_mask', use_mask):
            raise ValueError(
                f'{type(self).__name__} has no mask form, got use_mask={use_mask!r}; '
                "keep mmdet's CrossEntropyLoss(use_mask=True) for mask heads")
        use_sigmoid = check_bool('use_sigmoid', use_sigmoid)
        self._settings = settings = check_cross_entropy_settings(
            epsilon, class_weight, ignore_index, avg_non_ignore, allow_negative_loss,
            label_smoothing)
        if use_sigmoid and settings.label_smoothing:
            raise ValueError(f'label_smoothing={label_smoothing!r} is for the softmax form; '
                             'use_sigmoid=True has none')
        self._options = options = CrossEntropyLossOptions(
            use_sigmoid=use_sigmoid,
            reduction=check_choice('reduction', reduction, REDUCTIONS),
            loss_weight=check_real('loss_weight', loss_weight),
            ignore_index=None if ignore_index is None else settings.ignore_index)
        if ignore_index is not None and not settings.avg_non_ignore \
                and options.reduction == 'mean':
            warnings.warn('ignore_index is set but avg_non_ignore=False: the mean still '
                          'counts ignored labels; set avg_non_ignore=True to average over '
                          'the others only (as torch.nn.functional.cross_entropy does)',
                          stacklevel=2)

    use_sigmoid = ReadOnly('_options.use_sigmoid')  # heads read it
    reduction = ReadOnly('_options.reduction')
    loss_weight = ReadOnly('_options.loss_weight')
    ignore_index = ReadOnly('_options.ignore_index')
    epsilon = ReadOnly('_settings.epsilon')
    class_weight = ReadOnly('_settings.class_weight')
    avg_non_ignore = ReadOnly('_settings.avg_non_ignore')
    label_smoothing = ReadOnly('_settings.label_smoothing')
    allow_negative_loss = ReadOnly('_settings.allow_negative_loss')

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """Compute the loss; arguments as mmdet's ``CrossEntropyLoss.forward``."""
        settings, options = self._settings, self._options
        if ignore_index is not None:
            settings = settings._replace(ignore_index=check_ignore_index(ignore_index))
        reduction = check_module_reduction(options.reduction, reduction_override, avg_factor)
        loss_fn = (sigmoid_poly1_with_settings if options.use_sigmoid
                   else softmax_poly1_with_settings)
        loss = loss_fn(cls_score, label, weight, settings, reduction=reduction,
                       avg_factor=avg_factor)
        return options.loss_weight * loss

    def extra_repr(self) -> str:
        smoothing = f', label_smoothing={self.label_smoothing}' if self.label_smoothing else ''
        return (f'use_sigmoid={self.use_sigmoid}, epsilon={self.epsilon}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'avg_non_ignore={self.avg_non_ignore}{smoothing}')
