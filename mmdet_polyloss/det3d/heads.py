"""mmdet3d's anchor heads with the focal-loss rule decided by the loss's class.

mmdet3d's ``Anchor3DHead.__init__`` turns sampling off only when the config's
loss type *string* is ``'mmdet.FocalLoss'`` or ``'mmdet.GHMC'``. Without a
sampler the classification loss of a batch is

    loss_cls = sum_{anchors a, classes c} w_a * l(x_ac, t_ac) / N_pos

(``N_pos`` the positive anchors of the batch); with one, the divisor is
positives plus sampled negatives. Any other focal loss, ``'mmdet.Poly1FocalLoss'``
included, is sent down the sampling path: an ``AttributeError`` for a
``train_cfg`` without ``sampler`` (mmdet3d's PointPillars and SECOND configs),
a silently rescaled loss for one with it.

The heads here are mmdet3d's own with one change: after mmdet3d has built the
loss, sampling is switched off because the *built loss* is focal-type
(:data:`FOCAL_TYPE_LOSSES`), before the sampler would be built. Everything else
(targets, the three losses, prediction) is mmdet3d's code. A config names the
head explicitly (``type='PolyFocalAnchor3DHead'``); nothing in mmdet3d changes.
"""
from typing import Any, Mapping, Optional, Tuple, Type

from mmdet.models.losses import GHMC, FocalLoss
from mmdet3d.models.dense_heads import Anchor3DHead, PartA2RPNHead, ShapeAwareHead
from mmdet3d.registry import MODELS
from torch import nn

from ..losses import PolyNFocalLoss

#: Classification losses a head here takes: normalised by the positive anchors,
#: no sampler. mmdet's FocalLoss and GHMC (mmdet3d's own list) and the Poly
#: focal losses (``Poly1FocalLoss`` is a ``PolyNFocalLoss``).
FOCAL_TYPE_LOSSES: Tuple[Type[nn.Module], ...] = (FocalLoss, GHMC, PolyNFocalLoss)

#: mmdet3d heads whose loss code reads the sampling decision only through
#: ``Anchor3DHead``'s targets and divisor (checked in mmdet3d 1.4.0's source):
#: the PointPillars / SECOND head, SSN's shape-aware head, Part-A2's RPN head.
COVERED_HEADS: Tuple[Type[Anchor3DHead], ...] = (Anchor3DHead, ShapeAwareHead, PartA2RPNHead)


def check_focal_head_setup(head: str, loss_cls: nn.Module, train_cfg: Optional[Any],
                           use_sigmoid_cls: bool = True) -> None:
    """Refuse a setup in which a sampling-free focal head would be wrong.

    Args:
        head: the head's class name, for the message.
        loss_cls: the built classification loss.
        train_cfg: the head's training settings (None when only testing).
        use_sigmoid_cls: what the head read from the ``loss_cls`` config's
            ``use_sigmoid`` (mmdet3d's default: False).

    Raises:
        TypeError: ``loss_cls`` is not focal-type (use mmdet3d's own head).
        ValueError: ``train_cfg`` names a ``sampler``: a focal-type loss is
            averaged over the positive anchors, a sampler would change that.
            Or the config leaves ``use_sigmoid`` out: the head then gives its
            classifier one output more (the background as a class), which a
            sigmoid loss takes as a real class.
    """
    if not isinstance(loss_cls, FOCAL_TYPE_LOSSES):
        names = ', '.join(cls.__name__ for cls in FOCAL_TYPE_LOSSES)
        raise TypeError(
            f'{head} takes a focal-type loss_cls ({names}), got {type(loss_cls).__name__}; '
            f'for a sampled loss use mmdet3d\'s own head')
    if not use_sigmoid_cls:
        raise ValueError(
            f'{head} with loss_cls {type(loss_cls).__name__}: the loss_cls config needs '
            'use_sigmoid=True; the head reads that key (default False) and would give its '
            'classifier num_classes + 1 outputs, the background as a class')
    sampler = None if train_cfg is None else train_cfg.get('sampler')
    if sampler is not None:  # sampler=None: no sampler, as mmdet3d's focal configs have it
        shown = dict(sampler) if isinstance(sampler, Mapping) else sampler
        raise ValueError(
            f'{head} with loss_cls {type(loss_cls).__name__} samples no anchors and averages '
            f'the classification loss over the positive anchors, but train_cfg has '
            f'sampler={shown!r}; remove it (with a sampler the divisor would be positives '
            f'plus sampled negatives)')


class FocalSamplingFreeMixin:
    """Switches an mmdet3d anchor head's sampling off for a focal-type loss.

    Put it before a class of :data:`COVERED_HEADS`. ``Anchor3DHead.__init__``
    builds ``loss_cls`` and then calls ``_init_assigner_sampler``; the override
    checks the setup (:func:`check_focal_head_setup`) and sets
    ``sampling = False`` first, so a ``PseudoSampler`` is built and the
    classification loss is divided by the positive anchors, as for
    ``mmdet.FocalLoss``.
    """

    loss_cls: nn.Module
    train_cfg: Optional[Any]
    sampling: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        covered = {head.loss_by_feat for head in COVERED_HEADS}
        if not issubclass(cls, Anchor3DHead) or cls.loss_by_feat not in covered:
            names = ', '.join(head.__name__ for head in COVERED_HEADS)
            raise TypeError(
                f'{cls.__name__}: {FocalSamplingFreeMixin.__name__} covers the loss code of '
                f'{names}; {cls.__name__} computes its losses elsewhere '
                f'(loss_by_feat={getattr(cls, "loss_by_feat", None)!r})')

    def _init_assigner_sampler(self) -> None:
        check_focal_head_setup(type(self).__name__, self.loss_cls, self.train_cfg,
                               getattr(self, 'use_sigmoid_cls', True))
        self.sampling = False
        super()._init_assigner_sampler()  # type: ignore[misc]


@MODELS.register_module()
class PolyFocalAnchor3DHead(FocalSamplingFreeMixin, Anchor3DHead):
    """mmdet3d's ``Anchor3DHead`` (PointPillars, SECOND) taking any focal-type
    ``loss_cls`` (e.g. ``'mmdet.Poly1FocalLoss'``) as it takes ``'mmdet.FocalLoss'``."""


@MODELS.register_module()
class PolyFocalShapeAwareHead(FocalSamplingFreeMixin, ShapeAwareHead):
    """mmdet3d's ``ShapeAwareHead`` (SSN) taking any focal-type ``loss_cls``."""


@MODELS.register_module()
class PolyFocalPartA2RPNHead(FocalSamplingFreeMixin, PartA2RPNHead):
    """mmdet3d's ``PartA2RPNHead`` taking any focal-type ``loss_cls``."""
