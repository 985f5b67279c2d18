"""Flag handling behind tools/train.py and tools/test.py (no training)."""
import argparse
import os
import re
import types
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from tools.lib import cli, dist
from tools.lib.dist import setup_cpu_distributed
from tools.lib.errors import UserError

from train_helpers import load_tool, make_workspace

ROOT = Path(__file__).resolve().parents[2]
COCO_POLY = ROOT / 'configs/retinanet/retinanet_r50_fpn_poly1-eps-1_1x_coco.py'
DEMO = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'


train_tool = load_tool('train')
test_tool = load_tool('test')


def _args(**kwargs) -> argparse.Namespace:
    base = dict(config=str(DEMO), work_dir=None, cfg_options=None, launcher='none')
    base.update(kwargs)
    return argparse.Namespace(**base)


def _train_flags(amp=False, auto_scale_lr=False, resume=None) -> argparse.Namespace:
    return argparse.Namespace(amp=amp, auto_scale_lr=auto_scale_lr, resume=resume)


def _test_flags(show=False, show_dir=None, wait_time=2, tta=False) -> argparse.Namespace:
    return argparse.Namespace(show=show, show_dir=show_dir, wait_time=wait_time, tta=tta)


def test_train_cli_matches_mmdet():
    args = train_tool.parse_args([
        str(DEMO), '--work-dir', 'w', '--amp', '--auto-scale-lr', '--resume',
        '--cfg-options', 'train_cfg.max_epochs=3', 'a.b=[1,2]', '--launcher',
        'pytorch'
    ])
    assert args.resume == 'auto'  # bare --resume
    assert args.amp and args.auto_scale_lr
    assert args.cfg_options == {'train_cfg.max_epochs': 3, 'a.b': [1, 2]}
    assert args.launcher == 'pytorch'
    assert train_tool.parse_args([str(DEMO), '--resume',
                                  'x.pth']).resume == 'x.pth'
    assert train_tool.parse_args([str(DEMO)]).resume is None


def test_test_cli_matches_mmdet():
    args = test_tool.parse_args([
        str(DEMO), 'ckpt.pth', '--out', 'r.pkl', '--show-dir', 'vis',
        '--work-dir', 'w', '--launcher', 'slurm'
    ])
    assert (args.checkpoint, args.out, args.show_dir, args.launcher) == (
        'ckpt.pth', 'r.pkl', 'vis', 'slurm')


def test_work_dir_priority(tmp_path):
    cfg = cli.config_from_args(_args())
    assert cfg.work_dir == os.path.join('./work_dirs',
                                        'retinanet_tiny_fpn_focal_shapes')
    cfg = cli.config_from_args(_args(work_dir=str(tmp_path)))
    assert cfg.work_dir == str(tmp_path)
    cfg = cli.config_from_args(
        _args(cfg_options={'work_dir': 'from_cfg', 'train_cfg.max_epochs': 2}))
    assert cfg.work_dir == 'from_cfg'
    assert cfg.train_cfg.max_epochs == 2


def test_missing_config_names_it():
    with pytest.raises(UserError, match='nope.py'):
        cli.config_from_args(_args(config='nope.py'))


def test_amp_and_auto_scale_lr_edit_the_config(monkeypatch):
    """As on a machine with a GPU (without one, --amp is refused: test_hostile_inputs.py)."""
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cuda')
    cfg = Config.fromfile(str(COCO_POLY))
    assert cfg.auto_scale_lr.enable is False
    cli.apply_train_flags(cfg, _train_flags(amp=True, auto_scale_lr=True))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    # An optim_wrapper without a type (mmengine's OptimWrapper by default) is switched too.
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
    cli.apply_train_flags(cfg, _train_flags(amp=True))
    assert cfg.optim_wrapper == dict(type='AmpOptimWrapper', loss_scale='dynamic',
                                     optimizer=dict(type='SGD', lr=0.1))


def test_auto_scale_lr_without_base_batch_size_is_an_error():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    with pytest.raises(UserError, match='--auto-scale-lr'):
        cli.apply_train_flags(cfg, _train_flags(auto_scale_lr=True))


def test_resume(tmp_path):
    cfg = Config(dict(load_from='pretrained.pth'))
    cli.apply_train_flags(cfg, _train_flags())
    assert 'resume' not in cfg and cfg.load_from == 'pretrained.pth'
    cli.apply_train_flags(cfg, _train_flags(resume='auto'))
    assert cfg.resume is True and cfg.load_from is None
    ckpt = tmp_path / 'epoch_3.pth'
    ckpt.write_bytes(b'')
    cli.apply_train_flags(cfg, _train_flags(resume=str(ckpt)))
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    with pytest.raises(UserError, match="--resume.*missing.pth"):
        cli.apply_train_flags(cfg, _train_flags(resume=str(tmp_path / 'missing.pth')))


def test_checkpoint_urls_are_left_to_mmengine():
    """mmdet's tools take checkpoint URLs; only local paths are checked here."""
    url = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/x.pth'
    cli.check_checkpoint(url, 'checkpoint')  # no error
    cfg = Config(dict(load_from=None))
    cli.apply_train_flags(cfg, _train_flags(resume='s3://bucket/epoch_3.pth'))
    assert cfg.resume and cfg.load_from == 's3://bucket/epoch_3.pth'
    with pytest.raises(UserError, match=re.escape(
            "checkpoint: no such checkpoint: 'missing.pth'")):
        cli.check_checkpoint('missing.pth', 'checkpoint')


def test_a_show_dir_inside_the_test_set_is_refused_elsewhere_taken(tmp_path):
    """mmdet joins it to <work_dir>/<timestamp>/ (an absolute one as it is) and names each
    drawing after its image: into the dataset's folder, it drew over the images."""
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = str(tmp_path / 'work')
    data_root = os.path.realpath(cfg.test_dataloader.dataset.data_root)
    for show_dir in (data_root, os.path.join(data_root, 'val'), '../' * 30 + data_root[1:]):
        with pytest.raises(UserError, match=f"^--show-dir {re.escape(repr(show_dir))}: the "
                           'images would be drawn into .*, inside the test set'):
            cli.apply_test_flags(cfg, _test_flags(show_dir=show_dir))
    for show_dir in ('vis', str(tmp_path / 'drawings'), '../vis'):
        cli.apply_test_flags(cfg, _test_flags(show_dir=show_dir))
        assert cfg.default_hooks.visualization.test_out_dir == show_dir


def test_show_dir_turns_on_drawing():
    cfg = Config.fromfile(str(DEMO))
    cli.apply_test_flags(cfg, _test_flags(show_dir='vis', wait_time=1))
    hook = cfg.default_hooks.visualization
    assert hook.draw is True and hook.test_out_dir == 'vis'
    assert not hook.get('show', False)


def test_out_must_be_a_pickle():
    cli.check_pickle_path(None)
    cli.check_pickle_path('results.pkl')
    with pytest.raises(UserError, match="--out.*results.json"):
        cli.check_pickle_path('results.json')


def test_tta_uses_the_configs_tta_settings():
    cfg = Config.fromfile(str(COCO_POLY))  # retinanet ships retinanet_tta.py
    want_pipeline = cfg.tta_pipeline
    cli.apply_test_flags(cfg, _test_flags(tta=True))
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module.bbox_head.loss_cls.type == 'Poly1FocalLoss'
    assert cfg.test_dataloader.dataset.pipeline == want_pipeline


def test_tta_without_tta_settings_flips_as_mmdet_does():
    """Configs without tta_model/tta_pipeline (ATSS, FCOS, the demo) get
    mmdet's default, with a warning, and both build."""
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(DEMO))
    test_steps = list(cfg.test_dataloader.dataset.pipeline)
    with pytest.warns(UserWarning, match='--tta: the config has no tta_model'), \
            pytest.warns(UserWarning, match='--tta: the config has no tta_pipeline'):
        cli.apply_test_flags(cfg, _test_flags(tta=True))
    tta = cfg.test_dataloader.dataset.pipeline
    assert [s['type'] for s in tta[:-1]] == [s['type'] for s in test_steps[:-1]]
    flips, (pack,) = tta[-1]['transforms']
    assert [f['prob'] for f in flips] == [1.0, 0.0]
    assert pack['type'] == 'PackDetInputs' and 'flip' in pack['meta_keys']
    assert type(MODELS.build(cfg.model)).__name__ == 'DetTTAModel'
    assert len(Compose(tta).transforms) == len(test_steps)


def test_mmengines_torchrun_start_needs_a_gpu_which_dist_py_works_around():
    """Why tools/lib/dist.py exists: mmengine 0.10's ``init_dist('pytorch')``
    sets a CUDA device before joining, even with the gloo backend."""
    import socket
    import subprocess
    import sys
    with socket.socket() as free:
        free.bind(('127.0.0.1', 0))
        port = str(free.getsockname()[1])
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=port, CUDA_VISIBLE_DEVICES='')
    join = "from mmengine.dist import init_dist; init_dist('pytorch', backend='gloo')"
    proc = subprocess.run([sys.executable, '-c', join], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and 'torch.cuda' in proc.stderr.replace('/', '.')
    ours = ('from mmengine.config import Config\n'
            'from tools.lib.dist import setup_cpu_distributed\n'
            'import torch.distributed as d\n'
            f'cfg = Config.fromfile({str(DEMO)!r})\n'
            "assert setup_cpu_distributed(cfg, 'pytorch') and d.get_world_size() == 1\n")
    proc = subprocess.run([sys.executable, '-c', ours], env=dict(env, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cpu_distributed_is_a_no_op_without_torchrun_launcher():
    cfg = Config.fromfile(str(DEMO))
    assert setup_cpu_distributed(cfg, 'none') is False
    assert 'model_wrapper_cfg' not in cfg


def test_cpu_distributed_needs_the_torchrun_environment(monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip('with CUDA the GPU path is used')
    monkeypatch.delenv('MASTER_PORT', raising=False)
    cfg = Config.fromfile(str(DEMO))
    with pytest.raises(UserError, match='MASTER_PORT'):
        setup_cpu_distributed(cfg, 'pytorch')


def test_cpu_distributed_keeps_the_configs_dist_settings(monkeypatch):
    """env_cfg.dist_cfg reaches init_process_group as mmengine's init_dist
    passes it (timeout in seconds), with the backend switched to gloo."""
    import datetime

    import torch
    if torch.cuda.is_available():
        pytest.skip('with CUDA the GPU path is used')
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='29500').items():
        monkeypatch.setenv(key, value)
    joined = []
    monkeypatch.setattr(dist.torch_dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(dist.torch_dist, 'init_process_group',
                        lambda **kwargs: joined.append(kwargs))
    cfg = Config.fromfile(str(DEMO))
    cfg.merge_from_dict({'env_cfg.dist_cfg.timeout': 7200})
    assert setup_cpu_distributed(cfg, 'pytorch') is True
    assert joined == [dict(init_method='env://', backend='gloo',
                           timeout=datetime.timedelta(hours=2))]


def test_dist_cfg_keys_mmengine_accepts_are_accepted():
    """init_backend is mmengine's (not torch's) and init_method may be set
    in the config, as mmengine's init_dist allows."""
    kwargs = dist.process_group_kwargs(
        dict(backend='gloo', init_backend='torch', init_method='tcp://127.0.0.1:1'))
    assert kwargs == dict(backend='gloo', init_method='tcp://127.0.0.1:1')
    assert dist.process_group_kwargs(dict(backend='gloo'))['init_method'] == 'env://'
    with pytest.raises(UserError, match="init_backend must be 'torch'.*got 'nccl'"):
        dist.process_group_kwargs(dict(backend='gloo', init_backend='nccl'))


@pytest.mark.parametrize('timeout', ['1800', 0, -5, True])
def test_bad_dist_timeout_names_the_setting(timeout):
    with pytest.raises(UserError, match=f'env_cfg.dist_cfg.timeout must be a positive number '
                                        f'of seconds, got {re.escape(repr(timeout))}'):
        dist.process_group_kwargs(dict(backend='gloo', timeout=timeout))


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_failed_run_skips_the_closing_barrier(tool, tmp_path, monkeypatch):
    """After an exception the closing barrier would wait for ranks that never
    come (a hang until the collective timeout): only a finished run leaves the
    process group."""
    module = train_tool if tool == 'train' else test_tool
    monkeypatch.chdir(make_workspace(tmp_path))  # the data the config names
    left = []
    monkeypatch.setattr(module, 'destroy_process_group', lambda: left.append(True))

    def broken_runner(cfg):
        raise RuntimeError('rank failed')
    monkeypatch.setattr(cli, 'build_runner', broken_runner)
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'')
    argv = [str(DEMO), '--work-dir', str(tmp_path)]
    if tool == 'test':
        argv.insert(1, str(ckpt))
    with pytest.raises(RuntimeError, match='rank failed'):
        module.main(argv)
    assert left == []

    class FinishingRunner:  # a run that ends: the process group is left, once
        model = torch.nn.Identity()
        train_loop = val_loop = test_loop = types.SimpleNamespace(max_iters=1)

        def train(self):
            return None

        def test(self):
            return {}
    monkeypatch.setattr(cli, 'build_runner', lambda cfg: FinishingRunner())
    monkeypatch.setattr(module.checkpoints, 'check_weights_fit', lambda *args: None)
    module.main(argv)
    assert left == [True]


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_launch_without_torchrun_is_one_line_and_exit_2(tool, tmp_path):
    """--launcher pytorch started without torchrun: the tool says how to start it."""
    import subprocess
    import sys

    import torch
    if torch.cuda.is_available():
        pytest.skip('with CUDA the GPU path is used')
    env = {key: value for key, value in os.environ.items() if key not in dist._TORCHRUN_ENV}
    checkpoint = tmp_path / 'epoch_1.pth'  # not read: the launch fails first
    checkpoint.write_bytes(b'PK')
    extra = [] if tool == 'train' else [str(checkpoint)]
    result = subprocess.run(
        [sys.executable, f'tools/{tool}.py', str(DEMO), *extra, '--launcher', 'pytorch',
         '--work-dir', str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'{tool}.py: error: --launcher pytorch needs the torchrun environment'), result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_amp_trains_and_validates_a_detector_under_autocast(tmp_path, monkeypatch):
    """train.py --amp end to end without a GPU: mmengine's AmpOptimWrapper asserts a CUDA
    (NPU, MLU) device, so that check is patched, and CPU autocast (bf16) stands in for
    CUDA's fp16. Poly1FocalLoss gets half-precision logits inside the detector, and the run
    trains and validates to a finite loss."""
    import json

    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper
    import torch

    from mmdet_polyloss.losses import PolyNFocalLoss

    from train_helpers import FAST
    seen = []
    forward = PolyNFocalLoss.forward
    monkeypatch.setattr(PolyNFocalLoss, 'forward', lambda self, pred, *args, **kwargs: (
        seen.append(pred.dtype), forward(self, pred, *args, **kwargs))[1])
    monkeypatch.setattr(amp_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(cli, 'require_amp_device', lambda what: None)
    monkeypatch.chdir(make_workspace(tmp_path, num_train=8, num_val=4))
    work_dir = tmp_path / 'amp'
    train_tool.main([str(ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'),
                     '--amp', '--work-dir', str(work_dir), '--cfg-options', *FAST])
    assert seen and set(seen) == {torch.bfloat16}
    (scalars,) = work_dir.glob('*/vis_data/scalars.json')
    losses = [json.loads(line)['loss_cls'] for line in scalars.read_text().splitlines()
              if 'loss_cls' in line]
    assert losses and all(0 < loss < 10 for loss in losses), losses
    assert (work_dir / 'last_checkpoint').is_file()
    assert any('coco/bbox_mAP' in line for line in scalars.read_text().splitlines())
