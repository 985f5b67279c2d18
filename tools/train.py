#!/usr/bin/env python
"""Train a detector with MMDetection 3.x, with the Poly-1 losses registered.

Same command line as mmdet's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--allow-partial-weights]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

mmengine's Runner does the work, as in mmdet's tool; ``--resume`` alone
continues from the latest checkpoint in the work dir, with a path from that
checkpoint (mmengine restarts an epoch interrupted after an iteration
checkpoint from its first iteration). Besides mmdet's tool: weights given by
``load_from`` must fit the model exactly unless ``--allow-partial-weights``
(tools/lib/checkpoints.py), ``--cfg-options`` keys must exist unless written
``+key`` (tools/lib/cli.py), under torchrun without CUDA the run uses gloo
(tools/lib/dist.py), and a user error is one line on stderr, exit status 2.
"""
import argparse
import os.path as osp
import sys
from typing import Any, Optional, Sequence

# Run from a checkout without installing: make the package importable.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import errors

errors.ignore_known_warnings()  # before mmengine is imported

from mmengine.config import Config

import mmdet_polyloss  # noqa: F401  (registers the losses, loads mmengine checkpoints)
from tools.lib import checkpoints, cli
from tools.lib.dist import destroy_process_group, setup_cpu_distributed


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = errors.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (AmpOptimWrapper, dynamic scale)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr to the actual total batch size '
        '(config: auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or (no value) from the latest '
        'one in the work dir')
    cli.add_weights_arg(parser, 'the load_from checkpoint')
    cli.add_common_args(parser)
    return cli.parse(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cli.limit_dynamo_recompiles()
    cfg = cli.config_from_args(args)
    if args.amp:
        cli.enable_amp(cfg)
    if args.auto_scale_lr:
        cli.enable_auto_scale_lr(cfg)
    cli.apply_resume(cfg, args.resume)
    setup_cpu_distributed(cfg, args.launcher)
    cli.check_annotation_files(cfg, ['train_dataloader'] + (
        ['val_dataloader'] if cfg.get('val_cfg') else []))
    loops = ['train'] + (['val'] if cfg.get('val_cfg') else [])
    train(cli.prepare_runner(cfg, loops), cfg, args.allow_partial_weights)
    # Only after a finished run: after an exception the barrier inside would wait
    # for ranks that never arrive (a hang until the collective timeout).
    destroy_process_group()  # the runner (and its DDP model) is gone by now


def train(runner: Any, cfg: Config, allow_partial_weights: bool) -> None:
    """Train; ``load_from`` weights (not a resume) must fit the model first, and
    a resume's checkpoint must be readable."""
    load_from = cfg.get('load_from')
    if cfg.get('resume'):
        checkpoints.check_resume_checkpoint(runner.work_dir, load_from)
    elif load_from is not None:
        checkpoints.check_weights_fit(runner.model, load_from, allow_partial_weights)
    runner.train()


if __name__ == '__main__':
    errors.run(main)
