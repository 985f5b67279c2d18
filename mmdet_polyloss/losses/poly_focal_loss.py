"""MMDetection modules for the Poly focal losses (thin layer over functional)."""
from typing import Optional, Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..functional.checks import (check_epsilons, check_focal_params, check_real,
                                 check_reduction)
from ..functional.poly_focal import AvgFactor, poly_focal_loss


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
                 allow_negative_loss: bool = False) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError(
                f'{type(self).__name__} is sigmoid-only, got use_sigmoid={use_sigmoid!r}; '
                "for a softmax classifier use a cross-entropy loss such as mmdet's "
                "CrossEntropyLoss")
        self.use_sigmoid = True
        self.gamma, self.alpha = check_focal_params(gamma, alpha)
        self.alpha_weighted_poly = bool(alpha_weighted_poly)
        self.epsilons = check_epsilons(epsilons, allow_negative_loss, alpha=self.alpha,
                                       alpha_weighted_poly=self.alpha_weighted_poly)
        check_reduction(reduction, None)
        self.reduction = reduction
        self.loss_weight = check_real('loss_weight', loss_weight)
        self.activated = bool(activated)
        self.allow_negative_loss = bool(allow_negative_loss)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the loss.

        Args:
            pred: logits (N, C), or any shape with a same-shape ``target``.
            target: class indices (N,) in [0, C] (C is background), or
                per-element targets in [0, 1] shaped like ``pred``.
            weight: per-element weight shaped like ``pred``, or (N,).
            avg_factor: divisor of the summed loss for 'mean'.
            reduction_override: overrides ``self.reduction`` when given.

        Returns:
            ``loss_weight`` times the reduced loss.
        """
        if reduction_override is not None:
            check_reduction(reduction_override, avg_factor, name='reduction_override')
        reduction = reduction_override or self.reduction
        loss = poly_focal_loss(
            pred, target, weight,
            epsilons=self.epsilons,
            gamma=self.gamma,
            alpha=self.alpha,
            alpha_weighted_poly=self.alpha_weighted_poly,
            activated=self.activated,
            reduction=reduction,
            avg_factor=avg_factor,
            allow_negative_loss=self.allow_negative_loss)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'gamma={self.gamma}, alpha={self.alpha}, {self._epsilon_repr()}, '
                f'alpha_weighted_poly={self.alpha_weighted_poly}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'activated={self.activated}, allow_negative_loss={self.allow_negative_loss}')

    def _epsilon_repr(self) -> str:
        return f'epsilons={self.epsilons}'


@MODELS.register_module()
class Poly1FocalLoss(PolyNFocalLoss):
    r"""Sigmoid Poly-1 focal loss: ``FL + epsilon * alpha_t * (1 - p_t)^(gamma + 1)``.

    ``PolyNFocalLoss`` with ``epsilons=(epsilon,)``; ``epsilon=0`` is mmdet's
    ``FocalLoss`` and ``epsilon=-1`` drops the leading polynomial term. The
    other arguments are those of :class:`PolyNFocalLoss`.
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
                 allow_negative_loss: bool = False) -> None:
        super().__init__(
            use_sigmoid=use_sigmoid,
            gamma=gamma,
            alpha=alpha,
            epsilons=(check_real('epsilon', epsilon),),
            alpha_weighted_poly=alpha_weighted_poly,
            reduction=reduction,
            loss_weight=loss_weight,
            activated=activated,
            allow_negative_loss=allow_negative_loss)

    @property
    def epsilon(self) -> float:
        return self.epsilons[0]

    def _epsilon_repr(self) -> str:
        return f'epsilon={self.epsilon}'
