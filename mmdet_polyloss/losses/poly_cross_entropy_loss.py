"""MMDetection module for Poly-1 cross-entropy (thin layer over functional).

Validates its arguments once, in ``__init__``, and keeps them read-only.
"""
import warnings
from typing import Optional, Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..functional.checks import (
    REDUCTIONS,
    check_bool,
    check_choice,
    check_cross_entropy_settings,
    check_ignore_index,
    check_real,
)
from ..functional.common import AvgFactor
from ..functional.poly_cross_entropy import sigmoid_poly1_with_settings, softmax_poly1_with_settings


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
        self._use_sigmoid = check_bool('use_sigmoid', use_sigmoid)
        self._settings = check_cross_entropy_settings(epsilon, class_weight, ignore_index,
                                                      avg_non_ignore, allow_negative_loss,
                                                      label_smoothing)
        if self._use_sigmoid and self._settings.label_smoothing:
            raise ValueError(f'label_smoothing={label_smoothing!r} is for the softmax form; '
                             'use_sigmoid=True has none')
        self._ignore_index = ignore_index  # None: the default, as given
        self._reduction = check_choice('reduction', reduction, REDUCTIONS)
        self._loss_weight = check_real('loss_weight', loss_weight)
        self._allow_negative_loss = check_bool('allow_negative_loss', allow_negative_loss)
        if ignore_index is not None and not avg_non_ignore and reduction == 'mean':
            warnings.warn('ignore_index is set but avg_non_ignore=False: the mean still '
                          'counts ignored labels; set avg_non_ignore=True to average over '
                          'the others only (as torch.nn.functional.cross_entropy does)',
                          stacklevel=2)

    # Read-only views of the validated arguments (heads read use_sigmoid).
    use_sigmoid = property(lambda self: self._use_sigmoid)
    epsilon = property(lambda self: self._settings.epsilon)
    class_weight = property(lambda self: self._settings.class_weight)
    ignore_index = property(lambda self: self._ignore_index)
    reduction = property(lambda self: self._reduction)
    loss_weight = property(lambda self: self._loss_weight)
    avg_non_ignore = property(lambda self: self._settings.avg_non_ignore)
    label_smoothing = property(lambda self: self._settings.label_smoothing)
    allow_negative_loss = property(lambda self: self._allow_negative_loss)

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """Compute the loss; arguments as mmdet's ``CrossEntropyLoss.forward``."""
        settings = self._settings
        if ignore_index is not None:
            settings = settings._replace(ignore_index=check_ignore_index(ignore_index))
        loss_fn = (sigmoid_poly1_with_settings if self._use_sigmoid
                   else softmax_poly1_with_settings)
        overridden = reduction_override is not None
        loss = loss_fn(
            cls_score, label, weight, settings,
            reduction=reduction_override if overridden else self._reduction,
            avg_factor=avg_factor,
            reduction_name='reduction_override' if overridden else 'reduction')
        return self._loss_weight * loss

    def extra_repr(self) -> str:
        smoothing = f', label_smoothing={self.label_smoothing}' if self.label_smoothing else ''
        return (f'use_sigmoid={self.use_sigmoid}, epsilon={self.epsilon}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'avg_non_ignore={self.avg_non_ignore}{smoothing}')
