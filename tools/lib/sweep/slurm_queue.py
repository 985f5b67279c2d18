"""The queue of a sweep's job arrays (``tools/lib/sweep/slurm_jobs.py``), read back per run.

- :func:`read_queue` maps the queue's tasks back to run names: ``squeue`` shows
  each task's command, ``tools/slurm_run.sh RUN_FILE``, and the run file maps the
  task's index to its run. Per run: its state, job id (``ARRAY_TASK``), log file.
- :func:`run_status` says where a run stands (done, queued, running, failed,
  stopped, new) from its marker and the queue, for the sweep's table.

Finished tasks stay in ``squeue -t all`` only for Slurm's ``MinJobAge`` (300 s
by default); after that a run's marker says what became of it.

Only the standard library.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from tools.lib.errors import UserError
from tools.lib.sweep.run import Run
from tools.lib.sweep.slurm_jobs import (
    JOB_SCRIPT,
    ArrayOptions,
    SlurmRun,
    log_end,
    log_path,
    read_run_file,
    run_slurm,
)

#: Job states in which a task still holds (or will hold) its run: not to be submitted again.
ACTIVE_STATES = frozenset({
    'PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'REQUEUED',
    'REQUEUE_FED', 'REQUEUE_HOLD', 'RESV_DEL_HOLD', 'SPECIAL_EXIT', 'RESIZING', 'SIGNALING',
    'STAGE_OUT', 'STOPPED'})
# squeue fields: job id (ARRAY_TASK), array job id, task index, state, reason, command.
# The command comes last: it may hold any character.
_QUEUE_FORMAT = '%i|%F|%K|%T|%R|%o'


@dataclass(frozen=True)
class QueuedTask:
    """A run's task as the queue shows it."""
    name: str
    job_id: str  # ARRAY_TASK, as scontrol and scancel take it
    array_id: str
    index: int
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ...
    reason: str  # why it is pending (squeue's %R), or its node when running
    log: Path
    run_file: Path
    work_dir: Optional[Path] = None  # the run's, as its run file says
    key: str = ''  # its settings' key, ditto

    @property
    def active(self) -> bool:
        """Queued or running (or requeued): the run must not be submitted again."""
        return self.state in ACTIVE_STATES


def _run_file_of(command: str, script_name: str) -> Optional[Path]:
    """The run file in a queued job's command, ``<...>/slurm_run.sh RUN_FILE``
    (squeue prints it unquoted: the split is found where a file exists)."""
    prefix = f'{script_name} '
    start = command.find(prefix)
    while start >= 0:
        candidate = Path(command[start + len(prefix):].strip())
        if candidate.suffix == '.json' and candidate.is_file():
            return candidate
        start = command.find(prefix, start + 1)
    return None


def parse_queue(text: str, script_name: str = JOB_SCRIPT.name) -> List[QueuedTask]:
    """The sweep's tasks in ``squeue -h -r -o '%i|%F|%K|%T|%R|%o'`` output; lines of
    other jobs (no array index, another script, a run file that is gone) are left out."""
    tasks, run_files = [], {}
    for line in text.splitlines():
        fields = line.split('|', 5)
        if len(fields) != 6 or not fields[2].isdigit():
            continue
        job_id, array_id, index, state, reason, command = fields
        run_file = _run_file_of(command, script_name)
        if run_file is None:
            continue
        if run_file not in run_files:
            try:
                run_files[run_file] = read_run_file(run_file)
            except UserError:
                run_files[run_file] = None
        data = run_files[run_file]
        task = (data or {}).get('tasks', {}).get(index)
        if not task:
            continue
        tasks.append(QueuedTask(
            name=task['name'], job_id=job_id, array_id=array_id, index=int(index),
            state=state.split()[0] if state.strip() else 'UNKNOWN', reason=reason,
            log=log_path(data['log'], array_id, int(index), data['job_name']),
            run_file=run_file, work_dir=Path(task['work_dir']),
            key=task.get('key', task.get('marker_fields', {}).get('key', ''))))
    return tasks


def latest_by_run(tasks: Iterable[QueuedTask]) -> Dict[str, QueuedTask]:
    """One task per run name: an active one before a finished one, then the newest array."""
    def rank(task: QueuedTask):
        return task.active, int(task.array_id) if task.array_id.isdigit() else -1, task.index
    best: Dict[str, QueuedTask] = {}
    for task in tasks:
        if task.name not in best or rank(task) > rank(best[task.name]):
            best[task.name] = task
    return best


def read_queue(job_name: Optional[str] = None, job_ids: Sequence[str] = (),
               env: Optional[Mapping[str, str]] = None,
               runs: Optional[Sequence[SlurmRun]] = None) -> Dict[str, QueuedTask]:
    """Per run name, its newest task in Slurm's queue (finished ones too, for as
    long as Slurm keeps them: ``MinJobAge``), by job name and/or job ids; the
    user's own jobs only. With ``runs``, only tasks of those runs (same name and
    work dir: another sweep's run of the same name under the same job name is
    not one of them)."""
    if not job_name and not job_ids:
        raise UserError('read_queue needs a job_name or job_ids')
    argv = ['squeue', '-h', '-r', '--me', '-t', 'all', '-o', _QUEUE_FORMAT]
    if job_name:
        argv.append(f'--name={job_name}')
    if job_ids:
        argv.append(f'--jobs={",".join(job_ids)}')
    tasks = parse_queue(run_slurm(argv, env, 'reading the queue'))
    if runs is not None:
        wanted = {(run.name, Path(run.work_dir).resolve()) for run in runs}
        tasks = [t for t in tasks if (t.name, t.work_dir) in wanted]
    return latest_by_run(tasks)


def pending_jobs(job_name: str, env: Optional[Mapping[str, str]] = None) -> List[str]:
    """Ids of the user's jobs named ``job_name`` that have not started yet."""
    return run_slurm(['squeue', '-h', '--me', '-t', 'PENDING', f'--name={job_name}', '-o', '%i'],
                     env, 'reading the queue').split()


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands, from its marker and the queue, for the sweep's table.

    ``state``: ``done`` (tested), ``queued`` (pending, or requeued and waiting),
    ``running``, ``failed`` (its last task ended without testing it: failed,
    cancelled, timed out, node failure, ...), ``stopped`` (started, no task in
    the queue: Slurm has forgotten it or it never ran under Slurm) or ``new``.
    ``detail``: Slurm's state and reason (``PENDING (Priority)``), or ''.
    ``cause``: why a failed run failed: the last error line of its log, or why
    there is no log. ``command_failed``: its training or test exited with an
    error (or it saved no checkpoint), so a resubmission would fail the same way.
    """
    name: str
    state: str
    job_id: str = ''
    log: Optional[Path] = None
    detail: str = ''
    cause: str = ''
    command_failed: bool = False


#: Queue states shown as ``running``; the other active ones are ``queued``.
_RUNNING_STATES = frozenset({'RUNNING', 'CONFIGURING', 'COMPLETING', 'SIGNALING',
                             'STAGE_OUT', 'RESIZING'})


def run_status(run: SlurmRun, queue: Mapping[str, QueuedTask],
               options: Optional[ArrayOptions] = None) -> RunStatus:
    """The run's :class:`RunStatus`: its marker says whether it is tested, the
    queue (:func:`read_queue`) whether a task of it is queued or running, the task's
    log why it failed. With ``options`` (the sweep's), a started run that Slurm has
    forgotten is looked up in the log of the task its marker names."""
    folder = Run(run.name, '', Path(run.work_dir), key=run.key)
    stage = folder.stage()
    task = queue.get(run.name)
    if task is None:
        state = {'tested': 'done', '': 'new'}.get(stage, 'stopped')
        job = str(folder.marker().get('slurm_job', ''))
        if state == 'stopped' and options is not None and re.fullmatch(r'\d+_\d+', job):
            array, index = job.split('_')
            log = log_path(options.log_pattern(), array, int(index), options.job_name)
            cause, failed = log_end(log)
            if failed:
                return RunStatus(run.name, 'failed', job, log, '', cause, True)
        return RunStatus(run.name, state)
    detail = task.state + (f' {task.reason}' if task.reason.startswith('(')
                           and task.reason != '(None)' else '')
    if task.active:
        state = 'running' if task.state in _RUNNING_STATES else 'queued'
    else:
        state = 'done' if stage == 'tested' else 'failed'
    if state != 'failed':
        return RunStatus(run.name, state, task.job_id, task.log, detail)
    if not task.log.is_file():
        return RunStatus(run.name, state, task.job_id, None, detail,
                         f'Slurm wrote no log: it could not open {task.log} or start the job '
                         "script (the node's slurmd log says which)")
    cause, failed = log_end(task.log)
    same = task.key == run.key  # else: settings changed since
    return RunStatus(run.name, state, task.job_id, task.log, detail, cause, failed and same)
