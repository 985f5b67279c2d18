"""A sweep's runs as one Slurm job array: the run file, sbatch, a report job after.

Every run (train, then test, in its own work dir) is one task of one ``sbatch``
job array that Slurm schedules, requeues and time-limits by itself (job arrays,
``--requeue``, ``--signal``, dependencies); no driver process of ours has to
stay alive:

- :func:`submit_array` writes a *run file* (JSON, :func:`write_run_file`) that
  maps each array index to its run, and submits ``tools/slurm_run.sh RUN_FILE``
  as ``--array=0-(N-1)%MAX_PARALLEL`` with ``--requeue`` and
  ``--signal=B:USR1@SECONDS``. Each task trains (resuming from the work dir's
  last checkpoint), then tests; near its time limit it requeues itself, and a
  requeue or pre-emption by Slurm just starts it again (``tools/slurm_run.sh``).
- :func:`submit_report` queues a command (the sweep's report) to run once the
  arrays have ended (``--dependency=afterany:ID``); with ``wait`` it returns
  when that job has ended (``sbatch --wait``).
- Reading the queue back per run, and submitting only what is missing:
  ``tools/lib/sweep/slurm_queue.py``.

Run file (version 2)::

    {"format": "mmdet-polyloss slurm runs", "version": 2,
     "job_name": "sweep_x", "log": "/abs/logs/sweep_x-%A_%a.out",
     "stop_grace": 30,
     "tasks": {"0": {"name": "run_a", "work_dir": "/abs/work/run_a",
                     "train": ["python", "tools/train.py", "..."],
                     "test": ["python", "tools/test.py", "CFG", "@LAST_CHECKPOINT@", "..."],
                     "key": "0123abcd"},
               "1": {...}}}

A task (tools/lib/sweep/task.py) runs its run's steps; ``key`` is the run's key in its
marker (tools/lib/sweep/run.py); ``@LAST_CHECKPOINT@`` in the test command is replaced by
the path in ``work_dir/last_checkpoint``. Standard library only.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from tools.lib.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
#: The job script every array task runs.
JOB_SCRIPT = ROOT / 'tools' / 'slurm_run.sh'
RUN_FILE_FORMAT = 'mmdet-polyloss slurm runs'
RUN_FILE_VERSION = 2
#: In a test command, replaced by the checkpoint that the work dir's ``last_checkpoint`` names.
LAST_CHECKPOINT = '@LAST_CHECKPOINT@'
#: The environment variable that names the Python the job script starts the task with.
PYTHON_VARIABLE = 'POLYLOSS_PYTHON'
#: Slurm's largest ``--signal`` lead time (seconds).
MAX_SIGNAL_SECONDS = 65535
#: A line of the task's own (tools/lib/sweep/task.py, in the job script's name:
#: ``[slurm_run.sh TIME] ...``, or ``slurm_run.sh: error: ...``).
_SCRIPT_LINES = ('[slurm_run.sh ', 'slurm_run.sh: ')
#: The job script's verdict on an attempt whose resubmission would only fail the same way:
#: its training or test exited with an error, or it saved no checkpoint before its limit.
_COMMAND_FAILED = re.compile(r'slurm_run\.sh: error: .*(: (training|the test) exited with '
                             r'status \d+$|: no new checkpoint in this attempt)')
_ERROR_LINE = re.compile(r'error|exception', re.IGNORECASE)
_JOB_NAME = re.compile(r'[A-Za-z0-9._+=-]{1,200}')
_TIME = re.compile(r'(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?'
                   r'|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)')


@dataclass(frozen=True)
class SlurmRun:
    """One run of a sweep: its work dir and the commands that train and test it.

    ``train`` resumes from the work dir's last checkpoint when there is one
    (``tools/train.py --resume`` with no path); ``test`` may name the checkpoint
    as :data:`LAST_CHECKPOINT`. ``key`` identifies the run's settings in its marker.
    """
    name: str
    work_dir: Path
    train: Sequence[str]
    test: Sequence[str]
    key: str = ''


@dataclass(frozen=True)
class ArrayOptions:
    """How the array is submitted (``sbatch`` options).

    ``time``: Slurm's time format (``MINUTES``, ``H:M:S``, ``D-H``, ...), None
    for the partition's default. ``gpus``: per run; 0 is one CPU-only process,
    N > 0 is N tasks of one GPU each (the train command starts them with
    ``srun``). ``signal_seconds``: how long before the time limit the job script
    gets USR1 to stop and requeue (Slurm checks about every 30 s, so it may come
    that much earlier). ``stop_grace``: seconds the job script waits for a
    command it stopped before it kills it. ``extra``: more ``sbatch`` arguments,
    after ours (``--account=X``, ``--qos=Y``, ``--constraint=Z``).
    """
    job_name: str
    log_dir: Path
    partition: Optional[str] = None
    time: Optional[str] = None
    gpus: int = 0
    cpus_per_task: int = 1
    max_parallel: Optional[int] = None
    signal_seconds: int = 300
    stop_grace: int = 30
    extra: Sequence[str] = ()

    def log_pattern(self) -> str:
        """``--output``: one file per task, ``<log_dir>/<job name>-<array id>_<index>.out``."""
        return str(Path(self.log_dir).resolve() / f'{self.job_name}-%A_%a.out')


@dataclass(frozen=True)
class Submitted:
    """An array that :func:`submit_array` queued."""
    array_id: str
    run_file: Path
    job_ids: Dict[str, str]  # run name -> ARRAY_TASK
    logs: Dict[str, Path]  # run name -> its task's log file


def sweep_job_name(root: Path, prefix: str = 'sweep') -> str:
    """A job name for the sweep whose runs live under ``root``:
    ``<prefix>-<root's name>-<8 hex digits of its absolute path>``, so two sweeps
    with folders of one name under different parents do not share it."""
    path = str(Path(root).resolve())
    name = re.sub(r'[^A-Za-z0-9._+=-]', '_', Path(path).name)[:150] or 'root'
    return f'{prefix}-{name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}'


def parse_time(text: str, argument: str = '--time') -> Optional[int]:
    """Seconds in a Slurm time limit (``MIN``, ``MIN:SEC``, ``H:MIN:SEC``,
    ``D-H``, ``D-H:MIN``, ``D-H:MIN:SEC``); None for ``UNLIMITED``/``INFINITE``."""
    value = text.strip()
    if value.upper() in ('UNLIMITED', 'INFINITE', '-1'):
        return None
    match = _TIME.fullmatch(value)
    if not match:
        raise UserError(f'{argument} takes a Slurm time limit (MINUTES, H:MM:SS, D-HH, '
                        f'D-HH:MM:SS), got {text!r}')
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if 'days' in parts:
        seconds = (parts['days'] * 24 + parts['dh']) * 3600 + parts.get('dm', 0) * 60 \
            + parts.get('ds', 0)
    elif 'c' in parts:
        seconds = parts['a'] * 3600 + parts['b'] * 60 + parts['c']
    else:
        seconds = parts['a'] * 60 + parts.get('b', 0)
    if seconds <= 0:
        raise UserError(f'{argument} must be a positive time limit, got {text!r}')
    return seconds


def check_options(options: ArrayOptions) -> None:
    """Raise :class:`UserError` for an option ``sbatch`` would refuse or that would make every
    task requeue itself at once (the numbers are checked where they are parsed: tools/sweep.py)."""
    if not _JOB_NAME.fullmatch(options.job_name):
        raise UserError('--job-name must be 1 to 200 letters, digits or ._+=-, got '
                        f'{options.job_name!r}')
    if options.partition is not None and not options.partition.strip():
        raise UserError(f'--partition must name a partition, got {options.partition!r}')
    limit = parse_time(options.time) if options.time is not None else None
    if limit is not None and limit <= options.signal_seconds:
        raise UserError(f'--time {options.time!r} ({limit} s) must be longer than the '
                        f'{options.signal_seconds} s before it at which a run stops to be '
                        'requeued')


def sbatch_array_argv(count: int, options: ArrayOptions, run_file: Path,
                      script: Path = JOB_SCRIPT, hold: bool = False) -> List[str]:
    """The ``sbatch`` command that submits ``count`` runs of ``run_file`` as one array
    (``hold``: held, until :func:`release`)."""
    check_options(options)
    if not isinstance(count, int) or count < 1:
        raise UserError(f'an array needs at least one run, got count={count!r}')
    array = f'0-{count - 1}' + (f'%{options.max_parallel}' if options.max_parallel else '')
    argv = ['sbatch', '--parsable', f'--array={array}', f'--job-name={options.job_name}',
            f'--output={options.log_pattern()}', '--open-mode=append', '--requeue',
            f'--signal=B:USR1@{options.signal_seconds}'] + (['--hold'] if hold else [])
    if options.partition:
        argv.append(f'--partition={options.partition}')
    if options.time:
        argv.append(f'--time={options.time}')
    if options.gpus:
        argv += [f'--ntasks={options.gpus}', '--gpus-per-task=1']
    else:
        argv.append('--ntasks=1')
    argv.append(f'--cpus-per-task={options.cpus_per_task}')
    return argv + [*options.extra, str(script), str(Path(run_file).resolve())]


def run_file_data(runs: Sequence[SlurmRun], options: ArrayOptions) -> Dict:
    """The run file's content for ``runs`` (task ``i`` is ``runs[i]``)."""
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise UserError(f'two runs share a name: {sorted(names)}')
    tasks = {}
    for index, run in enumerate(runs):
        for argument, argv in (('train', run.train), ('test', run.test)):
            if not argv or not all(isinstance(word, str) for word in argv):
                raise UserError(f'run {run.name!r}: its {argument} command must be a '
                                f'non-empty list of strings, got {argv!r}')
        tasks[str(index)] = {
            'name': run.name, 'work_dir': str(Path(run.work_dir).resolve()),
            'train': list(run.train), 'test': list(run.test),
            'key': run.key}
    return {'format': RUN_FILE_FORMAT, 'version': RUN_FILE_VERSION,
            'job_name': options.job_name, 'log': options.log_pattern(),
            'stop_grace': options.stop_grace, 'tasks': tasks}


def write_run_file(path: Path, runs: Sequence[SlurmRun], options: ArrayOptions) -> Path:
    """Write the run file for ``runs`` to ``path`` (atomically); returns ``path``."""
    data = run_file_data(runs, options)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + '.tmp')
        temporary.write_text(json.dumps(data, indent=1) + '\n')
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f'cannot write the run file {str(path)!r}: {error.strerror}') from error
    return path


def read_run_file(path: Path) -> Dict:
    """The run file at ``path``, checked for its format and version."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f'cannot read the run file {str(path)!r}: {error}') from error
    if not isinstance(data, dict) or data.get('format') != RUN_FILE_FORMAT:
        raise UserError(f'{str(path)!r} is not a run file (no "format": "{RUN_FILE_FORMAT}")')
    if data.get('version') not in (1, RUN_FILE_VERSION):  # 1: queued by an older checkout
        raise UserError(f'{str(path)!r}: run file version {data.get("version")!r}, this '
                        f'checkout reads versions 1 and {RUN_FILE_VERSION}')
    return data


def log_path(pattern: str, array_id: str, index: int, job_name: str) -> Path:
    """``pattern`` (sbatch's ``--output``) with ``%A``, ``%a``, ``%x`` and ``%%`` filled in."""
    fill = {'A': str(array_id), 'a': str(index), 'x': job_name, '%': '%'}
    return Path(re.sub(r'%([Aax%])', lambda m: fill[m.group(1)], pattern))


def log_end(log: Path, tail: int = 1 << 16) -> Tuple[str, bool]:
    """How the last attempt in a job's log ended: its last error line ('' if none; a tool's
    own line before the job script's ``... exited with status N``), and whether that
    attempt's training or test exited with an error (or it saved no checkpoint), which a
    resubmission would repeat. Reads the last ``tail`` bytes."""
    try:
        with open(log, 'rb') as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail))
            lines = [line.strip() for line in handle.read().decode(errors='replace').splitlines()]
    except OSError:
        return '', False
    ours = [i for i, line in enumerate(lines) if line.startswith(_SCRIPT_LINES)]
    last = ours[-1] if ours else -1
    if last < 0 or not lines[last].startswith('slurm_run.sh: error: '):
        found = [line for line in lines[last + 1:] if _ERROR_LINE.search(line)]
        return (found[-1][:300] if found else ''), False
    start = max([i for i in ours if lines[i].startswith('[')] + [0])
    tools = [line for line in lines[start:last] if _ERROR_LINE.search(line)
             and not line.startswith(_SCRIPT_LINES)]
    cause = tools[-1] if tools and 'exited with status' in lines[last] else lines[last]
    return cause[:300], bool(_COMMAND_FAILED.match(lines[last]))


def call_slurm(argv: List[str], env: Optional[Mapping[str, str]], what: str,
               timeout: Optional[float] = 120) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a :class:`UserError` naming ``what`` if it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), check=False)
    except FileNotFoundError as error:
        raise UserError(f'{argv[0]}: not found: {what} needs Slurm\'s commands on PATH') \
            from error
    except subprocess.TimeoutExpired as error:
        raise UserError(f'{argv[0]} did not answer in {error.timeout:.0f} s ({what})') \
            from error


def run_slurm(argv: List[str], env: Optional[Mapping[str, str]], what: str,
              timeout: Optional[float] = 120) -> str:
    """Run a Slurm client command; its stdout, or a :class:`UserError` naming ``what``."""
    result = call_slurm(argv, env, what, timeout)
    if result.returncode != 0:
        message = ' '.join(result.stderr.split()) or f'exit status {result.returncode}'
        raise UserError(f'{what}: {argv[0]} failed: {message}')
    return result.stdout


def parse_job_id(stdout: str) -> str:
    """The job id in ``sbatch --parsable`` output (``ID`` or ``ID;CLUSTER``)."""
    job_id = stdout.strip().split(';')[0]
    if not job_id.isdigit():
        raise UserError(f'sbatch answered {stdout.strip()!r}, not a job id')
    return job_id


def submit_array(runs: Sequence[SlurmRun], options: ArrayOptions, run_dir: Path,
                 env: Optional[Mapping[str, str]] = None,
                 script: Path = JOB_SCRIPT, hold: bool = False) -> Submitted:
    """Submit ``runs`` as one job array (``hold``: held, until :func:`release`); its run
    file goes to ``run_dir`` (kept: every requeued task reads it again). Creates the log
    folder; each task creates its run's work dir."""
    if not runs:
        raise UserError('submit_array: no runs to submit')
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        Path(options.log_dir).mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f'{options.job_name}-'
                                        f'{time.strftime("%Y%m%d-%H%M%S")}-',
                                        suffix='.json', dir=run_dir)
        os.close(handle)
    except OSError as error:
        raise UserError(f'cannot create {error.filename!r}: {error.strerror}') from error
    run_file = write_run_file(Path(name), runs, options)
    argv = sbatch_array_argv(len(runs), options, run_file, script, hold)
    environment = dict(os.environ if env is None else env)
    environment.setdefault(PYTHON_VARIABLE, sys.executable)
    environment['POLYLOSS_ROOT'] = str(ROOT)  # the checkout whose task the job script starts
    array_id = parse_job_id(run_slurm(argv, environment, f'submitting {len(runs)} runs'))
    return Submitted(array_id, run_file,
                     {r.name: f'{array_id}_{i}' for i, r in enumerate(runs)},
                     {r.name: log_path(options.log_pattern(), array_id, i, options.job_name)
                      for i, r in enumerate(runs)})


def release(job_id: str, env: Optional[Mapping[str, str]] = None) -> None:
    """Let a held job (an array: all its tasks) start."""
    run_slurm(['scontrol', 'release', job_id], env,
              f'releasing the held job {job_id} (scontrol release {job_id} lets it run)')


def cancel(job_ids: Sequence[str], env: Optional[Mapping[str, str]] = None) -> None:
    """Cancel the jobs ``job_ids``."""
    run_slurm(['scancel', *job_ids], env, f'cancelling job {" ".join(job_ids)}')


@contextmanager
def submission_lock(path: Path, timeout: float = 120) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created): two submitters of one
    sweep read the queue and submit one after the other."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, 'a')
    except OSError as error:
        raise UserError(f'cannot open the lock file {str(path)!r}: {error.strerror}') from error
    with handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f'another submission holds {str(path)!r} for over '
                                    f'{timeout:.0f} s') from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def report_argv(command: Sequence[str], after: Sequence[str], job_name: str, log: Path,
                partition: Optional[str] = None, time_limit: Optional[str] = None,
                extra: Sequence[str] = ()) -> List[str]:
    """The ``sbatch`` command that runs ``command`` once every job in ``after``
    has ended, however it ended (``afterany``; an array id waits for all its tasks)."""
    if not command or not all(isinstance(word, str) for word in command):
        raise UserError(f'the report command must be a non-empty list of strings, '
                        f'got {command!r}')
    if not _JOB_NAME.fullmatch(job_name):
        raise UserError('the report job name must be 1 to 200 letters, digits or ._+=-, '
                        f'got {job_name!r}')
    bad = [job for job in after if not re.fullmatch(r'\d+(_\d+)?', str(job))]
    if bad:
        raise UserError(f'the report waits for job ids (ID or ARRAY_TASK), got {bad}')
    if time_limit is not None:
        parse_time(time_limit)
    argv = ['sbatch', '--parsable', f'--job-name={job_name}',
            f'--output={Path(log).resolve()}', '--open-mode=append', '--ntasks=1',
            '--cpus-per-task=1']
    if after:
        argv.append('--dependency=afterany:' + ':'.join(str(job) for job in after))
    if partition:
        argv.append(f'--partition={partition}')
    if time_limit:
        argv.append(f'--time={time_limit}')
    return argv + [*extra, f'--wrap={shlex.join(command)}']


def submit_report(command: Sequence[str], after: Sequence[str], job_name: str, log: Path,
                  partition: Optional[str] = None, time_limit: Optional[str] = None,
                  extra: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                  wait: bool = False) -> str:
    """Queue ``command`` to run after ``after`` (:func:`report_argv`); its job id.

    ``wait``: return only once the report job has ended (``sbatch --wait``: Slurm
    follows the jobs, not a loop of ours); a report job that fails is then a
    :class:`UserError` quoting the last error line of its log, and naming the log.
    """
    argv = report_argv(command, after, job_name, log, partition, time_limit, extra)
    if wait:
        argv.insert(2, '--wait')
    try:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f'cannot create {error.filename!r}: {error.strerror}') from error
    if not wait:
        return parse_job_id(run_slurm(argv, env, 'submitting the report job'))
    result = call_slurm(argv, env, 'the report job', timeout=None)
    job = result.stdout.strip().split(';')[0]
    if result.returncode != 0 and job.isdigit():  # it ran, and failed
        cause = log_end(log)[0] or 'no error line in its log'
        raise UserError(f'the report job {job} failed (exit status {result.returncode}): '
                        f'{cause} (its log: {log})')
    if result.returncode != 0:
        raise UserError(f'the report job (its log: {log}): sbatch failed: '
                        f'{" ".join(result.stderr.split()) or result.returncode}')
    return parse_job_id(result.stdout)
