"""Helpers every loss here shares: validated settings, compute dtype, targets,
weighting and mmdet's reductions.

The bottom layer of :mod:`mmdet_polyloss.functional`: it imports nothing else of
the package. Nothing here validates (see :mod:`.checks`).
"""
from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

#: mmdet's ``avg_factor``: None, a number, or a one-element tensor.
AvgFactor = Optional[Union[float, Tensor]]


class PolyParams(NamedTuple):
    """Validated hyper-parameters of the Poly-N focal loss (see :mod:`.checks`).

    ``alpha < 0`` means no alpha weighting (alpha_t = 1). The epsilon terms are
    multiplied by alpha_t when ``alpha_weighted_poly`` (the paper's form).
    ``non_negative``: every coefficient of the expansion in ``1 - p_t`` is >= 0,
    so the loss is >= 0 exactly and the computed one is clamped at 0 (a value
    below it can only be rounding). ``allow_negative_loss``: the user's opt-in to
    epsilons below that bound (the computation does not read it).
    """
    epsilons: Tuple[float, ...]
    gamma: float
    alpha: float
    alpha_weighted_poly: bool
    non_negative: bool = False
    allow_negative_loss: bool = False

    def alpha_t(self, positive: bool) -> float:
        """alpha_t of a positive (target 1) or a negative (target 0) element."""
        if self.alpha < 0:
            return 1.0
        return self.alpha if positive else 1.0 - self.alpha

    def poly_weight(self, positive: bool) -> float:
        """The factor in front of the epsilon terms: alpha_t or 1."""
        return self.alpha_t(positive) if self.alpha_weighted_poly else 1.0


class CrossEntropySettings(NamedTuple):
    """Validated settings of the Poly-1 cross-entropy (see :mod:`.checks`);
    ``allow_negative_loss`` is the opt-in to ``epsilon < -1`` (not read by the
    computation)."""
    epsilon: float
    class_weight: Optional[Tuple[float, ...]]
    ignore_index: int
    avg_non_ignore: bool
    label_smoothing: float = 0.0
    allow_negative_loss: bool = False


def compute_dtype(pred: Tensor) -> torch.dtype:
    """The dtype every loss here computes in: float32 for half types (fp16,
    bf16), the input's own for float32 and float64."""
    return torch.promote_types(pred.dtype, torch.float32)


def dense_target(labels: Tensor, pred: Tensor) -> Tensor:
    """One-hot targets of ``pred``'s shape (N, C, *) from class indices (N, *)
    in [0, C]; index C (background), or any index outside [0, C), gives all zeros."""
    num_classes = pred.shape[1]
    labels = labels.long()
    labels = labels.where((labels >= 0) & (labels < num_classes), num_classes)
    one_hot = F.one_hot(labels, num_classes + 1)[..., :num_classes]
    return one_hot.movedim(-1, 1).to(pred.dtype)


def is_per_sample_weight(weight: Tensor, pred: Tensor) -> bool:
    """True for one weight per sample: shape (N,) or (N, 1) for pred (N, ...)."""
    return (weight.dim() >= 1 and pred.dim() >= 1 and weight.shape[0] == pred.shape[0]
            and weight.numel() == pred.shape[0] and weight.shape != pred.shape)


def broadcast_weight(weight: Tensor, loss: Tensor) -> Tensor:
    """``weight`` (validated by ``checks.check_weight_shape``) shaped to multiply
    ``loss``: as is, per sample (N, 1, ...), or reshaped from ``loss`` flattened."""
    if weight.shape == loss.shape:
        return weight
    if is_per_sample_weight(weight, loss):
        return weight.reshape(loss.shape[0], *([1] * (loss.dim() - 1)))
    return weight.reshape(loss.shape)


def zero_ignored(x: Tensor, weight: Optional[Tensor]) -> Tensor:
    """``x`` with 0 where ``weight`` (broadcast as :func:`broadcast_weight`) is 0,
    before the math: an ignored element's NaN or infinite logit then reaches
    neither the loss nor the gradient (0 times NaN is NaN)."""
    return x if weight is None else x.masked_fill(broadcast_weight(weight, x) == 0, 0)


def weight_reduce(loss: Tensor, weight: Optional[Tensor], reduction: str,
                  avg_factor: AvgFactor) -> Tensor:
    """Apply ``weight``, then reduce by mmdet's ``weight_reduce_loss`` rules:
    'none' as is, 'sum', or 'mean' = sum / (avg_factor + eps) or over the elements.

    Unlike mmdet, a 'mean' over zero elements is 0 (with a gradient), not NaN.
    """
    if weight is not None:
        loss = loss * broadcast_weight(weight, loss).to(loss.dtype)
    if reduction == 'none':
        return loss
    return scale_sum(loss.sum(), loss.numel(), reduction, avg_factor)


def scale_sum(total: Tensor, numel: int, reduction: str, avg_factor: AvgFactor) -> Tensor:
    """'sum' or 'mean' (over ``numel``, or ``avg_factor + eps``) of a summed loss."""
    if reduction == 'sum':
        return total
    if avg_factor is not None:
        if isinstance(avg_factor, Tensor):  # (1,) or (1, 1) gives a scalar loss too
            avg_factor = avg_factor.reshape(())
        return total / (avg_factor + torch.finfo(torch.float32).eps)
    return total / numel if numel else total
