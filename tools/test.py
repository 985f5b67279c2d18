#!/usr/bin/env python
"""Test (and evaluate) a detector checkpoint with MMDetection 3.x.

Same command line as mmdet's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
        [--show] [--show-dir DIR] [--wait-time SECONDS] [--tta]
        [--allow-partial-weights] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

Metrics are logged and written to ``<work-dir>/<timestamp>/<timestamp>.json``
(what tools/sweep_report.py reads). Besides mmdet's tool: the checkpoint's
weights must fit the model exactly (every key, each shape), unless
``--allow-partial-weights`` (mmengine's warnings only): no metrics for the
wrong weights (tools/lib/checkpoints.py). A user error is one line on
stderr, exit status 2.
"""
import argparse
import os.path as osp
import sys
from typing import Any, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import errors

errors.ignore_known_warnings()  # before mmengine is imported

import mmdet_polyloss  # noqa: F401  (registers the losses, loads mmengine checkpoints)
from tools.lib import checkpoints, cli
from tools.lib.dist import destroy_process_group, setup_cpu_distributed


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = errors.ArgumentParser(
        description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument(
        '--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--show-dir',
        help='save images with predictions drawn to '
        '<work-dir>/<timestamp>/<show-dir>')
    parser.add_argument(
        '--wait-time', type=cli.non_negative_seconds, default=2,
        help='seconds each image is shown with --show')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation from the config's tta_model and "
        'tta_pipeline')
    cli.add_weights_arg(parser, 'the checkpoint')
    cli.add_common_args(parser)
    return cli.parse(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cli.check_checkpoint(args.checkpoint, 'checkpoint')
    cli.check_pickle_path(args.out)
    if args.out is not None:
        cli.check_writable(args.out, '--out')
    cli.limit_dynamo_recompiles()
    cfg = cli.config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cli.enable_visualization(cfg, args.show, args.show_dir,
                                 args.wait_time)
    if args.tta:
        cli.enable_tta(cfg)
    setup_cpu_distributed(cfg, args.launcher)
    cli.check_annotation_files(cfg, ['test_dataloader'])
    test(cli.prepare_runner(cfg, ['test']), args.out, args.checkpoint, args.allow_partial_weights)
    # Only after a finished run: after an exception the barrier inside would wait
    # for ranks that never arrive (a hang until the collective timeout).
    destroy_process_group()  # the runner (and its DDP model) is gone by now


def test(runner: Any, out: Optional[str], checkpoint: str,
         allow_partial_weights: bool) -> None:
    """Check that the checkpoint fits the model, evaluate; with ``out``, also
    dump the raw predictions to that pickle."""
    checkpoints.check_weights_fit(runner.model, checkpoint, allow_partial_weights)
    if out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    runner.test()


if __name__ == '__main__':
    errors.run(main)
