"""The configs in configs/: they load, build, and change only what they say."""
import copy
import re
from pathlib import Path
from typing import Any, Dict

import pytest
from mmengine.config import Config

import mmdet
import mmdet_polyloss  # noqa: F401  (registers the losses)
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
MMDET_CONFIGS = Path(mmdet.__file__).parent / '.mim' / 'configs'
ALL_CONFIGS = sorted(CONFIG_DIR.rglob('*.py'))
COCO_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name != 'demo' and
                '_base_' not in p.parts]
POLY_COCO_CONFIGS = [p for p in COCO_CONFIGS if 'poly1' in p.name]
BASELINE_COCO_CONFIGS = [p for p in COCO_CONFIGS if 'poly1' not in p.name]
DEMO_FOCAL = CONFIG_DIR / 'demo' / 'retinanet_tiny_fpn_focal_shapes.py'
DEMO_POLY = CONFIG_DIR / 'demo' / 'retinanet_tiny_fpn_poly1-eps-1_shapes.py'
CUSTOM_IMPORTS = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)


def _ids(paths):
    return [str(p.relative_to(CONFIG_DIR)) for p in paths]


def _mmdet_base(path: Path) -> Path:
    """The mmdet config a project config names in ``_base_ = 'mmdet::...'``."""
    match = re.search(r"_base_ = 'mmdet::([^']+)'", path.read_text())
    assert match, f'{path} does not inherit an mmdet:: config'
    return MMDET_CONFIGS / match.group(1)


def _strip_mmdet_scope(node: Any) -> Any:
    """Drop the ``_scope_='mmdet'`` keys mmengine adds to dicts inherited
    through ``mmdet::``; mmdet's configs build in that scope anyway."""
    if isinstance(node, dict):
        return {
            k: _strip_mmdet_scope(v)
            for k, v in node.items()
            if not (k == '_scope_' and v == 'mmdet')
        }
    if isinstance(node, (list, tuple)):
        return type(node)(_strip_mmdet_scope(v) for v in node)
    return node


def _resolved(path: Path) -> Dict[str, Any]:
    cfg = Config.fromfile(str(path)).to_dict()
    assert cfg.get('default_scope') == 'mmdet'
    return _strip_mmdet_scope(cfg)


def test_expected_sweep_is_present():
    names = {p.name for p in COCO_CONFIGS}
    assert names >= {
        'retinanet_r50_fpn_1x_coco.py',
        'retinanet_r50_fpn_poly1-eps-1_1x_coco.py',
        'retinanet_r50_fpn_poly1-eps-0.5_1x_coco.py',
        'retinanet_r50_fpn_poly1-eps+0.5_1x_coco.py',
        'retinanet_r50_fpn_poly1-eps+1_1x_coco.py',
        'retinanet_r50_fpn_poly1-eps-1-noalpha_1x_coco.py',
        'fcos_r50-caffe_fpn_gn-head_1x_coco.py',
        'fcos_r50-caffe_fpn_gn-head_poly1-eps-1_1x_coco.py',
        'atss_r50_fpn_1x_coco.py',
        'atss_r50_fpn_poly1-eps-1_1x_coco.py',
    }


@pytest.mark.parametrize(
    'path', POLY_COCO_CONFIGS, ids=_ids(POLY_COCO_CONFIGS))
def test_poly_config_equals_mmdet_but_for_the_loss(path: Path):
    ours = _resolved(path)
    theirs = _resolved(_mmdet_base(path))
    # The loss: mmdet's loss_cls with the type swapped and epsilon added.
    eps = float(re.search(r'poly1-eps([+-][0-9.]+?)(-noalpha)?_', path.name)
                .group(1))
    weighted = '-noalpha' not in path.name
    expected_loss = dict(theirs['model']['bbox_head']['loss_cls'],
                         type='Poly1FocalLoss', epsilon=eps)
    if not weighted:
        expected_loss['alpha_weighted_poly'] = False
    assert theirs['model']['bbox_head']['loss_cls']['type'] == 'FocalLoss'
    assert ours['model']['bbox_head']['loss_cls'] == expected_loss
    assert ours['custom_imports'] == CUSTOM_IMPORTS
    # Everything else: identical to mmdet's resolved config.
    for cfg in (ours, theirs):
        del cfg['model']['bbox_head']['loss_cls']
    ours.pop('custom_imports')
    assert ours == theirs


@pytest.mark.parametrize(
    'path', BASELINE_COCO_CONFIGS, ids=_ids(BASELINE_COCO_CONFIGS))
def test_baseline_config_is_mmdet_unchanged(path: Path):
    assert _resolved(path) == _resolved(_mmdet_base(path))
    assert _resolved(path)['model']['bbox_head']['loss_cls'][
        'type'] == 'FocalLoss'


def test_coco_retinanet_schedule_is_the_papers_baseline():
    """What docs/reproduction.md promises: 8x2 images, SGD 0.01, 12 epochs."""
    cfg = Config.fromfile(
        str(CONFIG_DIR / 'retinanet' /
            'retinanet_r50_fpn_poly1-eps-1_1x_coco.py'))
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'


def test_demo_configs_differ_only_in_the_loss():
    focal, poly = _resolved(DEMO_FOCAL), _resolved(DEMO_POLY)
    focal_loss = focal['model']['bbox_head'].pop('loss_cls')
    poly_loss = poly['model']['bbox_head'].pop('loss_cls')
    assert focal == poly
    assert focal_loss['type'] == 'FocalLoss'
    assert poly_loss == dict(focal_loss, type='Poly1FocalLoss', epsilon=-1.0,
                             alpha_weighted_poly=True)


def test_demo_config_is_small_and_untrained():
    cfg = Config.fromfile(str(DEMO_POLY))
    assert cfg.model.backbone.init_cfg is None  # no download
    assert cfg.img_scale == (128, 128)
    assert cfg.data_root == 'data/polyloss_shapes/'
    # The sweep report needs recall figures from CocoMetric.
    assert 'AR@100' in cfg.val_evaluator.metric_items
    assert cfg.test_evaluator == cfg.val_evaluator


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_config_builds_its_model(path: Path):
    register_all_modules()
    cfg = Config.fromfile(str(path))
    model_cfg = copy.deepcopy(cfg.model)
    model = MODELS.build(model_cfg)
    loss_cfg = cfg.model.bbox_head.loss_cls
    loss = model.bbox_head.loss_cls
    assert type(loss).__name__ == loss_cfg.type
    assert (loss.gamma, loss.alpha) == (loss_cfg.gamma, loss_cfg.alpha)
    if loss_cfg.type == 'Poly1FocalLoss':
        assert loss.epsilon == loss_cfg.epsilon
        assert loss.alpha_weighted_poly == loss_cfg.get(
            'alpha_weighted_poly', True)
    # Sigmoid classification: one output channel per class, no background.
    assert model.bbox_head.cls_out_channels == cfg.model.bbox_head.num_classes
