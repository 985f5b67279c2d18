"""The sampling-free focal heads against mmdet3d's own heads with mmdet's FocalLoss."""
import copy
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch

from mmdet3d_required import import_mmdet3d

mmdet3d = import_mmdet3d()

from mmdet3d.models.dense_heads import Anchor3DHead, FreeAnchor3DHead  # noqa: E402
from mmdet3d.registry import MODELS  # noqa: E402
from mmdet3d.structures import LiDARInstance3DBoxes  # noqa: E402
from mmdet3d.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from mmdet_polyloss.det3d import heads  # noqa: E402

MMDET3D_CONFIGS = Path(mmdet3d.__file__).parent / '.mim' / 'configs'
#: (mmdet3d config, where its anchor head sits, its train/test settings key, feature size)
HEAD_CASES = {
    'Anchor3DHead': ('pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py',
                     'bbox_head', None, 8),
    'ShapeAwareHead': ('ssn/ssn_hv_secfpn_sbn-all_16xb2-2x_nus-3d.py',
                       'pts_bbox_head', 'pts', 16),
    'PartA2RPNHead': ('parta2/parta2_hv_secfpn_8xb2-cyclic-80e_kitti-3d-car.py',
                      'rpn_head', 'rpn', 8),
}
POLY_HEAD = {'Anchor3DHead': 'PolyFocalAnchor3DHead', 'ShapeAwareHead': 'PolyFocalShapeAwareHead',
             'PartA2RPNHead': 'PolyFocalPartA2RPNHead'}
#: The loss key of each mmdet3d head's classification loss.
CLS_KEY = {'Anchor3DHead': 'loss_cls', 'ShapeAwareHead': 'loss_cls',
           'PartA2RPNHead': 'loss_rpn_cls'}


@pytest.fixture(scope='module', autouse=True)
def _registries():
    register_all_modules()


def head_config(base: str) -> Dict[str, Any]:
    """mmdet3d's own head config, with its train and test settings, for ``base``."""
    path, key, stage, _ = HEAD_CASES[base]
    model = Config.fromfile(str(MMDET3D_CONFIGS / path)).model
    cfg = copy.deepcopy(model[key]).to_dict()
    train_cfg, test_cfg = model.train_cfg, model.test_cfg
    cfg.update(train_cfg=train_cfg[stage] if stage else train_cfg,
               test_cfg=test_cfg[stage] if stage else test_cfg)
    assert cfg['type'] == base and cfg['loss_cls']['type'] == 'mmdet.FocalLoss'
    return cfg


def build(cfg: Dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg))


def focal_and_poly(base: str, **poly_loss: Any) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """mmdet3d's head with mmdet's FocalLoss, and ours with ``poly_loss`` swapped in
    (same weights)."""
    theirs_cfg = head_config(base)
    ours_cfg = copy.deepcopy(theirs_cfg)
    ours_cfg['type'] = POLY_HEAD[base]
    ours_cfg['loss_cls'].update(poly_loss)
    theirs, ours = build(theirs_cfg), build(ours_cfg)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def flatten(nested: Any) -> List[torch.Tensor]:
    """The tensors of a nested list (ShapeAwareHead's anchors are per level and range)."""
    if isinstance(nested, torch.Tensor):
        return [nested]
    return [t for item in nested for t in flatten(item)]


def synthetic_batch(head: torch.nn.Module, base: str, batch: int = 2, seed: int = 0
                    ) -> Tuple[torch.Tensor, List[InstanceData], List[dict]]:
    """Features, and boxes on jittered anchors (so some anchors are positive),
    labelled with the class whose anchor size they have."""
    gen = torch.Generator().manual_seed(seed)
    size = HEAD_CASES[base][3]
    feats = torch.randn(batch, head.in_channels, size, size, generator=gen)
    metas = [dict(box_type_3d=LiDARInstance3DBoxes) for _ in range(batch)]
    head(tuple([feats]))  # ShapeAwareHead learns its feature sizes in forward
    sizes = getattr(head, 'featmap_sizes', None) or [(size, size)]
    anchors = torch.cat([a.reshape(-1, a.shape[-1]) for a in
                         flatten(head.get_anchors(sizes, metas, device='cpu')[0])])
    class_sizes = torch.tensor(head.prior_generator.sizes, dtype=torch.float32)
    instances = []
    for _ in range(batch):
        picked = anchors[torch.randint(len(anchors), (6,), generator=gen)].clone()
        picked[:, :3] += 0.05 * torch.randn(len(picked), 3, generator=gen)
        labels = torch.cdist(picked[:, 3:6], class_sizes).argmin(1)
        instances.append(InstanceData(
            bboxes_3d=LiDARInstance3DBoxes(picked, box_dim=picked.shape[1]),
            labels_3d=labels % head.num_classes))
    return feats, instances, metas


def head_losses(head: torch.nn.Module, feats: torch.Tensor, instances: List[InstanceData],
                metas: List[dict]) -> Tuple[Dict[str, List[torch.Tensor]], torch.Tensor]:
    """The head's loss dict and the gradient of their sum with respect to the features."""
    feats = feats.clone().requires_grad_(True)
    losses = head.loss_by_feat(*head(tuple([feats])), copy.deepcopy(instances), metas)
    total = sum(sum(v) for v in losses.values())
    (grad,) = torch.autograd.grad(total, feats)
    return losses, grad


def record_avg_factors(head: torch.nn.Module) -> List[float]:
    factors: List[float] = []
    head.loss_cls.register_forward_pre_hook(
        lambda module, args, kwargs: factors.append(float(kwargs['avg_factor'])), with_kwargs=True)
    return factors


@pytest.mark.parametrize('base', list(HEAD_CASES))
@pytest.mark.parametrize('loss', [dict(type='mmdet.Poly1FocalLoss', epsilon=0.0),
                                  dict(type='mmdet.PolyNFocalLoss', epsilons=[0.0, 0.0]),
                                  dict()],
                         ids=['poly1-eps0', 'polyn-eps0', 'mmdet-focal'])
def test_head_losses_equal_mmdet3d_focal_head(base: str, loss: Dict[str, Any]):
    """At epsilon 0 (and with mmdet's FocalLoss itself) every loss of the head and
    the gradient are mmdet3d's own head's with mmdet.FocalLoss."""
    theirs, ours = focal_and_poly(base, **loss)
    batch = synthetic_batch(theirs, base)
    their_losses, their_grad = head_losses(theirs, *batch)
    our_losses, our_grad = head_losses(ours, *batch)
    assert their_losses.keys() == our_losses.keys()
    for key in their_losses:
        torch.testing.assert_close(torch.stack(our_losses[key]),
                                   torch.stack(their_losses[key]), rtol=1e-5, atol=1e-7)
    assert torch.stack(their_losses[CLS_KEY[base]]).sum() > 0
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-8)
    assert not ours.sampling and not theirs.sampling


@pytest.mark.parametrize('base', list(HEAD_CASES))
def test_poly1_is_averaged_over_the_positive_anchors(base: str):
    """At epsilon -1 the loss changes but the divisor stays FocalLoss's: the
    positive anchors of the batch."""
    theirs, ours = focal_and_poly(base, type='mmdet.Poly1FocalLoss', epsilon=-1.0)
    batch = synthetic_batch(theirs, base, seed=1)
    their_factors, our_factors = record_avg_factors(theirs), record_avg_factors(ours)
    their_losses, _ = head_losses(theirs, *batch)
    our_losses, _ = head_losses(ours, *batch)
    assert our_factors == their_factors and their_factors[0] >= 1
    # The positives, counted independently from the targets mmdet3d assigns.
    labels = theirs.anchor_target_3d(
        theirs.get_anchors(getattr(theirs, 'featmap_sizes', None) or
                           [(HEAD_CASES[base][3],) * 2], batch[2], device='cpu'),
        copy.deepcopy(batch[1]), batch[2], num_classes=theirs.num_classes,
        label_channels=theirs.num_classes, sampling=False)[0]
    positives = sum(int(((lab >= 0) & (lab < theirs.num_classes)).sum()) for lab in labels)
    assert their_factors[0] == positives
    key = CLS_KEY[base]
    assert not torch.allclose(torch.stack(our_losses[key]), torch.stack(their_losses[key]))
    for other in set(their_losses) - {key}:  # box and direction losses untouched
        torch.testing.assert_close(torch.stack(our_losses[other]),
                                   torch.stack(their_losses[other]))


def test_mmdet3d_own_head_fails_with_a_poly_loss():
    """The failure the heads here fix: mmdet3d decides sampling by the type string."""
    cfg = head_config('Anchor3DHead')
    cfg['loss_cls']['type'] = 'mmdet.Poly1FocalLoss'
    with pytest.raises(AttributeError, match='sampler'):
        build(cfg)
    cfg['train_cfg']['sampler'] = dict(type='mmdet.PseudoSampler')
    assert build(cfg).sampling  # with a sampler: the wrong divisor, silently


def test_head_refuses_a_sampler_with_a_focal_loss():
    cfg = head_config('Anchor3DHead')
    cfg['type'] = 'PolyFocalAnchor3DHead'
    cfg['train_cfg']['sampler'] = dict(type='mmdet.RandomSampler', num=256, pos_fraction=0.5)
    for loss_type in ('mmdet.Poly1FocalLoss', 'mmdet.FocalLoss'):
        cfg['loss_cls']['type'] = loss_type
        with pytest.raises(ValueError, match=r"train_cfg has sampler=\{'type': 'mmdet.Rand"):
            build(cfg)
    cfg['train_cfg']['sampler'] = None  # an explicit "no sampler" is no sampler
    assert build(cfg).sampling is False


def test_head_refuses_a_loss_config_without_use_sigmoid():
    """mmdet3d's head reads use_sigmoid from the config (default False): without it the
    classifier got num_classes + 1 outputs (PointPillars: 24 instead of 18), the
    background a class the sigmoid loss trained as real."""
    cfg = head_config('Anchor3DHead')
    cfg['type'] = 'PolyFocalAnchor3DHead'
    cfg['loss_cls'] = dict(type='mmdet.Poly1FocalLoss', epsilon=-1.0)
    with pytest.raises(ValueError, match='PolyFocalAnchor3DHead with loss_cls Poly1FocalLoss: '
                       'the loss_cls config needs use_sigmoid=True'):
        build(cfg)
    cfg['loss_cls']['use_sigmoid'] = True
    assert build(cfg).num_classes == 3


def test_head_refuses_a_loss_that_is_not_focal():
    cfg = head_config('Anchor3DHead')
    cfg['type'] = 'PolyFocalAnchor3DHead'
    cfg['loss_cls'] = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
    with pytest.raises(TypeError, match="focal-type loss_cls .* got CrossEntropyLoss; for a "
                                        "sampled loss use mmdet3d's own head"):
        build(cfg)


def test_head_builds_without_train_settings():
    """Testing only (train_cfg None): no sampler to refuse, sampling still off."""
    cfg = head_config('Anchor3DHead')
    cfg.update(type='PolyFocalAnchor3DHead', train_cfg=None)
    cfg['loss_cls']['type'] = 'mmdet.Poly1FocalLoss'
    head = build(cfg)
    assert type(head) is heads.PolyFocalAnchor3DHead and head.sampling is False


def test_mixin_refuses_a_head_it_does_not_cover():
    with pytest.raises(TypeError, match='Free.* computes its losses elsewhere'):
        type('PolyFocalFreeAnchor3DHead', (heads.FocalSamplingFreeMixin, FreeAnchor3DHead), {})

    def loss_by_feat(self, *args):  # a head of one's own that replaces the loss code
        return {}

    with pytest.raises(TypeError, match='MyHead: FocalSamplingFreeMixin covers'):
        type('MyHead', (heads.FocalSamplingFreeMixin, Anchor3DHead),
             {'loss_by_feat': loss_by_feat})
    with pytest.raises(TypeError, match='computes its losses elsewhere'):
        type('NotAHead', (heads.FocalSamplingFreeMixin, torch.nn.Module), {})
