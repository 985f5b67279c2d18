"""``tools/sweep.py --launcher none|pytorch``: the runs one after another on this machine, each
under its lock (another sweep's run is skipped, not trained twice), through
:meth:`Run.train_then_test`; ``--dry-run`` prints the commands."""
from __future__ import annotations

import contextlib
import os
import sys
from argparse import Namespace
from pathlib import Path
from typing import List, Sequence

from tools.lib.errors import UserError
from tools.lib.sweep.run import Run, RunBusy, StepFailed, Stopped, step_times

ROOT = Path(__file__).resolve().parents[3]
_FAILS_AGAIN = ' (if it fails the same way again, --force retrains it from scratch)'


def command(args: Namespace, tool: str, run: Run, *positional: str) -> List[str]:
    """tools/<tool>.py (pytorch: dist_<tool>.sh) on ``run``."""
    options = ['--work-dir', str(run.work_dir), '--cfg-options', *run.options]
    options += ['--resume'] if tool == 'train' and run.state == 'resume' else []
    if args.launcher == 'pytorch':
        return ['bash', str(ROOT / f'tools/dist_{tool}.sh'), run.config, *positional,
                str(args.gpus), *options]
    return [sys.executable, str(ROOT / f'tools/{tool}.py'), run.config, *positional, *options]


def _show(step: str, command: Sequence[str]) -> None:
    print('  $ ' + ' '.join(command), flush=True)


def run_here(run: Run, args: Namespace) -> None:
    """Train (or resume) and test one run in this process's children."""
    train = command(args, 'train', run)
    if args.dry_run:
        if run.state in ('new', 'resume'):
            _show('train', train)
        checkpoint = '<last checkpoint>' if run.state != 'test' else run.last_checkpoint()
        _show('test', command(args, 'test', run, checkpoint))
        return
    run.clear()
    try:  # PYTHON: the interpreter of the dist_*.sh scripts
        seconds = run.train_then_test(
            train, lambda checkpoint: command(args, 'test', run, checkpoint),
            env=dict(os.environ, PYTHON=sys.executable), show=_show)
    except StepFailed as failed:
        hint = ('rerun the sweep to test it again' + _FAILS_AGAIN if failed.step == 'the test'
                else 'rerun the sweep to resume it' + (_FAILS_AGAIN if run.state == 'resume'
                                                       else '') if run.last_checkpoint() else
                'rerun the sweep to train it (it saved no checkpoint)')
        raise UserError(f'{Path(failed.command[1]).name} exited with status {failed.status} '
                        f'(its output is above); {hint}') from None
    print(f'[sweep] {run.name}: {step_times(seconds)}', flush=True)


def run_locally(runs: List[Run], args: Namespace) -> List[str]:
    """Run every run not done under its lock; the names of those another process holds."""
    busy = []
    for run in (r for r in runs if r.state != 'done'):
        print(f'\n[sweep] {run.name}: {run.state}', flush=True)
        try:
            with contextlib.nullcontext() if args.dry_run else run.lock():
                if not args.dry_run:  # another sweep may have run it meanwhile
                    run.assess(args.force, args.retrain_changed)
                if run.state != 'done':
                    run_here(run, args)
        except RunBusy as held:
            print(f'[sweep] {run.name}: skipped, {held}', flush=True)
            busy.append(run.name)
        except Stopped as stopped:
            raise UserError(f'stopped by {stopped}: {run.name} was stopped in the middle; '
                            'rerun the sweep to resume it') from None
        except OSError as error:
            raise run.folder_error(error) from error
    return busy
