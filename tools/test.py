#!/usr/bin/env python
"""Test a detector checkpoint: mmdet's tools/test.py (metrics in
``<work-dir>/<timestamp>/<timestamp>.json``), except that the weights must fit the model
unless --allow-partial-weights, and a user error is one line on stderr, exit status 2."""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from tools.lib.tool_main import checkpoints, cli, destroy_process_group, errors


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = errors.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='save images with predictions drawn to '
                        '<work-dir>/<timestamp>/<show-dir>')
    parser.add_argument('--wait-time', default=2,
                        type=errors.number(float, low=0, what='a number of seconds'),
                        help='seconds each image is shown with --show')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    return cli.parse(parser, argv, 'the checkpoint')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cli.check_checkpoint(args.checkpoint, 'checkpoint')
    if args.out is not None:
        cli.check_pickle_path(args.out)
        cli.check_writable(args.out, '--out')
    cfg = cli.config_from_args(args)
    cfg.load_from = args.checkpoint
    cli.apply_test_flags(cfg, args)
    runner = cli.prepare_runner(cfg, ['test'])
    checkpoints.check_weights_fit(runner.model, args.checkpoint, args.allow_partial_weights)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()
    del runner  # with its DDP model, before the process group goes (not after an exception)
    destroy_process_group()


if __name__ == '__main__':
    errors.run(main)
