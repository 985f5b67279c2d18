#!/usr/bin/env python
"""Train a detector: mmdet's tools/train.py, with the differences README lists (strict
--cfg-options keys and load_from weights, a readable --resume checkpoint, torchrun on CPU)."""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from tools.lib.tool_main import checkpoints, cli, destroy_process_group, errors


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = errors.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true', help=(
        'scale the lr to the total batch size (config: auto_scale_lr.base_batch_size)'))
    parser.add_argument('--resume', nargs='?', const='auto', help=(
        'resume from this checkpoint, or (no value) from the latest one in the work dir'))
    return cli.parse(parser, argv, 'the load_from checkpoint')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cfg = cli.config_from_args(args)
    cli.apply_train_flags(cfg, args)
    if cfg.get('resume'):  # before the runner dumps this config into the run's work dir
        checkpoints.check_resume_checkpoint(cfg.work_dir, cfg.get('load_from'), cfg.to_dict())
    runner = cli.prepare_runner(cfg, ['train'] + (['val'] if cfg.get('val_cfg') else []))
    if not cfg.get('resume') and cfg.get('load_from') is not None:
        checkpoints.check_weights_fit(runner.model, cfg.load_from, args.allow_partial_weights)
    runner.train()
    del runner  # with its DDP model, before the process group goes (not after an exception)
    destroy_process_group()


if __name__ == '__main__':
    errors.run(main)
