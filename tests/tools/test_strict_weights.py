"""Strict weights: tools/lib/checkpoints.py, and tools/test.py and
tools/train.py's load_from refusing a checkpoint that does not fit the model
(one line on stderr, exit status 2) unless --allow-partial-weights."""
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from tools.lib.checkpoints import check_weights_fit, read_checkpoint, weights_of
from tools.lib.errors import UserError

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
    return {k: v.clone() for k, v in model.state_dict().items()}


def _save(path: Path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def refusal(model, path: str, allow_partial: bool = False) -> str:
    with pytest.raises(UserError) as error:
        check_weights_fit(model, path, allow_partial)
    return str(error.value)


def test_what_mmengine_accepts_fits(model, weights, tmp_path):
    """The model's own weights, ``module.`` prefixes, a missing
    num_batches_tracked, a test-time augmentation wrapper, and mmdet's rename
    of rpn_head keys in a single-stage detector (the module's own loading code runs)."""
    from mmdet.models.test_time_augs import DetTTAModel
    for name, state, net in [
            ('own', weights, model),
            ('prefixed', {f'module.{k}': v for k, v in weights.items()}, model),
            ('no_tracked', {k: v for k, v in weights.items() if 'num_batches_tracked' not in k},
             model),
            ('tta', weights, DetTTAModel(module=model)),
            ('rpn', {k.replace('bbox_head.', 'rpn_head.'): v for k, v in weights.items()},
             model)]:
        check_weights_fit(net, _save(tmp_path / f'{name}.pth', {'state_dict': state}), False)


def test_missing_unexpected_and_mis_shaped_keys_are_named(model, weights, tmp_path):
    state = {k: v for k, v in weights.items() if k != 'backbone.conv1.weight'}
    state['extra.weight'] = torch.zeros(2)
    state['neck.fpn_convs.0.conv.bias'] = torch.zeros(3)
    path = _save(tmp_path / 'odd.pth', {'state_dict': state})
    assert refusal(model, path) == (
        f'checkpoint {path} does not fit the model: unexpected key in source state_dict: '
        'extra.weight; missing keys in source state_dict: backbone.conv1.weight; size '
        'mismatch for neck.fpn_convs.0.conv.bias: copying a param with shape torch.Size([3]) '
        'from checkpoint, the shape in current model is torch.Size([64]); '
        '--allow-partial-weights loads it anyway')
    check_weights_fit(model, path, allow_partial=True)


def test_long_lists_say_how_many_in_all(model, tmp_path):
    path = _save(tmp_path / 'one.pth', {'a.weight': torch.zeros(1)})
    missing = len([k for k in model.state_dict() if 'num_batches_tracked' not in k])
    assert (f'missing keys in source state_dict: backbone.conv1.weight, backbone.bn1.weight, '
            f'backbone.bn1.bias ({missing} in all)') in refusal(model, path)


def test_the_state_dict_entry_or_a_bare_state_dict_less_meta(weights):
    state = weights_of({'state_dict': weights, 'meta': {'epoch': 1}, 'optimizer': {}}, 'x')
    assert list(state) == list(weights)
    assert list(weights_of({**weights, 'meta': {'epoch': 1}}, 'x')) == list(weights)


@pytest.mark.parametrize('checkpoint,message', [
    ([1, 2], 'checkpoint x.pth holds a list, not model weights'),
    (torch.zeros(3), 'checkpoint x.pth holds a Tensor, not model weights'),
    ({'meta': {}, 'optimizer': {}}, 'checkpoint x.pth holds no weights: no tensors in it '
                                    '(keys: meta, optimizer)'),
    ({'state_dict': [1]}, 'checkpoint x.pth holds a list, not model weights'),
    ({'state_dict': {}}, 'checkpoint x.pth holds no weights: no tensors in it (keys: )'),
])
def test_a_checkpoint_without_weights_is_refused_even_partially(model, checkpoint, message,
                                                                 tmp_path):
    with pytest.raises(UserError) as error:
        weights_of(checkpoint, 'x.pth')
    assert str(error.value).startswith(message)
    path = _save(tmp_path / 'x.pth', checkpoint)
    assert refusal(model, path, allow_partial=True).startswith(
        message.replace('x.pth', path))


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
        str(text): f'checkpoint {text} cannot be read: the weights-only unpickler refuses it '
                   '(Unsupported operand 110)',
        str(empty): f'checkpoint {empty} cannot be read: not a file torch.save wrote '
                    '(EOFError)',
        str(tmp_path / 'cut.pth'): f'checkpoint {tmp_path}/cut.pth cannot be read: '
                                   'PytorchStreamReader failed reading zip archive: failed '
                                   'finding central directory',
        _save(tmp_path / 'code.pth', {'a': Code()}):
            f'checkpoint {tmp_path}/code.pth cannot be read: the weights-only unpickler '
            'refuses it (Unsupported global: GLOBAL print was not an allowed global by '
            'default)',
        str(tmp_path / 'none.pth'): f'no such checkpoint: {tmp_path}/none.pth',
    }
    for path, message in cases.items():
        with pytest.raises(UserError) as error:
            read_checkpoint(path)
        assert str(error.value) == message


def test_a_checkpoint_that_cannot_be_opened_says_why(tmp_path, monkeypatch):
    """A file torch cannot open (no permission; tests run as root, so the loader is
    made to fail as it then does) is named with the OS's reason, not called a
    file torch.save did not write."""
    from mmengine.runner import CheckpointLoader
    path = _save(tmp_path / 'good.pth', {'a': torch.zeros(2)})

    def refuse(filename, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', filename)

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', refuse)
    with pytest.raises(UserError) as error:
        read_checkpoint(path)
    assert str(error.value) == f'checkpoint {path} cannot be read: Permission denied'


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

ALL_HEAD_SHAPES = ('size mismatch for bbox_head.retina_cls.weight: copying a param with shape '
                   'torch.Size([27, 64, 3, 3]) from checkpoint, the shape in current model is '
                   'torch.Size([45, 64, 3, 3]); size mismatch for bbox_head.retina_cls.bias: '
                   'copying a param with shape torch.Size([27]) from checkpoint, the shape in '
                   'current model is torch.Size([45])')


@pytest.mark.slow
@pytest.mark.parametrize('name,problem', [
    ('list', 'holds a list, not model weights (a state dict, or a dict with one as '
             'state_dict)'),
    ('tensor', 'holds a Tensor, not model weights (a state dict, or a dict with one as '
               'state_dict)'),
    ('text', 'cannot be read: not a file torch.save wrote (IndexError: pop from empty list)'),
    ('no_state_dict', 'holds no weights: no tensors in it (keys: meta)'),
    ('partial', 'does not fit the model: missing keys in source state_dict: '
                'bbox_head.retina_cls.weight, bbox_head.retina_cls.bias; '
                '--allow-partial-weights loads it anyway'),
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
        f'train.py: error: checkpoint {work}/epoch_3.pth cannot be read: not a file '
        f'torch.save wrote (EOFError){advice}')
    line = user_error([*train, 'ckpt/not_zip.pth'], workspace)
    assert line.startswith('train.py: error: checkpoint ckpt/not_zip.pth cannot be read: '
                           'PytorchStreamReader failed reading zip archive: '), line
    assert line.endswith(advice) and '.;' not in line
