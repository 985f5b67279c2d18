"""The configs in configs/: they load, build, and change only what they say."""
import copy
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import mmdet
import pytest
import torch
from mmdet.registry import HOOKS, MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmdet_polyloss  # noqa: F401  (registers the losses)
from mmdet_polyloss.engine.hooks import AtomicCheckpointHook

from train_helpers import resolved_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / 'configs'
MMDET_CONFIGS = Path(mmdet.__file__).parent / '.mim' / 'configs'
#: mmdet3d's configs (their own test: tests/det3d/test_configs_3d.py).
MMDET3D_DIRS = ('pointpillars',)
ALL_CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py')
                     if p.relative_to(CONFIG_DIR).parts[0] not in MMDET3D_DIRS)
#: Configs with their own recipe rather than mmdet's: the shapes demo and the
#: tree-crown benchmark (checked below, not against mmdet's configs).
OWN_RECIPE_DIRS = ('demo', 'trees')
COCO_CONFIGS = [p for p in ALL_CONFIGS if p.parent.name not in OWN_RECIPE_DIRS and
                '_base_' not in p.parts]
POLY_COCO_CONFIGS = [p for p in COCO_CONFIGS if 'poly1' in p.name]
BASELINE_COCO_CONFIGS = [p for p in COCO_CONFIGS if 'poly1' not in p.name]
DEMO_FOCAL = CONFIG_DIR / 'demo' / 'retinanet_tiny_fpn_focal_shapes.py'
DEMO_POLY = CONFIG_DIR / 'demo' / 'retinanet_tiny_fpn_poly1-eps-1_shapes.py'
TREES_FOCAL = CONFIG_DIR / 'trees' / 'retinanet_tiny_fpn_focal_trees.py'
TREES_POLY = CONFIG_DIR / 'trees' / 'retinanet_tiny_fpn_poly1-eps-1_trees.py'
PRETRAINED_FOCAL = CONFIG_DIR / 'trees' / 'retinanet_mobilenetv2_fpn_focal_trees.py'
PRETRAINED_POLY = CONFIG_DIR / 'trees' / 'retinanet_mobilenetv2_fpn_poly1-eps-1_trees.py'
#: The configs one trains: every file but the demo's shared base.
RUN_CONFIGS = [p for p in ALL_CONFIGS if '_base_' not in p.parts]
CUSTOM_IMPORTS = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)
ATOMIC_HOOK = 'AtomicCheckpointHook'
#: mmdet's classification loss -> the Poly-1 loss a config swaps in for it.
POLY_OF = {'FocalLoss': 'Poly1FocalLoss',
           'CrossEntropyLoss': 'Poly1CrossEntropyLoss'}


def _ids(paths):
    return [str(p.relative_to(CONFIG_DIR)) for p in paths]


def _mmdet_base(path: Path) -> Path:
    """The mmdet config a project config names in ``_base_ = 'mmdet::...'``."""
    match = re.search(r"_base_ = 'mmdet::([^']+)'", path.read_text())
    assert match, f'{path} does not inherit an mmdet:: config'
    return MMDET_CONFIGS / match.group(1)


def _classifier_path(model: Dict[str, Any]) -> Tuple[str, ...]:
    """Where the box classifier's loss sits: the RoI head's bbox head in
    two-stage models, else the dense head."""
    if 'roi_head' in model:
        return ('roi_head', 'bbox_head', 'loss_cls')
    return ('bbox_head', 'loss_cls')


def _get(node: Any, path: Tuple[str, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _resolved(path: Path) -> Dict[str, Any]:
    return resolved_config(path, 'mmdet')


def _take_project_changes(ours: Dict[str, Any], theirs: Dict[str, Any]) -> None:
    """Check and undo, in ``ours``, the two settings every project config adds
    to mmdet's: ``custom_imports`` and the checkpoint hook's type."""
    assert ours.pop('custom_imports', None) == CUSTOM_IMPORTS
    assert theirs['default_hooks']['checkpoint']['type'] == 'CheckpointHook'
    hook = ours['default_hooks']['checkpoint']
    assert hook['type'] == ATOMIC_HOOK
    hook['type'] = 'CheckpointHook'


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
        'mask-rcnn_r50_fpn_1x_coco.py',
        'mask-rcnn_r50_fpn_poly1-eps-1_1x_coco.py',
        'faster-rcnn_r50_fpn_1x_coco.py',
        'faster-rcnn_r50_fpn_poly1-eps-1_1x_coco.py',
    }


@pytest.mark.parametrize(
    'path', POLY_COCO_CONFIGS, ids=_ids(POLY_COCO_CONFIGS))
def test_poly_config_equals_mmdet_but_for_the_loss(path: Path):
    ours = _resolved(path)
    theirs = _resolved(_mmdet_base(path))
    slot = _classifier_path(theirs['model'])
    # The loss: mmdet's loss_cls with the type swapped and epsilon added.
    eps = float(re.search(r'poly1-eps([+-][0-9.]+?)(-noalpha)?_', path.name)
                .group(1))
    mmdet_loss = _get(theirs['model'], slot)
    expected_loss = dict(mmdet_loss, type=POLY_OF[mmdet_loss['type']],
                         epsilon=eps)
    if '-noalpha' in path.name:
        expected_loss['alpha_weighted_poly'] = False
        expected_loss['allow_negative_loss'] = True  # that form goes negative at -1
    assert _get(ours['model'], slot) == expected_loss
    # Everything else but the checkpoint hook: identical to mmdet's resolved config.
    for cfg in (ours, theirs):
        del _get(cfg['model'], slot[:-1])[slot[-1]]
    _take_project_changes(ours, theirs)
    assert ours == theirs


@pytest.mark.parametrize(
    'path', BASELINE_COCO_CONFIGS, ids=_ids(BASELINE_COCO_CONFIGS))
def test_baseline_config_is_mmdet_unchanged_but_for_the_checkpoint_hook(path: Path):
    ours, theirs = _resolved(path), _resolved(_mmdet_base(path))
    _take_project_changes(ours, theirs)
    assert ours == theirs
    assert _get(ours['model'], _classifier_path(ours['model']))['type'] \
        in POLY_OF


def test_project_changes_are_checked():
    """The comparison above fails on any other change, including one in the hook."""
    path = BASELINE_COCO_CONFIGS[0]
    ours, theirs = _resolved(path), _resolved(_mmdet_base(path))
    ours['default_hooks']['checkpoint']['max_keep_ckpts'] = 3
    _take_project_changes(ours, theirs)
    assert ours != theirs
    with pytest.raises(AssertionError):  # mmdet's own config lacks both changes
        _take_project_changes(copy.deepcopy(theirs), theirs)


@pytest.mark.parametrize('path', RUN_CONFIGS, ids=_ids(RUN_CONFIGS))
def test_every_config_saves_checkpoints_atomically(path: Path):
    register_all_modules()
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == CUSTOM_IMPORTS
    hook_cfg = cfg.default_hooks.checkpoint
    assert hook_cfg.type == ATOMIC_HOOK
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        hook = HOOKS.build(copy.deepcopy(hook_cfg))
    assert type(hook) is AtomicCheckpointHook
    assert hook.interval == hook_cfg.interval
    assert hook.max_keep_ckpts == hook_cfg.get('max_keep_ckpts', -1)


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


@pytest.mark.parametrize('focal_path, poly_path', [(DEMO_FOCAL, DEMO_POLY),
                                                   (TREES_FOCAL, TREES_POLY),
                                                   (PRETRAINED_FOCAL, PRETRAINED_POLY)],
                         ids=['demo', 'trees', 'trees-pretrained'])
def test_own_recipe_configs_differ_only_in_the_loss(focal_path: Path, poly_path: Path):
    focal, poly = _resolved(focal_path), _resolved(poly_path)
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
    model = MODELS.build(copy.deepcopy(cfg.model))
    slot = _classifier_path(cfg.model)
    loss_cfg = _get(cfg.model, slot)
    loss = model
    for name in slot:
        loss = getattr(loss, name)
    assert type(loss).__name__ == loss_cfg.type
    assert loss.use_sigmoid == loss_cfg.use_sigmoid
    if loss_cfg.type.startswith('Poly1'):
        assert loss.epsilon == loss_cfg.epsilon
    if loss_cfg.type == 'Poly1FocalLoss':
        assert loss.alpha_weighted_poly == loss_cfg.get(
            'alpha_weighted_poly', True)
    if 'Focal' in loss_cfg.type:
        assert (loss.gamma, loss.alpha) == (loss_cfg.gamma, loss_cfg.alpha)
        # Sigmoid classification: one channel per class, no background.
        assert model.bbox_head.cls_out_channels == \
            cfg.model.bbox_head.num_classes
    else:
        # Softmax RoI classifier: the classes plus background.
        head = model.roi_head.bbox_head
        assert head.fc_cls.out_features == head.num_classes + 1


#: One config per recipe (the Poly-1 configs differ from these in the loss alone).
RECIPE_CONFIGS = [p for p in RUN_CONFIGS if 'poly1' not in p.name]


@pytest.mark.parametrize('path', RECIPE_CONFIGS, ids=_ids(RECIPE_CONFIGS))
def test_every_trained_parameter_gets_a_gradient_or_ddp_is_told(path: Path):
    """DistributedDataParallel (tools/dist_train.sh, --launcher pytorch or slurm) stops at the
    second iteration when a parameter that requires grad got none, unless the config sets
    ``find_unused_parameters = True`` (as mmdet's MobileNetV2 YOLOv3 config does): one
    loss + backward on two images, single process, finds such parameters."""
    from mmdet.testing import demo_mm_inputs
    register_all_modules()
    cfg = Config.fromfile(str(path))
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))  # no init_weights: nothing to download
    model.train()
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, 128, 128), num_items=[3, 2],
                            num_classes=2, with_mask=True)
    for sample in packed['data_samples']:  # class 0: every config has one (trees: only one)
        sample.gt_instances.labels.zero_()
    data = model.data_preprocessor(packed, True)
    total, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    total.backward()
    unused = [name for name, parameter in model.named_parameters()
              if parameter.requires_grad and parameter.grad is None]
    if path == PRETRAINED_FOCAL:  # mmdet's MobileNetV2 always runs its last 1x1 conv
        assert unused == ['backbone.conv2.conv.weight']
    assert not unused or cfg.get('find_unused_parameters') is True, unused


def test_trees_config_is_small_untrained_and_reports_recall():
    cfg = Config.fromfile(str(TREES_POLY))
    assert cfg.model.backbone.init_cfg is None  # no download
    assert cfg.model.bbox_head.num_classes == 1
    assert cfg.metainfo.classes == ('tree', )
    assert cfg.data_root == 'data/polyloss_trees/'
    assert cfg.val_evaluator.ann_file == 'data/polyloss_trees/annotations/instances_val.json'
    assert 'AR@100' in cfg.val_evaluator.metric_items
    assert cfg.test_evaluator == cfg.val_evaluator


def test_pretrained_trees_config_is_the_tiny_recipe_but_for_the_backbone():
    """Same data, head, anchors, evaluation and schedule as the from-scratch trees recipe;
    mmdet's MobileNetV2 from the converted ImageNet weights, BN frozen."""
    tiny, pretrained = _resolved(TREES_FOCAL), _resolved(PRETRAINED_FOCAL)
    changed = {key for key in set(tiny) | set(pretrained) if tiny.get(key) != pretrained.get(key)}
    assert changed == {'model', 'optim_wrapper', 'pretrained', 'find_unused_parameters'}
    model_changed = {key for key in tiny['model'] if tiny['model'][key] != pretrained['model'][key]}
    assert model_changed == {'backbone', 'neck'}
    neck = dict(tiny['model']['neck'], in_channels=[32, 96, 320])
    assert pretrained['model']['neck'] == neck
    assert pretrained['optim_wrapper'] == dict(tiny['optim_wrapper'], paramwise_cfg=dict(
        custom_keys=dict(backbone=dict(lr_mult=0.1))))
    backbone = pretrained['model']['backbone']
    assert backbone['type'] == 'MobileNetV2'
    assert backbone['init_cfg'] == dict(type='Pretrained', checkpoint=(
        'data/pretrained/mobilenet_v2_imagenet_mmdet.pth'))
    assert backbone['norm_eval'] and not backbone['norm_cfg']['requires_grad']
