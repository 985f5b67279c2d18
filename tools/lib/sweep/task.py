"""One run of a sweep as one task of a Slurm job array, started by ``tools/slurm_run.sh
RUN_FILE [INDEX]`` (INDEX: default ``SLURM_ARRAY_TASK_ID``; the run file:
``tools/lib/sweep/slurm_jobs.py``). The task:

- exits 0 at once if the run is tested; 2 if its marker holds other settings than the run
  file's (the submitter clears such a folder first) or its folder cannot be written;
- holds the run's lock (a second task of the run exits 1, naming the job that holds it);
- sets ``MASTER_PORT`` from ``SLURM_JOB_ID`` (:func:`master_port`: two tasks on one node do
  not both take 29500) and ``SRUN_CPUS_PER_TASK`` (srun in a job does not take
  --cpus-per-task from the allocation in some Slurm versions, 22.05 among them);
- trains and tests through :meth:`Run.train_then_test`; a failing command: its exit
  status and ``NAME: training (the test) exited with status N``, which the sweep reads;
- on USR1 (``--signal=B:USR1@SECONDS``: the time limit is near) stops the command and
  requeues this task (``scontrol requeue ARRAY_TASK``), unless this attempt made no progress
  (no new checkpoint, training not finished): then exit 3, as a requeue would repeat it;
- on TERM (Slurm requeues, pre-empts or cancels the job) stops the command and exits 143,
  leaving the requeue to Slurm: a cancelled job must stay cancelled (INT, by hand: 130).

Standard library only: it runs with the sweep's Python but imports no torch.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NoReturn, Optional, Sequence

if __name__ == '__main__':  # run as a script: make ``tools`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tools.lib.errors import UserError
from tools.lib.sweep.run import (
    LOCK_NAME,
    MARKER,
    Run,
    RunBusy,
    StepFailed,
    Stopped,
    raise_stopped,
    step_times,
)
from tools.lib.sweep.slurm_jobs import LAST_CHECKPOINT, read_run_file

PROG = 'slurm_run.sh'  # the job script's name, which the sweep finds in the logs
#: MASTER_PORT = PORT_BASE + job id % PORT_SPAN: below Linux's ephemeral ports (32768+).
PORT_BASE = 10000
PORT_SPAN = 20000


def master_port(job_id: int) -> int:
    """The rendezvous port of job ``job_id`` (``SLURM_JOB_ID``, unique per array task), or
    the next free one on this node: two jobs on one node differ unless their ids are
    PORT_SPAN apart."""
    if job_id < 0:
        raise ValueError(f'job_id must be >= 0, got {job_id}')
    for step in range(PORT_SPAN):
        port = PORT_BASE + (job_id + step) % PORT_SPAN
        with socket.socket() as probe:
            try:
                probe.bind(('', port))
            except OSError:
                continue
        return port
    raise UserError(f'no free port in [{PORT_BASE}, {PORT_BASE + PORT_SPAN})')


def fail(message: str, status: int = 2) -> NoReturn:
    print(f'{PROG}: error: {message}', file=sys.stderr, flush=True)
    sys.exit(status)


STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class Task:
    """The task ``index`` of ``run_file``, as job ``job``; the run file is read by
    :meth:`execute`, so that a stop signal is handled from the start."""

    def __init__(self, run_file: str, index: str, job: str) -> None:
        self.run_file, self.index, self.job = run_file, index, job
        self.run = Run(f'task {index}', '', Path('.'))
        self.train: List[str] = []
        self.test: List[str] = []
        self.grace = 30
        self.start_stamp: Optional[str] = None  # set once this attempt has its lock
        self.start_stage = ''

    def load(self) -> None:
        data = read_run_file(Path(self.run_file))
        entry = data.get('tasks', {}).get(self.index)
        if not isinstance(entry, dict):
            raise UserError(f'the run file {self.run_file!r} has no task {self.index!r}')
        key = entry.get('key', entry.get('marker_fields', {}).get('key', ''))  # version 1
        self.run = Run(entry['name'], '', Path(entry['work_dir']), key=key)
        self.train, self.test = list(entry['train']), list(entry['test'])
        self.grace = int(data.get('stop_grace', 30))

    def say(self, message: str) -> None:
        print(f'[{PROG} {time.strftime("%H:%M:%S", time.gmtime())}] {self.run.name} '
              f'({self.job}): {message}', flush=True)

    def other_settings(self) -> str:
        """How the marker's key differs from the run file's ('' if it does not)."""
        found = self.run.marker().get('key', self.run.key)
        return '' if found == self.run.key else (
            f'{self.run.work_dir / MARKER} holds key={found!r}, the run file says '
            f'key={self.run.key!r}')

    def tested(self) -> bool:
        if self.run.stage() == 'tested':
            self.say('already tested: nothing to do')
            return True
        return False

    def execute(self) -> int:
        """The task's exit status (see the module's docstring)."""
        self.load()
        name, work_dir = self.run.name, self.run.work_dir
        other = self.other_settings()
        if other:
            fail(f'{name}: {other}; the sweep clears such a work dir before it submits the run')
        if self.tested():
            return 0
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.run.lock(holder=self.job))
            except RunBusy as busy:
                fail(f'{name}: another job holds {work_dir / LOCK_NAME} ({busy.holder})', 1)
            except OSError as error:
                print(f'{PROG}: {error.strerror}: {error.filename}', file=sys.stderr)
                fail(f'{name}: cannot write in the work dir {work_dir} (the line above says why)')
            return 0 if self.tested() else self._steps()  # tested by a task before us

    def _steps(self) -> int:
        out = Path('/proc/self/fd/1')
        if os.environ.get('SLURM_JOB_ID') and out.exists() and out.resolve().is_file():
            with contextlib.suppress(OSError):  # a convenience: the log is in the sweep's folder
                link = self.run.work_dir / f'slurm-{self.job}.out'
                link.unlink(missing_ok=True)
                link.symlink_to(out.resolve())
        env = dict(os.environ)
        env['MASTER_PORT'] = str(master_port(int(os.environ.get('SLURM_JOB_ID', '0'))))
        if os.environ.get('SLURM_CPUS_PER_TASK'):
            env['SRUN_CPUS_PER_TASK'] = os.environ['SLURM_CPUS_PER_TASK']
        self.start_stamp, self.start_stage = self.run.checkpoint_stamp(), self.run.stage()
        attempt = int(os.environ.get('SLURM_RESTART_COUNT', '0')) + 1
        self.say(f'attempt {attempt} on {socket.gethostname().split(".")[0]}, MASTER_PORT='
                 f'{env["MASTER_PORT"]}, stage {self.start_stage or "new"!r}')
        try:
            seconds = self.run.train_then_test(
                self.train, lambda checkpoint: [w.replace(LAST_CHECKPOINT, checkpoint)
                                                for w in self.test],
                env=env, job=self.job, grace=self.grace, stop_signals=STOP_SIGNALS,
                show=lambda step, command: self.say(f'{step}: {" ".join(command)}'))
        except StepFailed as failed:
            fail(f'{self.run.name}: {failed}', failed.status)
        self.say(step_times(seconds))
        return 0

    def stop(self, signal_name: str) -> int:
        """After the command stopped on ``signal_name``: requeue (USR1) or leave it to Slurm."""
        for sig in STOP_SIGNALS:  # our own requeue TERMs us too
            signal.signal(sig, signal.SIG_IGN)
        if signal_name == 'SIGINT':
            self.say('INT: stopped the command')
            return 130
        if signal_name != 'SIGUSR1':
            self.say('TERM (requeue, pre-emption or cancel): stopped the command')
            return 143
        self.say('USR1: the time limit is near; stopped the command')
        stage = self.run.stage()
        if stage == 'tested':
            self.say('tested already: not requeued')
            return 0
        trained_now = self.start_stamp is not None and stage == 'trained' and \
            self.start_stage != 'trained'
        if not trained_now and self.start_stamp in (None, self.run.checkpoint_stamp()):
            fail(f'{self.run.name}: no new checkpoint in this attempt, so a requeue would only '
                 'repeat it; give a longer --time or save checkpoints more often', 3)
        try:
            requeued = subprocess.run(['scontrol', 'requeue', self.job]).returncode == 0
        except OSError as error:
            print(f'{PROG}: scontrol: {error.strerror}', file=sys.stderr)
            requeued = False
        if requeued:
            self.say('requeued; it resumes from the last checkpoint')
            return 0
        fail(f'{self.run.name}: scontrol requeue {self.job} failed; rerun the sweep to resume', 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print(f'usage: {PROG} RUN_FILE [INDEX]  (INDEX defaults to SLURM_ARRAY_TASK_ID)',
              file=sys.stderr)
        return 2
    index = args[1] if len(args) == 2 else os.environ.get('SLURM_ARRAY_TASK_ID', '')
    if not index:
        fail('no task index: give INDEX or run as a task of a job array')
    array_job = os.environ.get('SLURM_ARRAY_JOB_ID')
    job = f'{array_job}_{os.environ.get("SLURM_ARRAY_TASK_ID")}' if array_job else \
        os.environ.get('SLURM_JOB_ID', 'local')
    task = Task(args[0], index, job)

    for sig in STOP_SIGNALS:  # between the steps as during them (run_child's)
        signal.signal(sig, raise_stopped)
    try:
        return task.execute()
    except Stopped as stopped:
        return task.stop(str(stopped))
    except UserError as error:
        fail(str(error))


if __name__ == '__main__':
    sys.exit(main())
