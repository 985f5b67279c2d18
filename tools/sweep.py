#!/usr/bin/env python
"""Run an epsilon sweep: train and test every (epsilon, seed), then report.

    python tools/sweep.py CONFIG --epsilons -1 -0.5 0.5 1 --seeds 0 1 2
        [--baseline BASELINE_CONFIG] [--launcher {none,pytorch,slurm}] [--gpus N]
        [--partition NAME] [--work-dir-root DIR] [--cfg-options KEY=VALUE ...]
        [--force | --retrain-changed] [--key-files FILE ...] [--dry-run]

CONFIG has a Poly-1 loss as its box classifier loss; each run overrides its
``epsilon`` and ``randomness.seed`` (through ``--cfg-options``) and, with
``--baseline`` (mmdet's focal or cross-entropy config), the baseline trains at
every seed too. Each run has its own work dir under ``--work-dir-root``
(default ``work_dirs/sweep_<CONFIG name>``), named like the COCO configs:
``<CONFIG name with eps<e>>[_seed<N>]``. Finished runs are skipped, started
ones resume from their last checkpoint (``--resume``), trained ones are tested;
at the end ``sweep.md`` (table) and ``sweep.png`` (AP and AR@100 against
epsilon, seed means with their spread) go to the root. ``--dry-run`` prints
the plan and the commands. A user error is one line on stderr, exit status 2.
"""
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import sweep_plan
from tools.lib.errors import ArgumentParser, UserError, ignore_known_warnings, run
from tools.lib.run_settings import parse_epsilons, parse_seeds


def parse_args(argv: Optional[Sequence[str]]):
    parser = ArgumentParser(prog='sweep.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config with a Poly-1 classifier loss')
    parser.add_argument('--epsilons', nargs='*', required=True, metavar='E',
                        help='Poly-1 epsilons, each >= -1 (e.g. -1 -0.5 0.5 1; none: the '
                        'baseline only)')
    parser.add_argument('--seeds', nargs='+', default=['0'], metavar='N',
                        help='training seeds, integers in [0, 2^32) (default: 0)')
    parser.add_argument('--baseline', metavar='CONFIG',
                        help="the baseline's config (mmdet's focal loss), trained per seed")
    parser.add_argument('--launcher', choices=sweep_plan.SWEEP_LAUNCHERS, default='none',
                        help='none: one process; pytorch: tools/dist_train.sh (torchrun); '
                        'slurm: tools/slurm_train.sh (srun)')
    parser.add_argument('--gpus', type=int, default=1,
                        help='processes (GPUs) per run for pytorch and slurm (default: 1)')
    parser.add_argument('--partition', help='SLURM partition (--launcher slurm)')
    parser.add_argument('--work-dir-root', help='where the runs go (default: '
                        'work_dirs/sweep_<config name>)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='config overrides for every run, e.g. train_cfg.max_epochs=24')
    retrain = parser.add_mutually_exclusive_group()
    retrain.add_argument('--force', action='store_true',
                         help='retrain every run from scratch (deletes its work dir)')
    retrain.add_argument('--retrain-changed', action='store_true',
                         help='retrain runs whose config or --key-files changed')
    parser.add_argument('--key-files', nargs='+', default=[], metavar='FILE',
                        help='files a finished run depends on besides its config '
                        '(a change makes it a run of other settings)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan and the commands, run nothing')
    args = parser.parse_args(argv)
    args.epsilons = parse_epsilons(' '.join(args.epsilons), '--epsilons')
    args.seeds = parse_seeds(' '.join(args.seeds), '--seeds')
    if args.gpus < 1:
        raise UserError(f'--gpus must be >= 1, got {args.gpus}')
    if args.launcher == 'none' and args.gpus != 1:
        raise UserError(f'--gpus {args.gpus} needs --launcher pytorch or slurm')
    if not args.epsilons and not args.baseline:
        raise UserError('nothing to run: give --epsilons values, a --baseline, or both')
    if args.launcher == 'slurm' and not args.partition:
        raise UserError('--launcher slurm needs --partition NAME')
    return args


def execute(command: List[str], launcher: sweep_plan.Launcher, dry_run: bool) -> None:
    print('  $ ' + ' '.join(command), flush=True)
    if dry_run:
        return
    result = subprocess.run(command, env=launcher.environment(), check=False)
    if result.returncode != 0:
        raise UserError(f'{Path(command[1]).name} exited with status {result.returncode} '
                        '(its output is above); rerun the sweep to resume')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    ignore_known_warnings()
    root = Path(args.work_dir_root or f'work_dirs/sweep_{Path(args.config).stem}')
    runs = sweep_plan.plan_runs(args.config, args.epsilons, args.seeds, args.baseline, root,
                                args.cfg_options, args.key_files, args.dry_run)
    launcher = sweep_plan.Launcher(args.launcher, args.gpus, args.partition)
    for each in runs:
        sweep_plan.assess(each, args.force, args.retrain_changed)
    print(f'[sweep] {len(runs)} runs in {root}:', flush=True)
    for each in runs:
        print(f'  {each.name:<48} {each.state:<8} {" ".join(each.options)}')
    missing = [path for path in args.key_files if not osp.exists(path)]
    if missing:  # only a dry run gets here with them
        print(f'  (--key-files not made yet: {" ".join(missing)}; a finished run counts '
              'as changed)', flush=True)
    start = time.time()
    for each in runs:
        if each.state == 'done':
            continue
        print(f'\n[sweep] {each.name}: {each.state}', flush=True)
        if each.state in ('new', 'resume'):
            if not args.dry_run:
                try:
                    sweep_plan.clear_for_training(each)
                    each.write_marker('training')
                except OSError as error:
                    raise UserError(f'cannot prepare the work dir {str(each.work_dir)!r}: '
                                    f'{error.strerror}: {error.filename!r}') from error
            execute(launcher.train(each, resume=each.state == 'resume'), launcher,
                    args.dry_run)
            if not args.dry_run:
                each.write_marker('trained')
        checkpoint = ('<last checkpoint>' if args.dry_run and each.state != 'test'
                      else sweep_plan.final_checkpoint(each))
        execute(launcher.test(each, checkpoint), launcher, args.dry_run)
        if not args.dry_run:
            each.write_marker('tested')
    if args.dry_run:
        return
    from tools.lib.report import SweepReportError, build_report
    baseline = str(runs[0].work_dir) if args.baseline else None
    try:
        table = build_report([str(r.work_dir) for r in runs], baseline,
                             str(root / 'sweep.png'), str(root / 'sweep.md'))
    except SweepReportError as error:
        raise UserError(str(error)) from error
    except OSError as error:
        raise UserError(f'cannot write {error.filename!r}: {error.strerror}') from error
    print(f'\n{table}\n\n[sweep] table: {root / "sweep.md"}, plot: {root / "sweep.png"}, '
          f'{time.time() - start:.0f} s')


if __name__ == '__main__':
    run(main, prog='sweep.py')
