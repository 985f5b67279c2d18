"""``tools/sweep.py --launcher slurm``: the sweep's runs as one Slurm job array.

Each call reads Slurm's queue and every run's marker, prints where each run
stands (done, queued, running, failed, stopped, new; its job id and log; a failed
run's last error line), and submits the runs that are neither done nor queued or
running (nor failed with an error, unless ``--retry-failed``) as one job array
(``tools/lib/sweep/slurm_jobs.py``: ``--requeue``, a USR1 before ``--time`` ends, each
task trains with ``--resume`` and then tests). A report job queued after them
(``--dependency=afterany``) writes ``sweep.md`` and ``sweep.png``; with
``--wait`` the command returns once it has run (``sbatch --wait``: Slurm follows
the jobs, no loop of ours). When every run is done the report is written at once
and nothing is submitted.

The queue is read and the runs submitted under ``<root>/slurm/submit.lock``,
and a run whose lock another process holds (a local ``tools/sweep.py``) is not
submitted: one run is never queued or trained twice. A task queued with other
settings than the command's is an error, never adopted. A run's folder is
cleared only after sbatch has accepted its array (held until then released).
One report job is pending at a time: a new one replaces it. Files: the run files and
logs go to ``<root>/slurm/``.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from argparse import Namespace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tools.lib.errors import UserError
from tools.lib.sweep import slurm_jobs, slurm_queue
from tools.lib.sweep.report import write_sweep_report
from tools.lib.sweep.run import Run, RunBusy
from tools.lib.sweep.slurm_jobs import LAST_CHECKPOINT, ArrayOptions, SlurmRun

ROOT = Path(__file__).resolve().parents[3]


def folder(root: Path) -> Path:
    """Where the sweep's run files, logs and submission lock go."""
    return Path(root).resolve() / 'slurm'


def array_options(root: Path, args: Namespace) -> ArrayOptions:
    """The sbatch options of the sweep rooted at ``root``, from its command line (checked)."""
    signal_seconds = 300 if args.signal_seconds is None else args.signal_seconds
    options = ArrayOptions(
        job_name=slurm_jobs.sweep_job_name(root), log_dir=folder(root) / 'logs',
        partition=args.partition, time=args.time, gpus=args.gpus,
        cpus_per_task=args.cpus_per_task or 1, max_parallel=args.max_parallel,
        signal_seconds=signal_seconds,
        stop_grace=min(ArrayOptions.stop_grace, signal_seconds - 1), extra=args.sbatch_args)
    slurm_jobs.check_options(options)
    return options


#: sbatch's long options (Slurm 22.05) and their argument: 1 required, 0 none, 2 optional
#: (``--opt=value`` only), as getopt_long reads them; its short options below.
SBATCH_LONG = {name: kind for kind, names in (
    (1, 'account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment '
        'constraint container core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task '
        'deadline delay-boot dependency distribution error exclude export-file '
        'extra-node-info gid gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket '
        'gpus-per-task gres gres-flags hint input job-name kill-on-invalid-dep licenses '
        'mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network '
        'nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node '
        'ntasks-per-socket open-mode output partition power prefer priority profile qos '
        'reservation signal sockets-per-node switches thread-spec threads-per-core time '
        'time-min tmp uid wait-all-nodes wckey'),
    (0, 'contiguous help hold ignore-pbs no-requeue overcommit oversubscribe parsable quiet '
        'reboot requeue spread-job test-only usage use-min-nodes verbose version wait'),
    (2, 'exclusive export get-user-env nice no-kill propagate wrap'))
    for name in names.split()}
SBATCH_SHORT = {'a': 'array', 'A': 'account', 'b': 'begin', 'B': 'extra-node-info',
                'c': 'cpus-per-task', 'C': 'constraint', 'd': 'dependency', 'D': 'chdir',
                'e': 'error', 'F': 'nodefile', 'G': 'gpus', 'h': 'help', 'H': 'hold',
                'i': 'input', 'J': 'job-name', 'k': 'no-kill', 'L': 'licenses',
                'm': 'distribution', 'M': 'clusters', 'n': 'ntasks', 'N': 'nodes',
                'o': 'output', 'O': 'overcommit', 'p': 'partition', 'q': 'qos', 'Q': 'quiet',
                's': 'oversubscribe', 'S': 'core-spec', 't': 'time', 'v': 'verbose',
                'V': 'version', 'w': 'nodelist', 'W': 'wait', 'x': 'exclude'}
#: The options the sweep sets or depends on, and what for.
SWEEP_SETS = {
    'array': "the sweep's runs are one job array of its own",
    'job-name': 'the sweep finds its jobs in the queue by their name',
    'output': "the sweep names each run's log and reads a failed run's error there",
    'error': "a run's errors must reach the log the sweep reads",
    'open-mode': 'a requeued run appends to its log',
    'dependency': 'the report job runs after the runs, whatever their end',
    'wait': "use the sweep's --wait",
    'chdir': 'the runs start in the folder the sweep was started in',
    'hold': "the sweep holds its array while it clears the runs' folders",
    'signal': 'the runs stop and requeue themselves on it: use --signal-seconds',
    'requeue': 'a run is requeued on pre-emption and near its time limit',
    'no-requeue': 'a run is requeued on pre-emption and near its time limit',
    'parsable': 'the sweep reads the job ids sbatch answers',
    'wrap': 'each task runs tools/slurm_run.sh',
    'partition': "use the sweep's --partition",
    'time': "use the sweep's --time",
    'ntasks': "the sweep's --gpus sets it",
    'gpus-per-task': "the sweep's --gpus sets it",
    'cpus-per-task': "use the sweep's --cpus-per-task",
}


def _long_option(word: str) -> str:
    """The sbatch option that ``--name[=value]`` stands for, as getopt_long finds it (the
    name, else its one completion); an abbreviation of an option the sweep sets counts
    as that option even where it is ambiguous (sbatch would refuse it then)."""
    name = word[2:].split('=', 1)[0]
    if name in SBATCH_LONG:
        return name
    candidates = sorted(n for n in SBATCH_LONG if n.startswith(name))
    refused = [n for n in candidates if n in SWEEP_SETS]
    return refused[0] if refused else candidates[0] if len(candidates) == 1 else ''


def parse_sbatch_args(text: Optional[str]) -> List[str]:
    """``--sbatch-args "--account=det --qos=low"`` as a list of words, read as sbatch reads
    them (``--opt=v``, ``--opt v``, unique abbreviations, ``-Jx``, ``-J x``, bundled ``-vH``);
    an option the sweep sets itself (:data:`SWEEP_SETS`) or a word that is no option is
    refused, naming it."""
    if not text:
        return []
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise UserError(f'--sbatch-args {text!r}: {error}') from error
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in ('-', '--') or not word.startswith('-'):
            raise UserError(f'--sbatch-args {text!r}: {word!r} is not an sbatch option '
                            '(sbatch would take what follows as the job script)')
        if word.startswith('--'):
            options = [(_long_option(word), '=' in word)]
        else:  # bundled letters; the first that takes a value takes the rest of the word
            options = []
            for position, letter in enumerate(word[1:], 2):
                options.append((SBATCH_SHORT.get(letter, ''), position < len(word)))
                if SBATCH_LONG.get(options[-1][0], 0):
                    break
        for option, _ in options:
            if option in SWEEP_SETS:
                raise UserError(f'--sbatch-args {text!r}: {word} is set by the sweep itself '
                                f'(--{option}: {SWEEP_SETS[option]})')
        option, has_value = options[-1]
        unknown = not option and index < len(words) and not words[index].startswith('-')
        if (SBATCH_LONG.get(option) == 1 or unknown) and not has_value:
            index += 1  # the next word is its value
    return words


def _tool(options: ArrayOptions, script: str) -> List[str]:
    """How a task starts tools/<script>: one process, or one per GPU under srun
    (inside the task's allocation; mmengine's slurm launcher reads srun's variables)."""
    command = [sys.executable, '-u', str(ROOT / 'tools' / script)]
    return command if options.gpus == 0 else ['srun', '--kill-on-bad-exit=1', *command]


def slurm_run(run: Run, options: ArrayOptions) -> SlurmRun:
    """A sweep run as a task: train (resuming from the work dir's last
    checkpoint, if any), then test the checkpoint training ended with."""
    work_dir = str(Path(run.work_dir).resolve())
    launcher = [] if options.gpus == 0 else ['--launcher', 'slurm']
    train = [*_tool(options, 'train.py'), run.config, '--work-dir', work_dir,
             '--cfg-options', *run.options, '--resume', *launcher]
    test = [*_tool(options, 'test.py'), run.config, LAST_CHECKPOINT, '--work-dir', work_dir,
            '--cfg-options', *run.options, *launcher]
    return SlurmRun(run.name, Path(work_dir), train, test, run.key)


def _status_line(status: slurm_queue.RunStatus) -> str:
    parts = [f'  {status.name:<48} {status.state:<8}']
    if status.job_id:
        parts.append(f'job {status.job_id}')
    if status.detail:
        parts.append(f'({status.detail})')
    if status.log:
        parts.append(f'log {status.log}')
    line = ' '.join(parts)
    return f'{line}: {status.cause}' if status.cause else line


def print_commands(runs: Sequence[Run], root: Path, options: ArrayOptions) -> None:
    """What a submission would run (``--dry-run``): sbatch, then each task's commands."""
    run_file = folder(root) / f'{options.job_name}-<time>.json'
    print('  $ ' + shlex.join(slurm_jobs.sbatch_array_argv(len(runs), options, run_file)))
    for index, run in enumerate(runs):
        task = slurm_run(run, options)
        print(f'  task {index} {run.name}:\n    $ {shlex.join(task.train)}\n'
              f'    $ {shlex.join(task.test)}')


def _clear(run: Run) -> None:
    """A ``new`` run to submit starts from an empty work dir (under its lock)."""
    try:
        with run.lock():
            run.clear()
    except RunBusy as held:
        raise UserError(f'{run.name}: not cleared: {held}') from None
    except OSError as error:
        raise run.folder_error(error) from error


def _submit_and_clear(runs: Sequence[Run], tasks: Dict[str, SlurmRun],
                      options: ArrayOptions, root: Path,
                      env: Dict[str, str]) -> slurm_jobs.Submitted:
    """Submit ``runs``; the work dirs of the ``new`` ones are cleared only once sbatch
    has accepted the array, while it is held (a refused submission changes nothing)."""
    to_clear = [run for run in runs if run.needs_clearing()]
    submitted = slurm_jobs.submit_array([tasks[r.name] for r in runs], options, folder(root),
                                        env, hold=bool(to_clear))
    if to_clear:
        try:
            for run in to_clear:
                _clear(run)
        except UserError:
            slurm_jobs.cancel([submitted.array_id], env)
            raise
        slurm_jobs.release(submitted.array_id, env)
    return submitted


def submit(runs: Sequence[Run], root: Path, options: ArrayOptions,
           force: bool, problems: Optional[Dict[str, UserError]] = None,
           retry_failed: bool = False) -> Dict[str, object]:
    """Print each run's state, submit the missing ones (``problems``: what is wrong
    with a run's work dir, raised unless a task of it is queued or running, which
    may be changing it; a run whose training or test exited with an error only with
    ``retry_failed``); what happened:
    ``submitted`` (a :class:`slurm_jobs.Submitted` or None), ``active`` (job ids of
    our runs still queued or running), ``done`` (every run tested)."""
    tasks = {run.name: slurm_run(run, options) for run in runs}
    env = dict(os.environ, **{slurm_jobs.PYTHON_VARIABLE: sys.executable})
    with slurm_jobs.submission_lock(folder(root) / 'submit.lock'):
        queue = slurm_queue.read_queue(options.job_name, env=env, runs=list(tasks.values()))
        missing, active, other = [], [], []
        print(f'[sweep] {len(runs)} runs in {root} (Slurm job name {options.job_name}):',
              flush=True)
        for run in runs:
            status = slurm_queue.run_status(tasks[run.name], queue, options=options)
            task = queue.get(run.name)
            if task is not None and task.active:
                if force:
                    raise UserError(f'--force: {run.name} is {status.state} as job '
                                    f'{task.job_id}; scancel {task.job_id} first')
                if task.key != tasks[run.name].key:
                    print(_status_line(status) + f' ({status.state} with other settings; '
                          f'scancel {task.job_id} first)')
                    other.append(task.job_id)
                    continue
                active.append(task.job_id)
            elif run.name in (problems or {}):
                raise problems[run.name]
            elif status.command_failed and not retry_failed:
                print(_status_line(status) + '\n      not resubmitted: it would fail the same '
                      'way; fix the cause, then rerun with --retry-failed')
                continue
            elif run.state != 'done':
                holder = run.holder()
                if holder:
                    print(_status_line(status) + f' (held by {holder}: not submitted)')
                    continue
                missing.append(run)
            print(_status_line(status), flush=True)
        if other:
            raise UserError(f'{len(other)} runs are queued or running with other settings than '
                            f'this command\'s (its config, --cfg-options, --key-files or --gpus '
                            f'differ): scancel {" ".join(other)} first, then run it again')
        submitted = _submit_and_clear(missing, tasks, options, root, env) if missing else None
    if submitted is not None:
        print(f'\n[sweep] submitted {len(missing)} runs as job array {submitted.array_id} '
              f'(run file {submitted.run_file}):')
        for name, job in submitted.job_ids.items():
            print(f'  {name:<48} job {job} log {submitted.logs[name]}')
    done = not missing and not active and all(r.state == 'done' for r in runs)
    return {'submitted': submitted, 'active': active, 'done': done,
            'job_name': options.job_name}


def report_command(runs: Sequence[Run], root: Path, baseline: bool) -> List[str]:
    """The report job's command: tools/sweep_report.py on the runs' work dirs."""
    root = Path(root).resolve()
    command = [sys.executable, str(ROOT / 'tools' / 'sweep_report.py'),
               *[str(Path(r.work_dir).resolve()) for r in runs],
               '--out-png', str(root / 'sweep.png'), '--out-md', str(root / 'sweep.md')]
    if baseline:
        command += ['--baseline', str(Path(runs[0].work_dir).resolve())]
    return command


def queue_report(runs: Sequence[Run], root: Path, options: ArrayOptions,
                 baseline: bool, outcome: Dict[str, object], wait: bool) -> Optional[str]:
    """Queue the report after the submitted array and the runs still active, in place of
    a report job of the sweep still pending (one at a time); the report job's id, or
    None when there is nothing to wait for."""
    submitted = outcome['submitted']
    after = list(outcome['active']) + ([submitted.array_id] if submitted else [])
    if not after:
        return None
    log = folder(root) / 'logs' / 'report.out'
    name = f'{outcome["job_name"]}-report'
    earlier = slurm_queue.pending_jobs(name)
    if earlier:
        slurm_jobs.cancel(earlier)
        print(f'\n[sweep] cancelled the pending report job {" ".join(earlier)}: the next one '
              'waits for every run')
    job = slurm_jobs.submit_report(
        report_command(runs, root, baseline), after, name, log,
        partition=options.partition, extra=options.extra, wait=wait)
    follow = f'squeue --name {outcome["job_name"]},{name}'
    print(f'\n[sweep] report job {job} (after {", ".join(after)}; log {log}) writes '
          f'{Path(root) / "sweep.md"} and sweep.png' +
          ('' if wait else f'.\nFollow: {follow}; rerun this command to see each run\'s '
           'state, resubmit what was stopped (what failed with an error: with '
           '--retry-failed), and write the report.'))
    return job


def which_or_error(program: str = 'sbatch') -> None:
    """Slurm's commands must be on PATH for ``--launcher slurm``."""
    if shutil.which(program) is None:
        raise UserError(f'--launcher slurm: {program} not found on PATH (run this on a '
                        'Slurm login node, or use --launcher none or pytorch)')


def main(args: Namespace, runs: List[Run], root: Path, problems: Dict[str, UserError]) -> None:
    """``tools/sweep.py --launcher slurm``: submit the runs not done nor queued or running
    (``--dry-run``: print how), then queue the report."""
    options = array_options(root, args)
    if args.dry_run:
        print_commands([r for r in runs if r.state != 'done'] or runs, root, options)
        return
    which_or_error()
    outcome = submit(runs, root, options, args.force, problems, bool(args.retry_failed))
    if outcome['done']:
        write_sweep_report(runs, root, bool(args.baseline),
                     before='\n[sweep] every run is done; nothing submitted\n')
        return
    job = queue_report(runs, root, options, bool(args.baseline), outcome, bool(args.wait))
    if job is None:
        print('\n[sweep] nothing queued or running, and not every run is done (see above)')
    elif args.wait:
        report = root / 'sweep.md'
        print(f'\n{report.read_text() if report.is_file() else "(no report written)"}')
