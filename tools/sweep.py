#!/usr/bin/env python
"""Run an epsilon sweep: train and test every (epsilon, seed), then report.

    python tools/sweep.py CONFIG --epsilons -1 0.5 --seeds 0 1 [--baseline CONFIG] [--dry-run]

Runs go to ``<--work-dir-root>/<CONFIG name at eps<e>>[_seed<N>]``, finished ones skipped,
started ones resumed (tools/lib/sweep/run.py); then ``sweep.md`` and ``sweep.png``.
"""
import os.path as osp
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.lib.cli import AMP_OPTIONS, option_key, require_amp_device
from tools.lib.errors import ArgumentParser, UserError, ignore_known_warnings, number, run
from tools.lib.sweep import slurm as sweep_slurm
from tools.lib.sweep.local import run_locally
from tools.lib.sweep.plan import check_inputs_before_clearing, plan_runs, to_be_emptied
from tools.lib.sweep.report import write_sweep_report
from tools.lib.sweep.settings import parse_epsilons, parse_seeds
from tools.lib.sweep.slurm_jobs import MAX_SIGNAL_SECONDS

#: Options only --launcher slurm takes; each defaults to None (--wait too) to tell them given.
SLURM_ONLY = ('partition', 'cpus_per_task', 'max_parallel', 'time', 'signal_seconds',
              'sbatch_args', 'wait', 'retry_failed')
#: Slurm's largest MaxArraySize (slurm.conf): no job array runs more tasks than this (sbatch
#: reads a larger --array limit modulo 2^32).
MAX_ARRAY_SIZE = 4000001


def parse_args(argv: Optional[Sequence[str]]) -> Namespace:
    parser = ArgumentParser(prog='sweep.py', description=__doc__.split('\n\n')[0])
    add, slurm = parser.add_argument, parser.add_argument_group('--launcher slurm').add_argument
    add('config', help='config with a Poly-1 classifier loss')
    add('--epsilons', nargs='*', required=True, metavar='E', help='Poly-1 epsilons, each >= -1')
    add('--seeds', nargs='+', default=['0'], metavar='N', help='seeds in [0, 2^32) (default: 0)')
    add('--baseline', metavar='CONFIG', help="the baseline's config, trained per seed")
    add('--launcher', choices=('none', 'pytorch', 'slurm'), default='none',
        help='none: here, one process; pytorch: here, torchrun; slurm: one job array')
    add('--gpus', type=number(int), default=1,
        help='GPUs per run (pytorch, slurm; slurm: 0 is a CPU run)')
    add('--work-dir-root', help='where the runs go (default: work_dirs/sweep_<config name>)')
    add('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE', help='for every run')
    add('--amp', action='store_true',
        help='mixed precision for every run (AmpOptimWrapper, dynamic loss scale)')
    retrain = parser.add_mutually_exclusive_group().add_argument
    retrain('--force', action='store_true', help='retrain every run from scratch')
    retrain('--retrain-changed', action='store_true',
            help='retrain runs whose config or --key-files changed')
    add('--key-files', nargs='+', default=[], metavar='FILE',
        help='files a finished run depends on besides its config')
    add('--dry-run', action='store_true', help='print the plan and the commands, run nothing')
    slurm('--partition', help='the Slurm partition (required)')
    slurm('--cpus-per-task', type=number(int, 1), help='CPUs per process (default: 1)')
    slurm('--max-parallel', type=number(int, 1, MAX_ARRAY_SIZE),
          help='at most this many runs at once')
    slurm('--time', help="each attempt's time limit, e.g. 4:00:00 (then requeued, resumed)")
    slurm('--signal-seconds', type=number(int, 2, MAX_SIGNAL_SECONDS),  # 1 s to stop, at least
          help='requeue this long before --time (default: 300)')
    slurm('--sbatch-args', metavar='"ARGS"', help='more sbatch arguments, as one string')
    slurm('--wait', action='store_true', default=None, help='return once the report is written')
    slurm('--retry-failed', action='store_true', default=None,
          help='resubmit runs whose training or test exited with an error')
    args = parser.parse_args(argv)
    args.epsilons = parse_epsilons(' '.join(args.epsilons), '--epsilons')
    args.seeds = parse_seeds(' '.join(args.seeds), '--seeds')
    least = 0 if args.launcher == 'slurm' else 1
    if args.gpus < least:
        raise UserError(f'--gpus must be >= {least}, got {args.gpus}')
    if args.launcher == 'none' and args.gpus != 1:
        raise UserError(f'--gpus {args.gpus} needs --launcher pytorch or slurm')
    if not args.epsilons and not args.baseline:
        raise UserError('nothing to run: give --epsilons values, a --baseline, or both')
    if args.launcher == 'slurm' and not args.partition:
        raise UserError('--launcher slurm needs --partition NAME')
    given = [name for name in SLURM_ONLY if getattr(args, name) is not None]
    if given and args.launcher != 'slurm':
        raise UserError(f'--{given[0].replace("_", "-")} needs --launcher slurm')
    if args.time is not None and args.time != args.time.strip():
        raise UserError(f'--time {args.time!r} has spaces around it, which sbatch refuses; '
                        f'write --time {args.time.strip()!r}')
    args.sbatch_args = sweep_slurm.parse_sbatch_args(args.sbatch_args)
    if args.amp:  # as tools/train.py --amp; options, so part of each run's key
        amp_keys = [option_key(option) for option in AMP_OPTIONS]
        clash = [o for o in args.cfg_options if option_key(o) in amp_keys]
        if clash:
            raise UserError(f'--amp sets {" and ".join(amp_keys)}; --cfg-options '
                            f'{clash[0]!r} sets it too: give one or the other')
        if args.launcher == 'slurm' and args.gpus == 0:
            raise UserError('--amp trains on GPUs, but --gpus 0 makes every run a CPU run')
        if args.launcher != 'slurm' and not args.dry_run:  # Slurm's nodes may have GPUs
            require_amp_device('--amp')
        args.cfg_options += AMP_OPTIONS
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    ignore_known_warnings()
    root = Path(args.work_dir_root or f'work_dirs/sweep_{Path(args.config).stem}')
    runs = plan_runs(args.config, args.epsilons, args.seeds, args.baseline, root,
                     args.cfg_options, args.key_files, args.dry_run, max(args.gpus, 1))
    problems = {}  # Slurm: a run's work dir may change under a running task
    for each in runs:
        try:
            each.assess(args.force, args.retrain_changed)
        except UserError as error:
            if not args.dry_run and each.holder():
                each.state = 'held'  # being changed by its holder: assessed once held
            elif args.launcher == 'slurm' and not args.dry_run:
                problems[each.name] = error
            else:
                raise
    emptied = to_be_emptied(runs)
    if not args.dry_run and args.launcher != 'slurm':  # Slurm's nodes may hold data this
        check_inputs_before_clearing(emptied)         # host does not
    missing = [path for path in args.key_files if not osp.exists(path)]
    if missing:  # only a dry run gets here with them
        print(f'  (--key-files not made yet: {" ".join(missing)}; a finished run counts '
              'as changed)', flush=True)
    if args.launcher != 'slurm' or args.dry_run:  # submit() prints its own plan
        print(f'[sweep] {len(runs)} runs in {root}:', flush=True)
        for each in runs:
            print(f'  {each.name:<48} {each.state:<8} {" ".join(each.options)}')
    if emptied:
        names = ', '.join(each.name for each in emptied)
        print(f'[sweep] {"a run would empty" if args.dry_run else "emptied before its run"}: '
              f'the folder of {names} (it holds an earlier start of the run, a run of other '
              "settings, or files not the sweep's)", flush=True)
    if args.launcher == 'slurm':
        sweep_slurm.main(args, runs, root, problems)
        return
    start = time.time()
    busy = run_locally(runs, args)
    if args.dry_run:
        return
    for each in runs:  # another sweep on this root may have finished some meanwhile
        each.assess(False, False)
    left = [each.name for each in runs if each.state != 'done']
    if left:
        raise UserError(f'{len(left)} runs are not done ({", ".join(left)}): another process '
                        f'held {", ".join(busy) or "them"} (skipped above); the sweep that '
                        'finishes last writes the report, or rerun this one then')
    write_sweep_report(runs, root, bool(args.baseline), after=f', {time.time() - start:.0f} s')


if __name__ == '__main__':
    run(main, prog='sweep.py')
