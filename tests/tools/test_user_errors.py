"""Every tool's user error is one line on stderr, ``<tool>: error: <message>``,
with exit status 2 and no traceback: tools/lib/errors.py, --cfg-options keys
that are not in the config, broken configs, bad numbers and seeds."""
import argparse
import re
import subprocess
import sys
from typing import Callable, List

import pytest
from mmengine.config import Config

from tools.lib import cli, errors
from tools.lib.errors import UserError

from train_helpers import ROOT, TIMEOUT, load_tool

DEMO = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'


train_tool = load_tool('train')
test_tool = load_tool('test')
data_tool = load_tool('make_demo_data')


def one_error(main: Callable, argv: List[str], prog: str, capsys) -> str:
    """Run ``main`` as the tool's ``__main__`` does: exit status 2 and one
    line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_:
        errors.run(main, argv, prog=prog)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_run_reports_a_user_error_in_one_line(capsys):
    def main(argv):
        raise UserError('first line\n  second line')
    assert one_error(main, [], 'tool.py', capsys) == 'tool.py: error: first line second line'


def test_run_leaves_other_exceptions_alone():
    def main(argv):
        raise KeyError('a bug')
    with pytest.raises(KeyError):
        errors.run(main, [], prog='tool.py')


def test_argparse_errors_are_one_line(capsys):
    assert one_error(train_tool.main, [str(DEMO), '--bogus'], 'train.py', capsys) == \
        'train.py: error: unrecognized arguments: --bogus'
    assert one_error(test_tool.main, [str(DEMO)], 'test.py', capsys) == \
        'test.py: error: the following arguments are required: checkpoint'


# ------------------------------------------------------------- --cfg-options
@pytest.mark.parametrize('option,message', [
    ('train_cfg.max_epoch=2', "--cfg-options train_cfg.max_epoch: no key 'max_epoch' in "
     'train_cfg (did you mean train_cfg.max_epochs?); to add a new key, write '
     '+train_cfg.max_epoch=...'),
    ('model.bbox_head.loss_cls.gama=1', "--cfg-options model.bbox_head.loss_cls.gama: no key "
     "'gama' in model.bbox_head.loss_cls (did you mean model.bbox_head.loss_cls.gamma?); to "
     'add a new key, write +model.bbox_head.loss_cls.gama=...'),
    ('modle.backbone.depth=50', "--cfg-options modle.backbone.depth: no key 'modle' in the "
     'config (did you mean model?); to add a new key, write +modle.backbone.depth=...'),
    ('param_scheduler.2.end=3', '--cfg-options param_scheduler.2.end: param_scheduler is a '
     "list of 2, '2' is not an index into it (0 to 1)"),
    ('train_cfg.max_epochs.x=1', '--cfg-options train_cfg.max_epochs.x: train_cfg.max_epochs '
     'is 24, which has no keys'),
    ('randomness.seed=18446744073709551617', 'randomness.seed must be an integer from 0 to '
     '4294967295 (2^32 - 1), got 18446744073709551617'),
    ('randomness.seed=-1', 'randomness.seed must be an integer from 0 to 4294967295 '
     '(2^32 - 1), got -1'),
    ('train_cfg', "--cfg-options: expected KEY=VALUE, got 'train_cfg'"),
    ('+=1', "--cfg-options: expected KEY=VALUE, got '+=1'"),
    ('a=[1,2', "--cfg-options: cannot parse 'a=[1,2': Imbalanced brackets exist in [1,2"),
])
def test_bad_cfg_options_are_refused(option, message, capsys):
    assert one_error(train_tool.main, [str(DEMO), '--cfg-options', option], 'train.py',
                     capsys) == f'train.py: error: {message}'


def _args(*options: str) -> argparse.Namespace:
    return train_tool.parse_args([str(DEMO), '--cfg-options', *options])


def test_existing_new_marked_and_runner_keys_are_accepted():
    cfg = cli.config_from_args(_args(
        'train_cfg.max_epochs=2', 'param_scheduler.1.milestones=[1,2]',
        '+train_dataloader.pin_memory=True', '+model.neck.upsample_cfg.mode=bilinear',
        '+default_hooks.checkpoint.by_epoch=False', 'work_dir=elsewhere',
        'model_wrapper_cfg.type=MMDistributedDataParallel', 'randomness.seed=4294967295'))
    assert cfg.train_cfg.max_epochs == 2
    assert cfg.param_scheduler[1].milestones == [1, 2]
    assert cfg.train_dataloader.pin_memory is True
    assert cfg.model.neck.upsample_cfg == dict(mode='bilinear')
    assert cfg.default_hooks.checkpoint.by_epoch is False
    assert cfg.work_dir == 'elsewhere'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.randomness.seed == 4294967295


def test_an_option_mmengine_cannot_merge_is_a_user_error():
    with pytest.raises(UserError, match='^--cfg-options: '):
        cli.config_from_args(_args('+param_scheduler.7.end=1'))


# ------------------------------------------------------------------ configs
def test_missing_config(capsys):
    assert one_error(train_tool.main, ['no/such.py'], 'train.py', capsys) == \
        "train.py: error: config: no such file: 'no/such.py'"


def test_config_with_a_syntax_error(tmp_path, capsys):
    config = tmp_path / 'broken.py'
    config.write_text("_base_ = 'x.py'\nmodel = dict(\n    type='RetinaNet'\n")
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'')
    assert one_error(test_tool.main, [str(config), str(ckpt)], 'test.py', capsys) == (
        f"test.py: error: config {config}: syntax error at line 2: '(' was never closed: "
        'model = dict(')


def test_syntax_error_in_a_base_file(tmp_path, capsys):
    (tmp_path / 'base.py').write_text('a = [1,\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './base.py'\nb = 1\n")
    assert one_error(train_tool.main, [str(child)], 'train.py', capsys) == (
        f"train.py: error: config {child}: syntax error at line 1: '[' was never closed: "
        "a = [1,")


def test_config_that_fails_to_run(tmp_path, capsys):
    config = tmp_path / 'undefined.py'
    config.write_text('model = undefined_name\n')
    assert one_error(train_tool.main, [str(config)], 'train.py', capsys) == (
        f"train.py: error: config {config} cannot be read: NameError: name 'undefined_name' "
        'is not defined')
    missing_base = tmp_path / 'missing_base.py'
    missing_base.write_text("_base_ = './nope.py'\n")
    line = one_error(train_tool.main, [str(missing_base)], 'train.py', capsys)
    assert re.fullmatch(rf'train.py: error: config {missing_base} cannot be read: '
                        r'FileNotFoundError: .*nope\.py.*', line)


# -------------------------------------------------------------------- flags
def test_test_tool_flags(tmp_path, capsys):
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'')
    assert one_error(test_tool.main, [str(DEMO), 'missing.pth'], 'test.py', capsys) == \
        "test.py: error: checkpoint: no such checkpoint: 'missing.pth'"
    assert one_error(test_tool.main, [str(DEMO), str(ckpt), '--out', 'r.json'], 'test.py',
                     capsys) == "test.py: error: --out must end with .pkl or .pickle, got 'r.json'"
    assert one_error(test_tool.main, [str(DEMO), str(ckpt), '--wait-time', 'nan'], 'test.py',
                     capsys) == ("test.py: error: argument --wait-time: expected a number of "
                                 "seconds >= 0, got 'nan'")


def test_train_tool_flags(capsys):
    assert one_error(train_tool.main, [str(DEMO), '--resume', 'no/such.pth'], 'train.py',
                     capsys) == "train.py: error: --resume: no such checkpoint: 'no/such.pth'"
    assert one_error(train_tool.main, [str(DEMO), '--cfg-options', 'auto_scale_lr=None',
                                       '--auto-scale-lr'], 'train.py', capsys) == (
        'train.py: error: --auto-scale-lr: the config needs auto_scale_lr = dict(enable=False, '
        'base_batch_size=<total batch the lr was tuned for>), got auto_scale_lr=None')


def test_missing_annotation_files_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    """Run from a directory without the data: one line naming the file, not
    mmdet's FileNotFoundError from inside the runner."""
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'PK')
    demo = ("no such file: 'data/polyloss_shapes/annotations/instances_{}.json' (relative "
            f"paths are from '{tmp_path}'); python tools/make_demo_data.py makes it")
    assert one_error(train_tool.main, [str(DEMO)], 'train.py', capsys) == (
        'train.py: error: train_dataloader.dataset.ann_file: ' + demo.format('train'))
    assert one_error(test_tool.main, [str(DEMO), str(ckpt)], 'test.py', capsys) == (
        'test.py: error: test_dataloader.dataset.ann_file: ' + demo.format('val'))
    assert not (tmp_path / 'work_dirs').exists()


def test_missing_pretrained_weights_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    """The pretrained trees config without its converted weights: one line naming the
    config key, the file and the tool that makes it (mmengine's error comes only after
    the runner is built, from inside init_weights)."""
    monkeypatch.chdir(tmp_path)
    for split in ('train', 'val'):
        ann = tmp_path / 'data/polyloss_trees/annotations' / f'instances_{split}.json'
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text('{}')
    config = ROOT / 'configs/trees/retinanet_mobilenetv2_fpn_focal_trees.py'
    assert one_error(train_tool.main, [str(config)], 'train.py', capsys) == (
        "train.py: error: model.backbone.init_cfg.checkpoint: no such file: "
        f"'data/pretrained/mobilenet_v2_imagenet_mmdet.pth' (relative paths are from "
        f"'{tmp_path}'); python tools/model_converters/mobilenet_v2_imagenet.py makes it")
    assert not (tmp_path / 'work_dirs').exists()


def test_pretrained_files_are_found_in_lists_and_nested_models():
    model = dict(backbone=dict(init_cfg=[dict(type='Kaiming'),
                                         dict(type='Pretrained', checkpoint='a.pth')]),
                 teacher=dict(module=dict(init_cfg=dict(type='Pretrained', checkpoint='b.pth'))),
                 neck=dict(init_cfg=dict(type='Pretrained', checkpoint=None)))
    assert list(cli.pretrained_files(model)) == [
        ('model.backbone.init_cfg.1.checkpoint', 'a.pth'),
        ('model.teacher.module.init_cfg.checkpoint', 'b.pth')]


def test_annotation_files_of_wrapped_datasets_and_evaluators(tmp_path):
    (tmp_path / 'a.json').write_text('{}')
    here, gone = str(tmp_path / 'a.json'), str(tmp_path / 'gone.json')
    wrapped = dict(type='ConcatDataset', datasets=[
        dict(data_root=str(tmp_path), ann_file='a.json'),
        dict(type='RepeatDataset', dataset=dict(data_root=str(tmp_path), ann_file='gone.json'))])
    cfg = Config(dict(train_dataloader=dict(dataset=wrapped)))
    with pytest.raises(UserError, match=re.escape(
            f'train_dataloader.dataset.datasets.1.dataset.ann_file: no such file: {gone!r}')):
        cli.check_input_files(cfg, ['train'])
    cfg = Config(dict(val_dataloader=dict(dataset=dict(ann_file=here)),
                      val_evaluator=[dict(type='CocoMetric', ann_file=gone)]))
    with pytest.raises(UserError, match=re.escape(f'val_evaluator.ann_file: no such file: '
                                                  f'{gone!r}')):
        cli.check_input_files(cfg, ['val'])
    cfg.val_evaluator[0].ann_file = 's3://bucket/a.json'  # not local: not checked
    cli.check_input_files(cfg, ['val'])



def test_annotation_files_as_the_sweep_report_names_a_runs_data():
    """Joined to the nearest data_root (a URL is not; a data_root that is not a string is
    ignored), every file of a concatenation, then the evaluator's."""
    from tools.lib.recipe import annotation_files
    config = dict(test_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
        dict(data_root='data/a/', ann_file='val.json'),
        dict(data_root=5, ann_file='s3://bucket/b.json'),
        dict(type='RepeatDataset', data_root='data/c/', dataset=dict(ann_file='c.json'))])),
        test_evaluator=dict(type='CocoMetric', ann_file='data/a/val.json'))
    assert list(annotation_files(config, 'test_dataloader')) == [
        ('test_dataloader.dataset.datasets.0.ann_file', 'data/a/val.json'),
        ('test_dataloader.dataset.datasets.1.ann_file', 's3://bucket/b.json'),
        ('test_dataloader.dataset.datasets.2.dataset.ann_file', 'data/c/c.json'),
        ('test_evaluator.ann_file', 'data/a/val.json')]
    assert list(annotation_files(dict(test_dataloader='nope'), 'test_dataloader')) == []


# ------------------------------------------------------------ make_demo_data
@pytest.mark.parametrize('args,message', [
    (['--num-train', '0'], "argument --num-train: expected an integer >= 1, got '0'"),
    (['--num-val', '-3'], "argument --num-val: expected an integer >= 1, got '-3'"),
    (['--num-train', '1e3'], "argument --num-train: expected an integer, got '1e3'"),
    (['--img-size', '100000'], "argument --img-size: expected an integer from 1 to 4096, got "
     "'100000'"),
    (['--seed', '4294967296'], "argument --seed: expected an integer from 0 to 4294967295, "
     "got '4294967296'"),
    (['--seed', '-1'], "argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
    (['--min-size', 'nan'], "argument --min-size: expected a finite number, got 'nan'"),
    (['--min-size', '50', '--max-size', '20'], 'need 2 <= --min-size <= --max-size, got '
     '--min-size=50.0, --max-size=20.0'),
    (['--img-size', '64'], '--max-size must be <= --img-size (64), got 100.0'),
])
def test_make_demo_data_refuses_bad_sizes_and_counts(args, message, tmp_path, capsys):
    line = one_error(data_tool.main, [str(tmp_path / 'data'), *args], 'make_demo_data.py',
                     capsys)
    assert line == f'make_demo_data.py: error: {message}'
    assert not (tmp_path / 'data').exists()


def test_make_demo_data_into_a_file(tmp_path, capsys):
    (tmp_path / 'file').write_text('')
    line = one_error(data_tool.main, [str(tmp_path / 'file' / 'data'), '--num-train', '1',
                                      '--num-val', '1', '--img-size', '32', '--max-size', '20'],
                     'make_demo_data.py', capsys)
    assert line == (f'make_demo_data.py: error: cannot write the dataset to {tmp_path}/file/data:'
                    f' Not a directory: {tmp_path}/file')


def test_make_demo_data_into_a_folder_it_did_not_make(tmp_path, capsys):
    """One's own files in OUT: one line, nothing written (before: the shapes were written
    into the folder)."""
    (tmp_path / 'mine' / 'val').mkdir(parents=True)
    (tmp_path / 'mine' / 'val' / '000000.jpg').write_bytes(b'mine')
    line = one_error(data_tool.main, [str(tmp_path / 'mine')], 'make_demo_data.py', capsys)
    assert line == (f'make_demo_data.py: error: {tmp_path}/mine exists and does not hold a '
                    'dataset of this tool (no meta.json); remove it or choose another folder')
    assert [p.name for p in (tmp_path / 'mine').rglob('*')] == ['val', '000000.jpg']


# ---------------------------------------------------- the scripts themselves
@pytest.mark.slow
@pytest.mark.parametrize('script,args,line', [
    ('train.py', [str(DEMO), '--cfg-options', 'train_cfg.max_epoch=2'],
     "train.py: error: --cfg-options train_cfg.max_epoch: no key 'max_epoch' in train_cfg "
     '(did you mean train_cfg.max_epochs?); to add a new key, write +train_cfg.max_epoch=...'),
    ('test.py', [str(DEMO), 'missing.pth'],
     "test.py: error: checkpoint: no such checkpoint: 'missing.pth'"),
    ('make_demo_data.py', ['--num-train', '0'],
     "make_demo_data.py: error: argument --num-train: expected an integer >= 1, got '0'"),
])
def test_scripts_print_only_the_error(script, args, line, tmp_path):
    """As run by a user: no start-up warnings (mmengine's pkg_resources) around it."""
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stderr) == (2, line + '\n')


def test_number_flag_type_names_the_bounds():
    """tools.lib.errors.number: the one way the tools declare a numeric flag."""
    number = errors.number
    assert number(int, 1)('7') == 7 and number(float, low=0)('0.5') == 0.5
    for kind, low, high, text, message in [
            (int, 1, None, '0', "expected an integer >= 1, got '0'"),
            (int, None, 9, '10', "expected an integer <= 9, got '10'"),
            (int, 0, 9, '1.5', "expected an integer, got '1.5'"),
            (float, None, None, 'inf', "expected a finite number, got 'inf'"),
            (float, 0, 1, '-0.1', "expected a finite number from 0 to 1, got '-0.1'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=f'^{re.escape(message)}$'):
            number(kind, low, high)(text)
