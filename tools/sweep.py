#!/usr/bin/env python
"""Run an epsilon sweep: train and test every (epsilon, seed), then report.

    python tools/sweep.py CONFIG --epsilons -1 -0.5 0.5 1 --seeds 0 1 2
        [--baseline BASELINE_CONFIG] [--launcher {none,pytorch,slurm}] [--gpus N]
        [--work-dir-root DIR] [--cfg-options KEY=VALUE ...]
        [--force | --retrain-changed] [--key-files FILE ...] [--dry-run]
        [--partition NAME [--cpus-per-task N] [--max-parallel N] [--time LIMIT]
         [--signal-seconds S] [--sbatch-args "..."] [--wait]]   (--launcher slurm)

CONFIG has a Poly-1 loss as its box classifier loss; each run overrides its
``epsilon`` and ``randomness.seed`` (through ``--cfg-options``) and, with
``--baseline`` (mmdet's focal or cross-entropy config), the baseline trains at
every seed too. Each run has its own work dir under ``--work-dir-root``
(default ``work_dirs/sweep_<CONFIG name>``), named like the COCO configs:
``<CONFIG name with eps<e>>[_seed<N>]``. Finished runs are skipped, started
ones resume from their last checkpoint (``--resume``), trained ones are tested;
at the end ``sweep.md`` (table) and ``sweep.png`` (AP and AR@100 against
epsilon, seed means with their spread) go to the root.

``--launcher none|pytorch`` runs the runs here, one after the other, each under
its lock (a second sweep on the same root skips a run the first one holds), and
stops the running tool when stopped itself (SIGTERM, SIGINT). ``--launcher
slurm`` submits every run that is neither done nor queued or running as one Slurm
job array, and a report job after it, then exits (``--wait``: once the report is
written); run it again to see each run's state (tools/lib/sweep_slurm.py).
``--dry-run`` prints the plan and the commands. A user error is one line on
stderr, exit status 2.
"""
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import run_lock, sweep_plan, sweep_slurm
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
                        help='none: here, one process; pytorch: here, tools/dist_train.sh '
                        '(torchrun); slurm: one Slurm job array (sbatch)')
    parser.add_argument('--gpus', type=int, default=1,
                        help='GPUs (processes) per run for pytorch and slurm; slurm: 0 is '
                        'a CPU-only run, one process (default: 1)')
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
    slurm = parser.add_argument_group('--launcher slurm')
    slurm.add_argument('--partition', help='the Slurm partition (required)')
    slurm.add_argument('--cpus-per-task', type=int, help='CPUs per process (default: 1)')
    slurm.add_argument('--max-parallel', type=int,
                       help='at most this many runs at once (default: no limit)')
    slurm.add_argument('--time', help="each run's time limit per attempt (Slurm's format, "
                       "e.g. 4:00:00): near it the run stops and is requeued, and resumes")
    slurm.add_argument('--signal-seconds', type=int,
                       help='how long before --time a run is told to stop and requeue '
                       '(default: 300; Slurm may send it up to 30 s early or late)')
    slurm.add_argument('--sbatch-args', metavar='"ARGS"',
                       help='more sbatch arguments, as one string: '
                       '--sbatch-args="--account=det --qos=low"')
    slurm.add_argument('--wait', action='store_true',
                       help='return once every run has ended and the report is written')
    args = parser.parse_args(argv)
    args.epsilons = parse_epsilons(' '.join(args.epsilons), '--epsilons')
    args.seeds = parse_seeds(' '.join(args.seeds), '--seeds')
    slurm = args.launcher == 'slurm'
    if args.gpus < (0 if slurm else 1):
        raise UserError(f'--gpus must be >= {0 if slurm else 1}, got {args.gpus}')
    if args.launcher == 'none' and args.gpus != 1:
        raise UserError(f'--gpus {args.gpus} needs --launcher pytorch or slurm')
    if not args.epsilons and not args.baseline:
        raise UserError('nothing to run: give --epsilons values, a --baseline, or both')
    if slurm and not args.partition:
        raise UserError('--launcher slurm needs --partition NAME')
    given = [name for name in ('partition', 'cpus_per_task', 'max_parallel', 'time',
                               'signal_seconds', 'sbatch_args') if getattr(args, name)
             is not None] + (['wait'] if args.wait else [])
    if given and not slurm:
        raise UserError(f'--{given[0].replace("_", "-")} needs --launcher slurm')
    return args


def execute(command: List[str], launcher: sweep_plan.Launcher, dry_run: bool,
            hint: str) -> None:
    """Run one tool (stopped with this process); a failure is a user error ending in ``hint``."""
    print('  $ ' + ' '.join(command), flush=True)
    if dry_run:
        return
    status = run_lock.run_child(command, env=launcher.environment())
    if status != 0:
        raise UserError(f'{Path(command[1]).name} exited with status {status} '
                        f'(its output is above); {hint}')


def run_here(each: sweep_plan.Run, launcher: sweep_plan.Launcher, dry_run: bool) -> None:
    """Train (or resume) and test one run in this process's children."""
    if each.state in ('new', 'resume'):
        if not dry_run:
            try:
                sweep_plan.clear_for_training(each)
            except OSError as error:
                raise UserError(f'cannot prepare the work dir {str(each.work_dir)!r}: '
                                f'{error.strerror}: {error.filename!r}') from error
            each.write_marker('training')
        hint = ('rerun the sweep to resume it (if it fails the same way again, --force '
                'retrains it from scratch)' if each.state == 'resume'
                else 'rerun the sweep to resume it')
        execute(launcher.train(each, resume=each.state == 'resume'), launcher, dry_run, hint)
        if not dry_run:
            each.write_marker('trained')
    checkpoint = ('<last checkpoint>' if dry_run and each.state != 'test'
                  else sweep_plan.final_checkpoint(each))
    execute(launcher.test(each, checkpoint), launcher, dry_run,
            'rerun the sweep to test it again')
    if not dry_run:
        each.write_marker('tested')


def run_locally(runs: List[sweep_plan.Run], launcher: sweep_plan.Launcher, dry_run: bool,
                force: bool = False, retrain_changed: bool = False) -> List[str]:
    """Every run that is not done, one after the other, each under its lock and
    assessed again once held (another sweep may have run it meanwhile); the names
    of those another process holds (skipped)."""
    busy = []
    for each in runs:
        if each.state == 'done':
            continue
        print(f'\n[sweep] {each.name}: {each.state}', flush=True)
        if dry_run:
            run_here(each, launcher, dry_run)
            continue
        try:
            with run_lock.run_lock(each.work_dir):
                sweep_plan.assess(each, force, retrain_changed)
                if each.state != 'done':
                    run_here(each, launcher, dry_run)
        except run_lock.RunBusy as held:
            print(f'[sweep] {each.name}: skipped, {held}', flush=True)
            busy.append(each.name)
        except run_lock.Stopped as stopped:
            raise UserError(f'stopped by {stopped}: {each.name} was stopped in the middle; '
                            'rerun the sweep to resume it') from None
        except OSError as error:
            raise UserError(f'cannot prepare the work dir {str(each.work_dir)!r}: '
                            f'{error.strerror}: {error.filename!r}') from error
    return busy


def write_report(runs: List[sweep_plan.Run], root: Path, baseline: bool) -> str:
    """sweep.md and sweep.png from the runs' final tests; the table."""
    from tools.lib.report import SweepReportError, build_report
    try:
        return build_report([str(r.work_dir) for r in runs],
                            str(runs[0].work_dir) if baseline else None,
                            str(root / 'sweep.png'), str(root / 'sweep.md'))
    except SweepReportError as error:
        raise UserError(str(error)) from error
    except OSError as error:
        raise UserError(f'cannot write {error.filename!r}: {error.strerror}') from error


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    ignore_known_warnings()
    root = Path(args.work_dir_root or f'work_dirs/sweep_{Path(args.config).stem}')
    runs = sweep_plan.plan_runs(args.config, args.epsilons, args.seeds, args.baseline, root,
                                args.cfg_options, args.key_files, args.dry_run)
    problems = {}  # Slurm: a run's work dir may change under a running task
    for each in runs:
        try:
            sweep_plan.assess(each, args.force, args.retrain_changed)
        except UserError as error:
            if not args.dry_run and run_lock.is_busy(each.work_dir):
                each.state = 'held'  # being changed by its holder: assessed once held
            elif args.launcher == 'slurm' and not args.dry_run:
                problems[each.name] = error
            else:
                raise
    missing = [path for path in args.key_files if not osp.exists(path)]
    if missing:  # only a dry run gets here with them
        print(f'  (--key-files not made yet: {" ".join(missing)}; a finished run counts '
              'as changed)', flush=True)
    if args.launcher == 'slurm':
        return main_slurm(args, runs, root, problems)
    print(f'[sweep] {len(runs)} runs in {root}:', flush=True)
    for each in runs:
        print(f'  {each.name:<48} {each.state:<8} {" ".join(each.options)}')
    start = time.time()
    busy = run_locally(runs, sweep_plan.Launcher(args.launcher, args.gpus), args.dry_run,
                       args.force, args.retrain_changed)
    if args.dry_run:
        return
    for each in runs:  # another sweep on this root may have finished some meanwhile
        sweep_plan.assess(each, False, False)
    left = [each.name for each in runs if each.state != 'done']
    if left:
        raise UserError(f'{len(left)} runs are not done ({", ".join(left)}): another process '
                        f'held {", ".join(busy) or "them"} (skipped above); the sweep that '
                        'finishes last writes the report, or rerun this one then')
    table = write_report(runs, root, bool(args.baseline))
    print(f'\n{table}\n\n[sweep] table: {root / "sweep.md"}, plot: {root / "sweep.png"}, '
          f'{time.time() - start:.0f} s')


def main_slurm(args, runs: List[sweep_plan.Run], root: Path,
               problems: Dict[str, UserError]) -> None:
    """--launcher slurm: show each run's state, submit what is missing, queue the report.
    ``problems``: what assessing a run found wrong, an error unless it is queued or running."""
    settings = sweep_slurm.SlurmSettings(
        partition=args.partition, gpus=args.gpus, cpus_per_task=args.cpus_per_task or 1,
        max_parallel=args.max_parallel, time=args.time,
        signal_seconds=300 if args.signal_seconds is None else args.signal_seconds,
        sbatch_args=sweep_slurm.parse_sbatch_args(args.sbatch_args))
    if args.dry_run:
        print(f'[sweep] {len(runs)} runs in {root}:', flush=True)
        for each in runs:
            print(f'  {each.name:<48} {each.state:<8} {" ".join(each.options)}')
        sweep_slurm.print_commands([r for r in runs if r.state != 'done'] or runs, root,
                                   settings)
        return
    sweep_slurm.which_or_error()
    outcome = sweep_slurm.submit(runs, root, settings, args.force, problems)
    if outcome['done']:
        print(f'\n[sweep] every run is done; nothing submitted\n\n'
              f'{write_report(runs, root, bool(args.baseline))}\n\n'
              f'[sweep] table: {root / "sweep.md"}, plot: {root / "sweep.png"}')
        return
    job = sweep_slurm.queue_report(runs, root, settings, bool(args.baseline), outcome,
                                   args.wait)
    if job is None:
        print('\n[sweep] nothing queued or running, and not every run is done (see above)')
    elif args.wait:
        report = root / 'sweep.md'
        print(f'\n{report.read_text() if report.is_file() else "(no report written)"}')


if __name__ == '__main__':
    run(main, prog='sweep.py')
