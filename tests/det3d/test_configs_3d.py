"""configs/pointpillars/: each is mmdet3d's own config but for the loss and the head type."""
import copy
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from mmdet3d_required import import_mmdet3d

mmdet3d = import_mmdet3d()

from mmdet3d.registry import MODELS  # noqa: E402
from mmdet3d.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from mmdet_polyloss import Poly1FocalLoss  # noqa: E402
from mmdet_polyloss.det3d import PolyFocalAnchor3DHead  # noqa: E402

from train_helpers import resolved_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / 'configs' / 'pointpillars'
MMDET3D_CONFIGS = Path(mmdet3d.__file__).parent / '.mim' / 'configs'
CONFIGS = sorted(CONFIG_DIR.glob('*.py'))
POLY_CONFIGS = [p for p in CONFIGS if 'poly1' in p.name]
BASELINE_CONFIGS = [p for p in CONFIGS if 'poly1' not in p.name]
CUSTOM_IMPORTS = dict(imports=['mmdet_polyloss.det3d'], allow_failed_imports=False)
IDS = {'ids': lambda p: p.name}


def mmdet3d_base(path: Path) -> Path:
    """The mmdet3d config ``path`` inherits, directly or through a config beside it."""
    text = path.read_text()
    if match := re.search(r"_base_ = './([^']+)'", text):
        return mmdet3d_base(path.parent / match.group(1))
    match = re.search(r"_base_ = 'mmdet3d::([^']+)'", text)
    assert match, f'{path} does not inherit an mmdet3d:: config'
    return MMDET3D_CONFIGS / match.group(1)


def head_key(model: Dict[str, Any]) -> str:
    """PointPillars' anchor head: ``bbox_head`` (KITTI), ``pts_bbox_head`` (Waymo)."""
    (key,) = [k for k in ('bbox_head', 'pts_bbox_head') if k in model]
    return key


def resolved(path: Path) -> Dict[str, Any]:
    return resolved_config(path, 'mmdet3d')


def ours_and_theirs(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Both resolved, with the two settings every project config adds checked and undone
    in ours: ``custom_imports`` and the checkpoint hook's type."""
    ours, theirs = resolved(path), resolved(mmdet3d_base(path))
    assert ours.pop('custom_imports') == CUSTOM_IMPORTS
    assert theirs['default_hooks']['checkpoint']['type'] == 'CheckpointHook'
    assert ours['default_hooks']['checkpoint']['type'] == 'mmdet.AtomicCheckpointHook'
    ours['default_hooks']['checkpoint']['type'] = 'CheckpointHook'
    return ours, theirs


def test_the_papers_settings_are_present():
    """KITTI car and 3-class, Waymo vehicle and 3-class: the baseline and the sweep's
    epsilons (-1, -0.5, +0.5, +1) each."""
    kitti = 'pointpillars_hv_secfpn{}_8xb6-160e_kitti-3d-{}.py'
    waymo = 'pointpillars_hv_secfpn_sbn-all{}_16xb2-2x_waymo-3d-{}.py'
    assert {p.name for p in CONFIGS} == {
        name.format(loss, classes) for name in (kitti, waymo)
        for loss in ('', '_poly1-eps-1', '_poly1-eps-0.5', '_poly1-eps+0.5', '_poly1-eps+1')
        for classes in ('car', '3class')}


@pytest.mark.parametrize('path', POLY_CONFIGS, **IDS)
def test_poly_config_equals_mmdet3d_but_for_loss_and_head_type(path: Path):
    ours, theirs = ours_and_theirs(path)
    key = head_key(theirs['model'])
    our_head, their_head = ours['model'].pop(key), theirs['model'].pop(key)
    assert their_head['type'] == 'Anchor3DHead' and our_head['type'] == 'PolyFocalAnchor3DHead'
    assert their_head['loss_cls']['type'] == 'mmdet.FocalLoss'
    eps = float(re.search(r'poly1-eps([+-][0-9.]+?)_', path.name).group(1))
    assert our_head.pop('loss_cls') == dict(their_head.pop('loss_cls'),
                                            type='mmdet.Poly1FocalLoss', epsilon=eps)
    our_head.pop('type'), their_head.pop('type')
    assert our_head == their_head
    assert ours == theirs


@pytest.mark.parametrize('path', BASELINE_CONFIGS, **IDS)
def test_baseline_config_is_mmdet3d_unchanged_but_for_the_checkpoint_hook(path: Path):
    ours, theirs = ours_and_theirs(path)
    assert ours == theirs
    assert ours['model'][head_key(ours['model'])]['loss_cls']['type'] == 'mmdet.FocalLoss'


def test_a_changed_setting_is_seen():
    """The comparison can fail: one changed anchor size breaks it."""
    ours, theirs = ours_and_theirs(BASELINE_CONFIGS[0])
    ours['model'][head_key(ours['model'])]['anchor_generator']['sizes'][0][0] += 0.1
    assert ours != theirs


@pytest.mark.parametrize('path', POLY_CONFIGS, **IDS)
def test_poly_config_builds_its_head_and_loss(path: Path):
    register_all_modules()
    cfg = Config.fromfile(str(path))  # imports mmdet_polyloss.det3d (custom_imports)
    key = head_key(cfg.model)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        head_cfg = copy.deepcopy(cfg.model[key])
        head_cfg.update(train_cfg=cfg.model.train_cfg.get('pts', cfg.model.train_cfg),
                        test_cfg=cfg.model.test_cfg.get('pts', cfg.model.test_cfg))
        head = MODELS.build(head_cfg)
    assert type(head) is PolyFocalAnchor3DHead
    eps = float(re.search(r'poly1-eps([+-][0-9.]+?)_', path.name).group(1))
    assert type(head.loss_cls) is Poly1FocalLoss and head.loss_cls.epsilon == eps
    assert head.sampling is False
    # Sigmoid: one channel per class and anchor, no background class.
    assert head.num_classes == cfg.model[key].num_classes
    assert head.conv_cls.out_channels == head.num_anchors * head.num_classes
