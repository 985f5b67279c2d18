"""Inputs an adversarial user tries, each one line on stderr naming the option
or file, the value and what is wrong, exit status 2, before any long work:
--cfg-options values mmengine cannot parse or the Runner refuses, a schedule
with nothing to train, non-finite numbers, loss arguments a config gets
wrong, work dirs and --out paths that cannot be written, and annotation files
mmdet cannot read (tools/lib/cli.py: prepare_runner)."""
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.lib import cli, errors
from tools.lib.errors import UserError
from tools.lib.sweep.settings import parse_epsilons

from train_helpers import FAST, ROOT, TIMEOUT, load_tool, make_workspace

FOCAL = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
POLY = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'
ANNOTATIONS = Path('data/polyloss_shapes/annotations')

train_tool = load_tool('train')
test_tool = load_tool('test')


@pytest.fixture(autouse=True)
def _no_stale_log_streams():
    """The tools run in this process here: an mmengine logger made by an earlier
    test keeps a stream handler on that test's captured (now closed) stdout, and
    writing to it prints a "--- Logging error ---" traceback into this test's
    stderr. Drop such handlers first; the tools add their own."""
    from mmengine.logging import MMLogger
    for logger in MMLogger._instance_dict.values():
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp('hostile'), num_train=4, num_val=2)


@pytest.fixture
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    return workspace


def error_line(main, argv, prog, capsys) -> str:
    """The tool's one line on stderr (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_:
        errors.run(main, argv, prog=prog)
    captured = capsys.readouterr()
    assert exit_.value.code == 2, captured.err[-3000:]
    assert 'Traceback' not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err[-3000:]
    return lines[0]


def train_error(options, capsys, config=FOCAL, work_dir='wd'):
    argv = [str(config), '--work-dir', work_dir, '--cfg-options', *FAST, *options]
    return error_line(train_tool.main, argv, 'train.py', capsys)


@pytest.mark.parametrize('option, message', [
    ('randomness=5', 'randomness must be a dict such as dict(seed=0), got 5'),
    ('model.bbox_head.loss_cls=dict(type=Poly1FocalLoss,epsilon=0.5)',
     "--cfg-options: cannot parse 'model.bbox_head.loss_cls=dict(type=Poly1FocalLoss,"
     "epsilon=0.5)': a call with arguments, such as dict(a=1,b=2), is not a value "
     '--cfg-options reads; set each key instead (KEY.a=1 KEY.b=2)'),
    ('train_cfg.max_epochs=nan', 'train_cfg.max_epochs=nan: expected a finite number'),
    ('optim_wrapper.optimizer.lr=nan', 'optim_wrapper.optimizer.lr=nan: expected a finite '
     'number'),
    ('param_scheduler.1.gamma=inf', 'param_scheduler.1.gamma=inf: expected a finite number'),
])
def test_options_refused_before_the_runner(option, message, in_workspace, capsys):
    assert train_error([option], capsys) == f'train.py: error: {message}'


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_call_with_arguments_in_cfg_options_is_one_line(tool, in_workspace, capsys):
    """RecursionError in mmengine's DictAction before (a traceback of ~1,000 lines)."""
    argv = [str(FOCAL)] + (['ckpt.pth'] if tool == 'test' else []) + [
        '--cfg-options', 'model.backbone=f(x,y)']
    line = error_line((train_tool if tool == 'train' else test_tool).main, argv,
                      f'{tool}.py', capsys)
    assert "cannot parse 'model.backbone=f(x,y)': a call with arguments" in line


@pytest.mark.parametrize('option, message', [
    ('train_cfg.max_epochs=0', 'train_cfg.max_epochs=0 leaves nothing to train (0 '
     'iterations): it must be >= 1'),
    ('train_cfg.max_epochs=-1', 'train_cfg.max_epochs=-1 leaves nothing to train'),
    ('train_cfg.max_epochs=1.5', 'train_cfg / train_dataloader (annotations '
     'data/polyloss_shapes/annotations/instances_train.json): AssertionError: `max_epochs` '
     'should be a integer number, but get 1.5.'),
    ('train_dataloader.batch_size=0', 'ValueError: batch_size should be a positive integer '
     'value, but got batch_size=0'),
    ('default_hooks.checkpoint.max_keep_ckpts=1.5', 'TypeError: max_keep_ckpts must be an '
     'int (-1 keeps all), got 1.5'),
])
def test_schedules_and_loaders_refused_before_training(option, message, in_workspace, capsys):
    line = train_error([option], capsys)
    assert message in line
    assert not list(Path('wd').rglob('*.pth'))


@pytest.mark.parametrize('value, message', [
    ('nan', 'ValueError: epsilon must be a finite number, got nan'),
    ('True', 'TypeError: epsilon must be a real number, got True of type bool'),
    ('1e400', 'ValueError: epsilon must be a finite number, got inf'),
    ('1e39', 'ValueError: epsilon=1e+39 is too large'),
    ('-1.0000000001', 'ValueError: epsilon=-1.0000000001 is below -1'),
])
def test_a_loss_argument_wrong_in_a_config_is_the_losss_message(value, message, in_workspace,
                                                                 capsys):
    line = train_error([f'model.bbox_head.loss_cls.epsilon={value}'], capsys, config=POLY)
    assert line.startswith('train.py: error: the config (building the runner: model, hooks, '
                           'optimizer): ')
    assert message in line


def read_only_dir(tmp_path: Path) -> Path:
    """A directory the process cannot write (root ignores permission bits: /sys)."""
    if os.geteuid() == 0:
        return Path('/sys/polyloss_read_only')
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o500)
    return folder / 'work'


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_work_dir_that_cannot_be_written_is_one_line(tool, in_workspace, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    for work_dir in (read_only_dir(tmp_path), blocker / 'work'):
        argv = [str(FOCAL)] + (['ckpt.pth'] if tool == 'test' else []) + [
            '--work-dir', str(work_dir), '--cfg-options', *FAST]
        Path('ckpt.pth').write_bytes(b'')
        line = error_line((train_tool if tool == 'train' else test_tool).main, argv,
                          f'{tool}.py', capsys)
        assert line.startswith(f'{tool}.py: error: the work dir {str(work_dir)!r} cannot be '
                               'written: ')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_the_configs_own_folder_as_work_dir_is_refused_not_overwritten(tool, in_workspace,
                                                                      tmp_path, capsys):
    """mmengine saves the config into the work dir under its own name: given the
    config's folder, it replaced the user's config (comments, _base_) with its dump."""
    config = tmp_path / 'my_config.py'
    text = f"# my notes\n_base_ = [{str(FOCAL)!r}]\n"
    config.write_text(text)
    Path('ckpt.pth').write_bytes(b'')
    for flag, named in ((['--work-dir', str(tmp_path)], '--work-dir'),
                        (['--cfg-options', f'work_dir={tmp_path}'], 'work_dir')):
        argv = [str(config)] + (['ckpt.pth'] if tool == 'test' else []) + flag
        line = error_line((train_tool if tool == 'train' else test_tool).main, argv,
                          f'{tool}.py', capsys)
        assert line == (f'{tool}.py: error: {named} {str(tmp_path)!r} is the config\'s own '
                        'folder: mmengine saves its copy of the config there under the same '
                        f'name, over {str(config)!r}; choose another work dir')
    assert config.read_text() == text


def test_a_poly_focal_loss_without_use_sigmoid_in_the_config_is_refused(in_workspace,
                                                                          tmp_path, capsys):
    """mmdet's RetinaHead reads use_sigmoid from the config (default False), not from the
    loss (whose default is True): left out, the classifier got num_classes + 1 outputs and
    the loss trained the background as a sixth class, without a word."""
    config = tmp_path / 'no_sigmoid.py'
    config.write_text(f"_base_ = [{str(FOCAL)!r}]\nmodel = dict(bbox_head=dict(loss_cls=dict("
                      "_delete_=True, type='Poly1FocalLoss', epsilon=-1.0)))\n")
    line = error_line(train_tool.main, [str(config), '--work-dir', str(tmp_path / 'w')],
                      'train.py', capsys)
    assert line == ('train.py: error: model.bbox_head.loss_cls: Poly1FocalLoss needs '
                    'use_sigmoid=True in the config: the head read it from there (default '
                    'False) and built 6 class outputs for num_classes=5, a background class '
                    'the loss would train as real')


def test_a_detr_head_sizes_its_classifier_from_the_loss_and_needs_no_use_sigmoid():
    """DETR-family heads read use_sigmoid from the built loss (True): the check that
    refuses an anchor head without the key lets them through."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    head = MODELS.build(dict(type='DeformableDETRHead', num_classes=80, embed_dims=32,
                             loss_cls=dict(type='Poly1FocalLoss', epsilon=1.0)))
    assert head.cls_out_channels == 80
    cli.check_sigmoid_classifiers(head)
    anchor = MODELS.build(dict(
        type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'), loss_cls=dict(type='Poly1FocalLoss'),
        loss_bbox=dict(type='L1Loss')))
    with pytest.raises(UserError, match=r'^model.loss_cls: Poly1FocalLoss needs use_sigmoid'):
        cli.check_sigmoid_classifiers(anchor)


def test_an_out_file_that_cannot_be_written_fails_before_the_evaluation(in_workspace,
                                                                         tmp_path, capsys,
                                                                         monkeypatch):
    built = []
    monkeypatch.setattr(cli, 'build_runner', lambda cfg: built.append(cfg))
    Path('ckpt.pth').write_bytes(b'')
    (tmp_path / 'a_file').write_text('')
    for out in (read_only_dir(tmp_path).parent / 'r.pkl', tmp_path / 'a_file' / 'r.pkl'):
        line = error_line(test_tool.main, [str(FOCAL), 'ckpt.pth', '--out', str(out)],
                          'test.py', capsys)
        assert line.startswith(f'test.py: error: --out {str(out)!r} cannot be written: ')
    (tmp_path / 'folder.pkl').mkdir()
    line = error_line(test_tool.main, [str(FOCAL), 'ckpt.pth', '--out',
                                       str(tmp_path / 'folder.pkl')], 'test.py', capsys)
    assert 'is a directory' in line
    assert built == []


def _bad_annotations(kind: str, good: str) -> str:
    data = json.loads(good)
    return {'truncated': good[:200], 'empty': '', 'a JSON list': '[]',
            'no images': json.dumps(dict(data, images=[], annotations=[])),
            'no annotations': json.dumps(dict(data, annotations=[]))}[kind]


@pytest.mark.parametrize('kind, message', [
    ('truncated', 'JSONDecodeError: Expecting property name enclosed in double quotes'),
    ('empty', 'JSONDecodeError: Expecting value: line 1 column 1 (char 0)'),
    ('a JSON list', "AssertionError: annotation file format <class 'list'> not supported"),
    ('no images', 'ValueError: need at least one array to concatenate (the dataset has no '
     'images to use'),
    ('no annotations', 'need at least one array to concatenate'),
])
def test_an_unreadable_training_annotation_file_is_named(kind, message, workspace, tmp_path,
                                                         monkeypatch, capsys):
    root = tmp_path / 'ws'
    shutil.copytree(workspace / 'data', root / 'data')
    monkeypatch.chdir(root)
    train = ANNOTATIONS / 'instances_train.json'
    train.write_text(_bad_annotations(kind, train.read_text()))
    line = train_error([], capsys)
    assert line.startswith(f'train.py: error: train_cfg / train_dataloader (annotations '
                           f'{train}): ')
    assert message in line


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_an_unreadable_validation_annotation_file_is_named(tool, workspace, tmp_path,
                                                           monkeypatch, capsys):
    root = tmp_path / 'ws'
    shutil.copytree(workspace / 'data', root / 'data')
    monkeypatch.chdir(root)
    val = ANNOTATIONS / 'instances_val.json'
    val.write_text('[]')
    Path('ckpt.pth').write_bytes(b'')
    argv = [str(FOCAL)] + (['ckpt.pth'] if tool == 'test' else []) + [
        '--work-dir', 'wd', '--cfg-options', *FAST]
    line = error_line((train_tool if tool == 'train' else test_tool).main, argv,
                      f'{tool}.py', capsys)
    loop = 'val' if tool == 'train' else 'test'
    assert line == (f'{tool}.py: error: {loop}_cfg / {loop}_dataloader (annotations {val}): '
                    "AssertionError: annotation file format <class 'list'> not supported")


def test_user_errors_maps_only_build_errors():
    with pytest.raises(UserError, match=re.escape("part: KeyError: 'x'")):
        with cli.user_errors('part'):
            raise KeyError("'x'")
    with pytest.raises(RuntimeError):  # a failure of the run itself keeps its traceback
        with cli.user_errors('part'):
            raise RuntimeError('rank failed')


def test_sweep_epsilons_that_overflow_float32_are_refused():
    """The issue's case: 1 followed by 40 zeros was accepted, then the training crashed."""
    big = '1' + '0' * 40
    with pytest.raises(UserError, match=f"--epsilons: '{big}' is too large for the loss, which "
                       r'computes in float32 \(at most 3.4028235e\+38\)'):
        parse_epsilons(big, '--epsilons')
    assert len(parse_epsilons('1' + '0' * 38, '--epsilons')) == 1
    tiny = '0.' + '0' * 45 + '1'  # 1e-46: float32's 0, so a focal run labelled eps=+1e-46
    with pytest.raises(UserError, match=f"--epsilons: '{tiny}' is too small for the loss, "
                       'which computes in float32: it would train as epsilon 0'):
        parse_epsilons(tiny, '--epsilons')
    assert parse_epsilons('0.' + '0' * 44 + '1', '--epsilons') == ['+1e-45']  # a subnormal


@pytest.mark.slow
def test_scripts_print_one_line_for_a_bad_dataset(workspace, tmp_path):
    """As a user runs it: ``python tools/train.py`` with an empty annotation file."""
    root = tmp_path / 'ws'
    shutil.copytree(workspace / 'data', root / 'data')
    (root / ANNOTATIONS / 'instances_train.json').write_text('')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'), str(FOCAL), '--work-dir', 'wd',
         '--cfg-options', *FAST], cwd=root, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        'train.py: error: train_cfg / train_dataloader (annotations '
        f'{ANNOTATIONS}/instances_train.json): JSONDecodeError: Expecting value: line 1 '
        'column 1 (char 0)']


# ------------------------------------------------------- issue 29: --amp, spaces in values
@pytest.mark.parametrize('flags, what', [
    (['--amp'], '--amp'),
    (['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'],
     "optim_wrapper.type='AmpOptimWrapper'"),
])
def test_mixed_precision_without_a_gpu_is_one_line_before_any_work(flags, what, tmp_path,
                                                                   monkeypatch, capsys):
    """Before: mmengine's AssertionError traceback from inside runner.train(), after the
    work dir was set up."""
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cpu')
    work_dir = tmp_path / 'amp'
    line = error_line(train_tool.main, [str(FOCAL), '--work-dir', str(work_dir), *flags],
                      'train.py', capsys)
    assert line == (f'train.py: error: {what}: mixed precision (AmpOptimWrapper) trains on a '
                    "CUDA, NPU or MLU device, and this machine has none (mmengine finds 'cpu'); "
                    'train without it')
    assert not work_dir.exists()


@pytest.mark.parametrize('value, parsed', [
    ('/data/my sets/trees 1/', '/data/my sets/trees 1/'),
    ('"/data/my sets/"', '/data/my sets/'),
    (' 5 ', 5), ('1 2', '1 2'), ('True', True), ('None', None),
    ('[1, 2]', [1, 2]), ('( a , b c )', ('a', 'b c')), ('[[my a, b], c]', [['my a', 'b'], 'c']),
])
def test_spaces_inside_a_cfg_options_value_are_kept(value, parsed):
    """mmengine's DictAction drops every space (``/data/mysets/trees1/``, and ``1 2`` is 12);
    spaces around a value, its brackets and commas go as before."""
    assert cli.parse_cfg_options([f'key={value}']) == {'key': parsed}


def test_a_data_root_with_spaces_reaches_the_config_as_given():
    """What configs/trees/ tells a user to write."""
    config = ROOT / 'configs/trees/retinanet_tiny_fpn_focal_trees.py'
    args = train_tool.parse_args([str(config), '--cfg-options',
                                  'train_dataloader.dataset.data_root=/data/my sets/trees 1/'])
    cfg = cli.config_from_args(args)
    assert cfg.train_dataloader.dataset.data_root == '/data/my sets/trees 1/'


def _checkpoint_of(config: Path, path: Path) -> Path:
    """A checkpoint as mmengine saves it: the run's config text in meta['cfg']."""
    import torch
    from mmengine.config import Config
    torch.save(dict(meta=dict(cfg=Config.fromfile(str(config)).pretty_text, epoch=1),
                    state_dict=dict(w=torch.zeros(1))), path)
    return path


def test_a_resume_with_another_loss_is_refused_naming_both(tmp_path, capsys):
    """A Poly-1 run resumed with a Poly-N config: before, it went on silently and the report
    labelled the run by the last config."""
    checkpoint = _checkpoint_of(POLY, tmp_path / 'epoch_1.pth')
    poly_n = tmp_path / 'poly_n.py'
    poly_n.write_text(f"_base_ = '{POLY}'\nmodel = dict(bbox_head=dict(loss_cls=dict("
                      "_delete_=True, type='PolyNFocalLoss', use_sigmoid=True, "
                      'epsilons=[-1.0])))\n')
    work_dir = tmp_path / 'wd'
    line = error_line(train_tool.main, [str(poly_n), '--work-dir', str(work_dir), '--resume',
                                        str(checkpoint)], 'train.py', capsys)
    assert line == (f'train.py: error: --resume: the run in {checkpoint} was trained with '
                    "another loss (model.bbox_head.loss_cls.type: 'Poly1FocalLoss' in its "
                    "checkpoint, 'PolyNFocalLoss' in this config); resuming would continue it "
                    'with this one, and its results would be labelled by it: resume with the '
                    'config it was trained with, or train this one in another --work-dir')
    assert not work_dir.exists()  # refused before the runner made it


def test_a_resume_with_the_same_loss_passes_the_check(tmp_path):
    from mmengine.config import Config

    from tools.lib import checkpoints
    checkpoint = _checkpoint_of(POLY, tmp_path / 'epoch_1.pth')
    cfg = Config.fromfile(str(POLY))
    cfg.model.bbox_head.loss_cls.gamma = 2  # gamma=2 is gamma=2.0
    checkpoints.check_resume_checkpoint(str(tmp_path), str(checkpoint), cfg.to_dict())
    cfg.model.bbox_head.loss_cls.epsilon = 0.5
    with pytest.raises(UserError, match=re.escape(
            'model.bbox_head.loss_cls.epsilon: -1.0 in its checkpoint, 0.5 in this config')):
        checkpoints.check_resume_checkpoint(str(tmp_path), str(checkpoint), cfg.to_dict())
