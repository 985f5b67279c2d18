"""Strict weights: mmdet_polyloss.engine.weights, and tools/test.py and
tools/train.py's load_from refusing a checkpoint that does not fit the model
(one line on stderr, exit status 2) unless --allow-partial-weights."""
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from mmdet_polyloss.engine.checkpoint import mmengine_safe_globals
from mmdet_polyloss.engine.weights import (
    WeightsError,
    WeightsMismatch,
    WeightsMismatchError,
    check_weights,
    compare_weights,
    read_checkpoint,
    state_dict_of,
)

from train_helpers import FAST, ROOT, TIMEOUT, make_workspace, run

CONFIG = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'
HEAD = ('bbox_head.retina_cls.weight', 'bbox_head.retina_cls.bias')


def build_demo_model(**head):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.bbox_head.update(head)
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def model():
    return build_demo_model()


@pytest.fixture(scope='module')
def weights(model) -> Dict[str, torch.Tensor]:
    return dict(model.state_dict())


def test_the_models_own_weights_fit(model, weights):
    assert compare_weights(model, weights) == WeightsMismatch()
    assert not compare_weights(model, weights)


def test_what_mmengine_accepts_fits(model, weights):
    """``module.`` prefixes, a missing num_batches_tracked, a test-time
    augmentation wrapper, and mmdet's rename of rpn_head keys in a
    single-stage detector (the module's own loading code runs)."""
    from mmdet.models.test_time_augs import DetTTAModel
    assert not compare_weights(model, {f'module.{k}': v for k, v in weights.items()})
    assert not compare_weights(model, {k: v for k, v in weights.items()
                                       if 'num_batches_tracked' not in k})
    assert not compare_weights(DetTTAModel(module=model), weights)
    rpn = {k.replace('bbox_head.', 'rpn_head.'): v for k, v in weights.items()}
    assert not compare_weights(model, rpn)


def test_missing_unexpected_and_mis_shaped_keys_are_named(model, weights):
    state = {k: v for k, v in weights.items() if k != 'backbone.conv1.weight'}
    state['extra.weight'] = torch.zeros(2)
    state['neck.fpn_convs.0.conv.bias'] = torch.zeros(3)
    state['neck.fpn_convs.1.conv.bias'] = 'not a tensor'
    mismatch = compare_weights(model, state)
    assert mismatch.missing == ('backbone.conv1.weight',)
    assert mismatch.unexpected == ('extra.weight',)
    assert mismatch.mis_shaped == (('neck.fpn_convs.0.conv.bias', '[3]', '[64]'),
                                   ('neck.fpn_convs.1.conv.bias', 'str', '[64]'))
    assert mismatch.describe() == (
        '1 missing key (backbone.conv1.weight), 1 unexpected key (extra.weight), '
        '2 keys with another shape (neck.fpn_convs.0.conv.bias: [3] in the checkpoint, [64] '
        'in the model, neck.fpn_convs.1.conv.bias: str in the checkpoint, [64] in the model)')


def test_long_lists_say_how_many_more(model):
    mismatch = compare_weights(model, {'a.weight': torch.zeros(1)})
    assert len(mismatch.missing) > 3
    assert mismatch.describe().startswith(
        f'{len(mismatch.missing)} missing keys (backbone.conv1.weight, backbone.bn1.weight, '
        f'backbone.bn1.bias and {len(mismatch.missing) - 3} more), 1 unexpected key (a.weight)')


def test_the_model_is_left_untouched(model, weights):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compare_weights(model, {k: torch.full_like(v, 7) for k, v in weights.items()})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.device.type == 'cpu' for p in model.parameters())


@pytest.mark.parametrize('checkpoint,message', [
    ([1, 2], 'checkpoint x.pth holds a list, not model weights'),
    (torch.zeros(3), 'checkpoint x.pth holds a Tensor, not model weights'),
    ({'meta': {}, 'optimizer': {}}, 'checkpoint x.pth holds no weights: no tensors in it '
                                    '(keys: meta, optimizer)'),
    ({'state_dict': [1]}, 'checkpoint x.pth: state_dict is a list, not a dict of tensors'),
    ({'state_dict': {}}, 'checkpoint x.pth holds no weights: no tensors in its state_dict'),
])
def test_a_checkpoint_without_weights_is_refused(checkpoint, message):
    with pytest.raises(WeightsError, match='^' + message.replace('(', r'\(').replace(')', r'\)')):
        state_dict_of(checkpoint, 'x.pth')


def test_the_state_dict_entry_or_a_bare_state_dict_less_meta(weights):
    state = state_dict_of({'state_dict': weights, 'meta': {'epoch': 1}, 'optimizer': {}})
    assert list(state) == list(weights)
    assert list(state_dict_of({**weights, 'meta': {'epoch': 1}})) == list(weights)


def _save(path: Path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def test_unreadable_files_are_refused_in_one_line(tmp_path):
    class Code:
        def __reduce__(self):
            return (print, ('ran',))

    text = tmp_path / 'text.pth'
    text.write_text('not a checkpoint\n')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    whole = Path(_save(tmp_path / 'whole.pth', {'a': torch.zeros(2)})).read_bytes()
    (tmp_path / 'cut.pth').write_bytes(whole[:len(whole) // 2])
    cases = {
        str(text): f"checkpoint {text} is not a file torch.save wrote (it starts with "
                   f"b'not a ch', not a zip archive or a pickle)",
        str(empty): f'checkpoint {empty} is empty',
        str(tmp_path / 'cut.pth'): f'checkpoint {tmp_path}/cut.pth cannot be read: '
                                   'PytorchStreamReader failed reading zip archive: failed '
                                   'finding central directory.',
        _save(tmp_path / 'code.pth', {'a': Code()}):
            f'checkpoint {tmp_path}/code.pth cannot be read: the weights-only unpickler '
            'refuses it (Unsupported global: GLOBAL print was not an allowed global by '
            'default)',
        str(tmp_path / 'none.pth'): f'no such checkpoint: {tmp_path}/none.pth',
    }
    for path, message in cases.items():
        with pytest.raises(WeightsError) as error:
            read_checkpoint(path)
        assert str(error.value) == message


def test_check_weights_raises_unless_partial_is_allowed(model, weights, tmp_path):
    path = _save(tmp_path / 'part.pth', {'state_dict': {k: v for k, v in weights.items()
                                                        if k not in HEAD}})
    with pytest.raises(WeightsMismatchError) as error:
        check_weights(model, path)
    assert str(error.value) == (f'checkpoint {path} does not fit the model: 2 missing keys '
                                f'({", ".join(HEAD)})')
    assert error.value.mismatch.missing == HEAD
    assert check_weights(model, path, allow_partial=True).missing == HEAD
    with pytest.raises(WeightsError, match='holds a list'):  # no weights: even so refused
        check_weights(model, _save(tmp_path / 'list.pth', [1]), allow_partial=True)


def test_reading_inside_the_tools_safe_globals_keeps_them(model, weights, tmp_path):
    """torch's safe_globals is not re-entrant: an inner one would remove the
    outer one's allow-list, and the runner's own load would then fail."""
    path = _save(tmp_path / 'ok.pth', {'state_dict': weights})
    with mmengine_safe_globals():
        check_weights(model, path)
        from mmengine.logging import HistoryBuffer
        assert HistoryBuffer in torch.serialization.get_safe_globals()


# ---------------------------------------------------------------- the tools
@pytest.fixture(scope='module')
def workspace(tmp_path_factory, weights) -> Path:
    """Data, and checkpoints made from built models (no training needed)."""
    root = make_workspace(tmp_path_factory.mktemp('weights'))
    ckpt = root / 'ckpt'
    ckpt.mkdir()
    _save(ckpt / 'good.pth', {'state_dict': weights, 'meta': {}})
    _save(ckpt / 'partial.pth', {'state_dict': {k: v for k, v in weights.items()
                                                if k not in HEAD}})
    _save(ckpt / 'three_classes.pth', {'state_dict': build_demo_model(num_classes=3)
                                       .state_dict()})
    _save(ckpt / 'list.pth', [1, 2])
    _save(ckpt / 'tensor.pth', torch.zeros(3))
    _save(ckpt / 'no_state_dict.pth', {'meta': {'epoch': 1}})
    (ckpt / 'text.pth').write_text('epoch 12, mAP 0.41\n')
    return root


def user_error(args: List[str], cwd: Path) -> str:
    """Run a tool that must fail with a user error; its one stderr line."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def evaluate_args(checkpoint: str, *args: str) -> List[str]:
    """tools/test.py's command line for ``checkpoint``."""
    return [str(ROOT / 'tools/test.py'), str(CONFIG), checkpoint, '--work-dir', 'work/test',
            *args, '--cfg-options', *FAST]

ALL_HEAD_SHAPES = ('2 keys with another shape (bbox_head.retina_cls.weight: [27, 64, 3, 3] in '
                   'the checkpoint, [45, 64, 3, 3] in the model, bbox_head.retina_cls.bias: '
                   '[27] in the checkpoint, [45] in the model)')


@pytest.mark.slow
@pytest.mark.parametrize('name,problem', [
    ('list', 'holds a list, not model weights (a state dict, or a dict with one as '
             'state_dict)'),
    ('tensor', 'holds a Tensor, not model weights (a state dict, or a dict with one as '
               'state_dict)'),
    ('text', "is not a file torch.save wrote (it starts with b'epoch 12', not a zip archive "
             'or a pickle)'),
    ('no_state_dict', 'holds no weights: no tensors in it (keys: meta)'),
    ('partial', 'does not fit the model: 2 missing keys (bbox_head.retina_cls.weight, '
                'bbox_head.retina_cls.bias); --allow-partial-weights loads it anyway'),
    ('three_classes', f'does not fit the model: {ALL_HEAD_SHAPES}; --allow-partial-weights '
                      'loads it anyway'),
])
def test_test_tool_refuses_weights_that_do_not_fit(workspace, name, problem):
    line = user_error(evaluate_args(f'ckpt/{name}.pth'), workspace)
    assert line == f'test.py: error: checkpoint ckpt/{name}.pth {problem}'


@pytest.mark.slow
def test_test_tool_with_allow_partial_weights_keeps_mmengines_warning(workspace):
    out = run([sys.executable, *evaluate_args('ckpt/partial.pth', '--allow-partial-weights')],
              workspace)
    assert 'missing keys in source state_dict: bbox_head.retina_cls.weight' in out
    assert 'coco/bbox_mAP:' in out


@pytest.mark.slow
def test_train_tool_checks_load_from(workspace):
    train = [sys.executable, str(ROOT / 'tools/train.py'), str(CONFIG), '--work-dir', 'work/train',
             '--cfg-options', *FAST]
    line = user_error([*train[1:], 'load_from=ckpt/three_classes.pth'], workspace)
    assert line == (f'train.py: error: checkpoint ckpt/three_classes.pth does not fit the '
                    f'model: {ALL_HEAD_SHAPES}; --allow-partial-weights loads it anyway')
    assert not (workspace / 'work/train/epoch_1.pth').exists()
    out = run([*train, 'load_from=ckpt/good.pth'], workspace)
    assert 'Load checkpoint from ckpt/good.pth' in out
    # Fine-tuning on another head: the flag lets mmengine load what fits.
    out = run([*train, 'load_from=ckpt/three_classes.pth', '--allow-partial-weights'],
              workspace)
    assert 'size mismatch for bbox_head.retina_cls.weight' in out
    assert (workspace / 'work/train/epoch_1.pth').is_file()


def test_a_resume_from_an_unreadable_checkpoint_is_one_line(workspace):
    """--resume CHECKPOINT and a bare --resume (the work dir's last_checkpoint):
    a file torch cannot read stops train.py before training, in one line."""
    work = workspace / 'work/resume'
    work.mkdir(parents=True)
    (work / 'epoch_3.pth').write_bytes(b'')  # killed mid-write by a plain CheckpointHook
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    (workspace / 'ckpt/not_zip.pth').write_bytes(b'PK\x03\x04 not a zip archive')
    train = [str(ROOT / 'tools/train.py'), str(CONFIG), '--work-dir', str(work), '--resume']
    advice = ('; --resume cannot continue from it (give another checkpoint, or train '
              'without --resume)')
    assert user_error(train, workspace) == (
        f'train.py: error: checkpoint {work}/epoch_3.pth is empty{advice}')
    line = user_error([*train, 'ckpt/not_zip.pth'], workspace)
    assert line.startswith('train.py: error: checkpoint ckpt/not_zip.pth cannot be read: '
                           'PytorchStreamReader failed reading zip archive: '), line
    assert line.endswith(advice) and '.;' not in line
