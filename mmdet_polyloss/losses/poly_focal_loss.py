"""MMDetection modules for the Poly focal losses (thin layer over functional).

Each module validates its arguments once, in ``__init__``, into a
``PolyParams`` and a :class:`FocalLossOptions`, and shows them as read-only
attributes; ``forward`` checks only what changes per call (the tensors,
``avg_factor``, ``reduction_override``).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..functional.checks import (
    REDUCTIONS,
    check_bool,
    check_choice,
    check_label_index,
    check_module_reduction,
    check_poly1_params,
    check_poly_params,
    check_real,
)
from ..functional.common import AvgFactor
from ..functional.poly_focal import poly_focal_with_params
from .read_only import ReadOnly


@dataclass(frozen=True)
class FocalLossOptions:
    """A focal loss module's validated arguments besides its ``PolyParams``."""
    reduction: str
    loss_weight: float
    activated: bool
    ignore_index: Optional[int]


@MODELS.register_module()
class PolyNFocalLoss(nn.Module):
    r"""Sigmoid Poly-N focal loss, a drop-in for mmdet's ``FocalLoss``.

    ``FL + alpha_t * sum_j epsilons[j-1] * (1 - p_t)^(gamma + j)``, with
    ``FL = alpha_t * (1 - p_t)^gamma * BCE``. ``epsilons=(0,)`` is ``FocalLoss``.

    Args:
        use_sigmoid: must be True; dense heads read it to size their outputs.
        gamma: focusing parameter, >= 0.
        alpha: weight of positives in [0, 1]; negative disables alpha_t.
        epsilons: added to the coefficients of ``(1 - p_t)^(gamma + j)``.
        alpha_weighted_poly: multiply the epsilon terms by alpha_t (the
            paper's form). False gives the form of most public ports.
        reduction: 'none', 'mean' or 'sum'.
        loss_weight: multiplies the reduced loss.
        activated: ``pred`` holds probabilities instead of logits.
        allow_negative_loss: allow ``epsilons[j-1] < -1/j`` (without alpha_t
            on the epsilon terms: ``< -min(alpha, 1 - alpha)/j``), where the loss
            is negative for confident correct predictions.
        ignore_index: a class-index label that contributes nothing (None: none).

    Example::

        >>> import torch
        >>> loss = PolyNFocalLoss(epsilons=(-1.0, 0.5))
        >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 3, 3]), avg_factor=2)
        tensor(0.3181)
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: float = 0.25,
                 epsilons: Sequence[float] = (1.0,),
                 alpha_weighted_poly: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 allow_negative_loss: bool = False,
                 ignore_index: Optional[int] = None) -> None:
        super().__init__()
        if check_bool('use_sigmoid', use_sigmoid) is not True:
            raise ValueError(
                f'{type(self).__name__} is sigmoid-only, got use_sigmoid={use_sigmoid!r}; '
                "for a softmax classifier use a cross-entropy loss such as mmdet's "
                "CrossEntropyLoss")
        self._params = self._check_params(epsilons, gamma, alpha, alpha_weighted_poly,
                                          allow_negative_loss)
        self._options = FocalLossOptions(
            reduction=check_choice('reduction', reduction, REDUCTIONS),
            loss_weight=check_real('loss_weight', loss_weight),
            activated=check_bool('activated', activated),
            ignore_index=None if ignore_index is None else check_label_index('ignore_index',
                                                                             ignore_index))

    #: Validates the hyper-parameters into a ``PolyParams``, the coefficients
    #: first: ``epsilons`` here, the one ``epsilon`` in :class:`Poly1FocalLoss`.
    _check_params = staticmethod(check_poly_params)

    gamma = ReadOnly('_params.gamma')
    alpha = ReadOnly('_params.alpha')
    epsilons = ReadOnly('_params.epsilons')
    alpha_weighted_poly = ReadOnly('_params.alpha_weighted_poly')
    allow_negative_loss = ReadOnly('_params.allow_negative_loss')
    reduction = ReadOnly('_options.reduction')
    loss_weight = ReadOnly('_options.loss_weight')
    activated = ReadOnly('_options.activated')
    ignore_index = ReadOnly('_options.ignore_index')

    @property
    def use_sigmoid(self) -> bool:
        """Always True: the loss is sigmoid-only (dense heads read it)."""
        return True

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the loss.

        Args:
            pred: logits (N, C) or a dense map (N, C, *).
            target: class indices (N,) or (N, *) in [0, C] (C is
                background), or per-element targets in [0, 1] shaped like
                ``pred``.
            weight: per-element weight shaped like ``pred``, one per
                sample (N,), or, with class-index targets, one per location
                (the target's shape, (N, *) for a dense map).
            avg_factor: divisor of the summed loss for 'mean'.
            reduction_override: overrides ``self.reduction`` when given.

        Returns:
            ``loss_weight`` times the reduced loss.
        """
        options = self._options
        loss = poly_focal_with_params(
            pred, target, weight, self._params,
            activated=options.activated,
            reduction=check_module_reduction(options.reduction, reduction_override, avg_factor),
            avg_factor=avg_factor,
            ignore_index=options.ignore_index)
        return options.loss_weight * loss

    def extra_repr(self) -> str:
        ignore = '' if self.ignore_index is None else f', ignore_index={self.ignore_index}'
        return (f'gamma={self.gamma}, alpha={self.alpha}, {self._epsilon_repr()}, '
                f'alpha_weighted_poly={self.alpha_weighted_poly}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'activated={self.activated}, allow_negative_loss={self.allow_negative_loss}'
                + ignore)

    def _epsilon_repr(self) -> str:
        return f'epsilons={self.epsilons}'


@MODELS.register_module()
class Poly1FocalLoss(PolyNFocalLoss):
    r"""Sigmoid Poly-1 focal loss: ``FL + epsilon * alpha_t * (1 - p_t)^(gamma + 1)``.

    ``PolyNFocalLoss`` with ``epsilons=(epsilon,)``; ``epsilon=0`` is mmdet's
    ``FocalLoss`` and ``epsilon=-1`` drops the leading polynomial term. The
    other arguments are those of :class:`PolyNFocalLoss`.

    Example::

        >>> import torch
        >>> loss = Poly1FocalLoss(epsilon=-1.0)
        >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 3, 3]), avg_factor=2)
        tensor(0.1931)
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: float = 0.25,
                 epsilon: float = 1.0,
                 alpha_weighted_poly: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 allow_negative_loss: bool = False,
                 ignore_index: Optional[int] = None) -> None:
        super().__init__(
            use_sigmoid=use_sigmoid,
            gamma=gamma,
            alpha=alpha,
            epsilons=epsilon,  # for _check_params: Poly-1's number, checked as ``epsilon``
            alpha_weighted_poly=alpha_weighted_poly,
            reduction=reduction,
            loss_weight=loss_weight,
            activated=activated,
            allow_negative_loss=allow_negative_loss,
            ignore_index=ignore_index)

    _check_params = staticmethod(check_poly1_params)

    @property
    def epsilon(self) -> float:
        """The Poly-1 coefficient, ``epsilons[0]`` (read-only)."""
        return self.epsilons[0]

    def _epsilon_repr(self) -> str:
        return f'epsilon={self.epsilon}'
