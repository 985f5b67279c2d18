"""Poly1CrossEntropyLoss in the RoI box classifier of mmdet's Mask R-CNN."""
from pathlib import Path
from typing import Dict

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

CONFIG = (Path(__file__).resolve().parents[2] / 'configs' / 'mask_rcnn' /
          'mask-rcnn_r50_fpn_poly1-eps-1_1x_coco.py')


@pytest.fixture(scope='module')
def mask_rcnn():
    """The project's Poly-1 Mask R-CNN config, without pretrained weights."""
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))  # runs custom_imports
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def _losses(model, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Losses on a fixed batch; the seed fixes the RoI sampler's draw."""
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, 128, 160), num_items=[3, 4],
                            num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    torch.manual_seed(seed)
    return model.loss(data['inputs'], data['data_samples'])


def test_forward_backward_reaches_the_roi_classifier(mask_rcnn):
    head = mask_rcnn.roi_head.bbox_head
    assert type(head.loss_cls).__name__ == 'Poly1CrossEntropyLoss'
    assert head.loss_cls.epsilon == -1.0 and not head.loss_cls.use_sigmoid
    mask_rcnn.zero_grad()
    losses = _losses(mask_rcnn)
    assert torch.isfinite(losses['loss_cls']) and losses['loss_cls'] > 0
    total, _ = mask_rcnn.parse_losses(losses)  # the runner's sum of every loss
    total.backward()
    for param in (head.fc_cls.weight, head.shared_fcs[0].weight):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0


def test_epsilon_zero_matches_cross_entropy_inside_the_head(mask_rcnn):
    """Same weights, batch and RoI sample: Poly-1 CE at epsilon 0 is mmdet's
    CrossEntropyLoss; at epsilon -1 it is smaller by the mean of 1 - p_y."""
    head = mask_rcnn.roi_head.bbox_head
    original = head.loss_cls
    try:
        with torch.no_grad():
            head.loss_cls = MODELS.build(dict(type='CrossEntropyLoss', use_sigmoid=False,
                                              loss_weight=1.0))
            ce = _losses(mask_rcnn)['loss_cls']
            head.loss_cls = MODELS.build(dict(type='Poly1CrossEntropyLoss', epsilon=0.0))
            poly0 = _losses(mask_rcnn)['loss_cls']
            head.loss_cls = MODELS.build(dict(type='Poly1CrossEntropyLoss', epsilon=-1.0))
            poly_minus1 = _losses(mask_rcnn)['loss_cls']
    finally:
        head.loss_cls = original
    torch.testing.assert_close(poly0, ce, rtol=1e-6, atol=1e-7)
    assert 0 < poly_minus1 < ce
