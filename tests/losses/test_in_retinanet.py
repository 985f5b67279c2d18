"""Poly1FocalLoss inside mmdet's own RetinaNet R50-FPN config, on a synthetic batch."""
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

USER_CONFIG = """
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)
model = dict(
    backbone=dict(init_cfg=None),  # no pretrained weights (no network)
    bbox_head=dict(loss_cls=dict(
        _delete_=True, type='Poly1FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
        epsilon=-1.0, loss_weight=1.0)))
"""


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory):
    """RetinaNet from a user config that swaps only loss_cls, as the README says."""
    register_all_modules()
    path = Path(tmp_path_factory.mktemp('cfg')) / 'retinanet_poly1.py'
    path.write_text(USER_CONFIG)
    cfg = Config.fromfile(str(path))  # runs custom_imports
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def _losses(model):
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, 160, 192), num_items=[3, 5],
                            num_classes=80)
    data = model.data_preprocessor(packed, True)
    return model.loss(data['inputs'], data['data_samples'])


def test_forward_backward_reaches_the_classification_head(retinanet):
    assert type(retinanet.bbox_head.loss_cls).__name__ == 'Poly1FocalLoss'
    assert retinanet.bbox_head.cls_out_channels == 80  # sized by use_sigmoid=True
    retinanet.zero_grad()
    losses = _losses(retinanet)
    loss_cls = sum(losses['loss_cls'])
    assert torch.isfinite(loss_cls) and loss_cls > 0
    (loss_cls + sum(losses['loss_bbox'])).backward()
    cls_grad = retinanet.bbox_head.retina_cls.weight.grad
    assert cls_grad is not None and torch.isfinite(cls_grad).all() and cls_grad.abs().sum() > 0
    # ...and on through the FPN into the backbone (the residual branches start
    # with zero-initialised BN, so look at a downsample projection).
    for param in (retinanet.neck.lateral_convs[-1].conv.weight,
                  retinanet.backbone.layer4[0].downsample[0].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_epsilon_zero_matches_focal_loss_inside_the_head(retinanet):
    """Same weights, same batch: the head's labels, label_weights and avg_factor
    go through Poly1FocalLoss(epsilon=0) and mmdet's FocalLoss identically."""
    original = retinanet.bbox_head.loss_cls
    common = dict(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
    try:
        with torch.no_grad():
            retinanet.bbox_head.loss_cls = MODELS.build(dict(type='FocalLoss', **common))
            focal = _losses(retinanet)['loss_cls']
            retinanet.bbox_head.loss_cls = MODELS.build(
                dict(type='Poly1FocalLoss', epsilon=0.0, **common))
            poly0 = _losses(retinanet)['loss_cls']
            retinanet.bbox_head.loss_cls = MODELS.build(
                dict(type='Poly1FocalLoss', epsilon=-1.0, **common))
            poly_minus1 = _losses(retinanet)['loss_cls']
    finally:
        retinanet.bbox_head.loss_cls = original
    for a, b in zip(poly0, focal, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # epsilon -1 subtracts a positive term: strictly smaller at every level.
    assert all(p < f for p, f in zip(poly_minus1, focal, strict=True))
