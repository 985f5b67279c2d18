"""MMDetection module for Poly-1 cross-entropy (thin layer over functional)."""
import warnings
from typing import Optional, Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..functional.checks import check_real, check_reduction
from ..functional.poly_cross_entropy import (check_class_weight, check_common_args,
                                             poly1_binary_cross_entropy, poly1_cross_entropy)
from ..functional.poly_focal import AvgFactor


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
                 allow_negative_loss: bool = False) -> None:
        super().__init__()
        if use_mask:
            raise ValueError(
                f'{type(self).__name__} has no mask form, got use_mask={use_mask!r}; '
                "keep mmdet's CrossEntropyLoss(use_mask=True) for mask heads")
        self.use_sigmoid = bool(use_sigmoid)
        self.epsilon, _ = check_common_args(epsilon, reduction, None, ignore_index,
                                            allow_negative_loss)
        self.class_weight = check_class_weight(class_weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.loss_weight = check_real('loss_weight', loss_weight)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.allow_negative_loss = bool(allow_negative_loss)
        if ignore_index is not None and not avg_non_ignore and reduction == 'mean':
            warnings.warn('ignore_index is set but avg_non_ignore=False: the mean still '
                          'counts ignored labels; set avg_non_ignore=True to average over '
                          'the others only (as torch.nn.functional.cross_entropy does)')

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """Compute the loss; arguments as mmdet's ``CrossEntropyLoss.forward``."""
        if reduction_override is not None:
            check_reduction(reduction_override, avg_factor, name='reduction_override')
        loss_fn = poly1_binary_cross_entropy if self.use_sigmoid else poly1_cross_entropy
        loss = loss_fn(
            cls_score, label, weight,
            epsilon=self.epsilon,
            class_weight=self.class_weight,
            ignore_index=self.ignore_index if ignore_index is None else ignore_index,
            reduction=reduction_override or self.reduction,
            avg_factor=avg_factor,
            avg_non_ignore=self.avg_non_ignore,
            allow_negative_loss=self.allow_negative_loss)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'use_sigmoid={self.use_sigmoid}, epsilon={self.epsilon}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'avg_non_ignore={self.avg_non_ignore}')
