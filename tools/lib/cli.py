"""Config handling shared by ``tools/train.py`` and ``tools/test.py``.

The tools keep MMDetection 3.x's command line; the logic behind each flag
lives here so it can be tested without starting a run.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import warnings
from typing import Any, Dict, List, Optional, Sequence

from mmengine.config import Config, ConfigDict, DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments both tools take: --work-dir, --cfg-options, --launcher."""
    parser.add_argument(
        '--work-dir',
        help='where logs and metrics go, and checkpoints when training (default: '
        'work_dirs/<config name>, unless the config sets work_dir)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_cfg.max_epochs=24 or '
        'key="[a,b]" for a list (no spaces inside a value)')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (older: --local_rank).
    parser.add_argument(
        '--local_rank', '--local-rank', type=int, default=0,
        help=argparse.SUPPRESS)


def export_local_rank(args: argparse.Namespace) -> None:
    """Give mmengine LOCAL_RANK when a launcher passed it as a flag."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


def load_config(config: str, args: argparse.Namespace) -> Config:
    """Read ``config`` and apply --cfg-options, --launcher and --work-dir.

    The work dir is chosen as mmdet does: --work-dir, else ``work_dir`` in
    the config, else ``./work_dirs/<config file name without .py>``.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config: no such file: {config!r}')
    cfg = Config.fromfile(config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(config))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


def enable_amp(cfg: Config) -> None:
    """--amp: mixed precision with a dynamic loss scale."""
    if 'optim_wrapper' not in cfg:
        raise KeyError('--amp: the config has no optim_wrapper to switch to '
                       'AmpOptimWrapper')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_auto_scale_lr(cfg: Config) -> None:
    """--auto-scale-lr: scale the lr by (GPUs x batch) / base_batch_size."""
    scale = cfg.get('auto_scale_lr')
    if not scale or 'base_batch_size' not in scale:
        raise KeyError(
            '--auto-scale-lr: the config needs auto_scale_lr = '
            'dict(enable=False, base_batch_size=<total batch the lr was '
            f'tuned for>), got auto_scale_lr={scale!r}')
    cfg.auto_scale_lr.enable = True


def check_checkpoint(path: str, what: str) -> None:
    """A local checkpoint must exist; URLs (``https://``, ``s3://``, ...) are left
    to mmengine's loader, as mmdet does."""
    if '://' not in path and not osp.isfile(path):
        raise FileNotFoundError(f'{what}: no such checkpoint: {path!r}')


def apply_resume(cfg: Config, resume: Optional[str]) -> None:
    """--resume: 'auto' finds the latest checkpoint in the work dir."""
    if resume is None:
        return
    if resume != 'auto':
        check_checkpoint(resume, '--resume')
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                         wait_time: float) -> None:
    """--show / --show-dir: make the VisualizationHook draw test images.

    ``show_dir`` is relative to ``<work_dir>/<timestamp>/``, as in mmdet.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise KeyError(
            '--show/--show-dir need default_hooks.visualization = '
            "dict(type='DetVisualizationHook') in the config")
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        hook['test_out_dir'] = show_dir


#: What --tta uses when a config has no ``tta_model`` (mmdet's test.py default).
DEFAULT_TTA_MODEL = dict(type='DetTTAModel',
                         tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                      max_per_img=100))


def enable_tta(cfg: Config) -> None:
    """--tta: wrap the model in test-time augmentation.

    The config's ``tta_model`` and ``tta_pipeline`` if it has them; else, as
    mmdet's tools/test.py does (with a warning), ``DetTTAModel`` merging the
    test pipeline's predictions with and without a horizontal flip.
    """
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using DetTTAModel '
                      '(NMS at IoU 0.5, 100 boxes per image)', stacklevel=2)
        cfg.tta_model = copy.deepcopy(DEFAULT_TTA_MODEL)
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; using its test pipeline '
                      'with and without a horizontal flip', stacklevel=2)
        cfg.tta_pipeline = flip_tta_pipeline(cfg)
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def flip_tta_pipeline(cfg: Config) -> List[Dict[str, Any]]:
    """The test pipeline with its last step (the packing) run twice, after a
    horizontal flip and without, through ``TestTimeAug``."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # wrappers such as ClassBalancedDataset
        dataset = dataset['dataset']
    steps = copy.deepcopy(list(dataset['pipeline']))
    pack = dict(steps[-1])
    if 'meta_keys' in pack:  # the merge needs to know which pass was flipped
        keys = tuple(pack['meta_keys'])
        pack['meta_keys'] = keys + tuple(k for k in ('flip', 'flip_direction')
                                         if k not in keys)
    steps[-1] = dict(type='TestTimeAug',
                     transforms=[[dict(type='RandomFlip', prob=1.0),
                                  dict(type='RandomFlip', prob=0.0)], [pack]])
    return steps


def build_runner(cfg: Config):
    """A Runner, or the config's ``runner_type`` from mmdet's registry."""
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        from mmdet.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def limit_dynamo_recompiles() -> None:
    """As mmdet's tools do: fewer torch.compile recompilations, if enabled."""
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    setup_cache_size_limit_of_dynamo()


def check_pickle_path(out: Optional[str]) -> None:
    """--out must name a .pkl / .pickle file."""
    if out is not None and not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must end with .pkl or .pickle, got {out!r}')


def parse(parser: argparse.ArgumentParser,
          argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv`` and export LOCAL_RANK."""
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args
