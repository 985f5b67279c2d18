"""One run of a sweep and its folder, the only code that reads or writes the run's files:

- the marker ``.sweep-run.json`` (JSON: the run's ``key``, a hash of its resolved config and
  ``--key-files``; its ``stage``, stored as ``state``: ``training``, ``trained``, ``tested``;
  the Slurm task that wrote it, ``slurm_job``),
- the lock ``.slurm-run.lock`` (``flock``; the file says who holds it): one trainer a run,
- ``last_checkpoint`` (mmengine's: the path of the newest checkpoint).

:meth:`Run.train_then_test` is the run's one state machine, the same by hand, in the local
sweep and in a Slurm task: training (resuming), then the test of the checkpoint it ended
with, the marker moved on after each step. Standard library only.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from tools.lib.errors import UserError

LOCK_NAME = '.slurm-run.lock'
MARKER = '.sweep-run.json'
FORCE = '--force (FORCE=1 for tools/run_demo.sh)'
#: The sweep's verdict on a run from its folder (:meth:`Run.assess`) by the marker's stage.
_VERDICT = {'tested': 'done', 'trained': 'test'}
#: A step of :meth:`Run.train_then_test` as :class:`StepFailed` names it.
_FAILED_STEP = {'train': 'training', 'test': 'the test'}


class RunBusy(Exception):
    """Another process holds the run's lock; ``holder`` says who (the lock file's text)."""

    def __init__(self, work_dir: Path, holder: str) -> None:
        super().__init__(f'{work_dir} is being run by another process ({holder})')
        self.holder = holder


class Stopped(Exception):
    """The driver got a stop signal (the message names it); its child is stopped."""


def raise_stopped(signum: int, frame: object) -> None:
    """A signal handler: :class:`Stopped`, named after the signal."""
    raise Stopped(signal.Signals(signum).name)


class StepFailed(Exception):
    """A step's command exited with an error: ``step`` (``training``, ``the test``), its
    ``command`` and exit ``status``."""

    def __init__(self, step: str, command: Sequence[str], status: int) -> None:
        super().__init__(f'{step} exited with status {status}')
        self.step, self.command, self.status = step, list(command), status


@dataclass
class Run:
    """One (loss setting, seed) of a sweep: its name, config, folder and ``--cfg-options``;
    ``key`` identifies its settings in the marker; ``state`` is the sweep's verdict (new,
    resume, test, done; held while another process changes it)."""
    name: str
    config: str
    work_dir: Path
    options: List[str] = field(default_factory=list)
    key: str = ''
    state: str = 'new'
    #: The lock file's descriptor while :meth:`lock` holds it: the steps' commands inherit it.
    _lock_fd: Optional[int] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)

    # --- the marker --------------------------------------------------------------------
    def marker(self) -> Dict:
        """The marker's content; ``{}`` when there is none or it cannot be read."""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.work_dir / MARKER).read_text())
            return data if isinstance(data, dict) else {}
        return {}

    def stage(self) -> str:
        """The marker's stage if it is of this run's key (any key when the run has none);
        ``''`` when there is no marker or it is of other settings."""
        data = self.marker()
        stage = data.get('state')
        same = not self.key or data.get('key') == self.key
        return stage if same and isinstance(stage, str) else ''

    def mark(self, stage: str, job: str = '') -> None:
        """Write the marker (beside, then renamed) with ``stage`` and the Slurm ``job``."""
        content = {'key': self.key, 'state': stage, **({'slurm_job': job} if job else {})}
        temporary = self.work_dir / (MARKER + '.tmp')
        temporary.write_text(json.dumps(content) + '\n')
        os.replace(temporary, self.work_dir / MARKER)

    # --- the lock ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, holder: str = '') -> Iterator[None]:
        """Hold the run's lock (making the folder); :class:`RunBusy` at once if another
        process does. ``holder``: who holds it (default: this process and host). On a file
        system without locks it warns and goes on unlocked. The commands of
        :meth:`train_then_test` inherit the lock: killed, this process leaves it with them."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / LOCK_NAME, 'a+') as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise RunBusy(self.work_dir, handle.read().strip() or 'unknown') from None
            except OSError as error:  # ENOLCK, EOPNOTSUPP: no locks on this file system
                print(f'warning: cannot lock {handle.name} ({error.strerror}; a file system '
                      'without locks?): going on without', file=sys.stderr, flush=True)
            handle.seek(0)
            handle.truncate()
            host = socket.gethostname().split('.')[0]
            handle.write(f'{holder or f"pid {os.getpid()}"} on {host}, since '
                         f'{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}\n')
            handle.flush()
            self._lock_fd = handle.fileno()
            try:
                yield
            finally:
                self._lock_fd = None
                with contextlib.suppress(OSError):
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _inherited(self) -> Sequence[int]:
        return () if self._lock_fd is None else (self._lock_fd,)

    def holder(self) -> Optional[str]:
        """Who holds the run's lock now, or None."""
        with contextlib.suppress(OSError), open(self.work_dir / LOCK_NAME) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or 'unknown'
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    # --- the checkpoint training ended with ----------------------------------------------
    def last_checkpoint(self) -> str:
        """The path that ``last_checkpoint`` names; ``''`` when there is none."""
        with contextlib.suppress(OSError):
            return (self.work_dir / 'last_checkpoint').read_text(errors='replace').strip()
        return ''

    def checkpoint_stamp(self) -> str:
        """``last_checkpoint``'s write time and content: it changes when a checkpoint is saved."""
        with contextlib.suppress(OSError):
            return f'{(self.work_dir / "last_checkpoint").stat().st_mtime_ns}:' \
                   f'{self.last_checkpoint()}'
        return 'none'

    # --- where it stands ---------------------------------------------------------------
    def assess(self, force: bool, retrain_changed: bool) -> None:
        """Set ``state`` from the folder: new, resume (started, with a checkpoint), test
        (trained) or done (tested with the same key); a folder the sweep did not write is
        an error unless ``force``, one of another key unless ``force`` or
        ``retrain_changed``."""
        work_dir, marker = self.work_dir, self.marker()
        if not marker and not force and work_dir.exists() and not (
                work_dir.is_dir() and all(e.name == LOCK_NAME for e in work_dir.iterdir())):
            raise UserError(f'{work_dir} holds files the sweep did not write (no {MARKER}), '
                            f'perhaps a run of tools/train.py; {FORCE} replaces it, or choose '
                            'another --work-dir-root')
        if force or not marker or marker.get('key') != self.key:
            if marker and not force and not retrain_changed:
                raise UserError(f'{work_dir} holds a run of other settings (its config, a '
                                '--key-files file or --gpus changed); --retrain-changed '
                                'retrains it, --force retrains every run, or choose another '
                                '--work-dir-root')
            self.state = 'new'
            return
        self.state = _VERDICT.get(marker.get('state'), 'resume')
        if self.state == 'resume' and not (work_dir / 'last_checkpoint').is_file():
            self.state = 'new'  # stopped before its first checkpoint: start over
            return
        # a checkpoint deleted by hand: a resume or test would fail on it again and again
        path = self.last_checkpoint()
        damage = ('no last_checkpoint file' if not (work_dir / 'last_checkpoint').is_file()
                  else '' if osp.isfile(path) and osp.getsize(path)
                  else f'{path} is missing or empty')
        if damage:
            what = 'finished run' if self.state in ('done', 'test') else \
                'started run (it would resume from that checkpoint)'
            raise UserError(f'the {what} in {work_dir} is damaged ({damage}); {FORCE} '
                            'retrains it')

    def folder_error(self, error: OSError) -> UserError:
        """The one-line error for ``error``, met while making, locking or clearing the folder."""
        return UserError(f'cannot prepare the work dir {str(self.work_dir)!r}: '
                         f'{error.strerror}: {error.filename!r}')

    def needs_clearing(self) -> bool:
        """Whether a ``new`` run's folder holds anything :meth:`clear` removes."""
        return self.state == 'new' and self.work_dir.is_dir() and any(
            entry.name != LOCK_NAME for entry in self.work_dir.iterdir())

    def clear(self) -> None:
        """Empty a ``new`` run's folder but for the lock file, which the caller holds."""
        if self.state != 'new' or not self.work_dir.exists():
            return
        for entry in self.work_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.name != LOCK_NAME:
                entry.unlink()

    # --- the steps ---------------------------------------------------------------------
    def train_then_test(self, train: Sequence[str], test: Callable[[str], List[str]],
                        env: Optional[Mapping[str, str]] = None, job: str = '',
                        show: Callable[[str, Sequence[str]], None] = lambda step, command: None,
                        stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
                        grace: float = 30) -> Dict[str, float]:
        """Train (unless the marker says trained), then test ``test(checkpoint)``, the
        checkpoint ``last_checkpoint`` names; the marker says training, trained, tested as
        the steps go. A failing command: :class:`StepFailed`; a stop signal:
        :class:`Stopped` once the command has stopped (see :func:`run_child`). ``show`` is
        told each step (``train``, ``test``) and its command before it runs. Returns the
        wall seconds of each step run here (``train`` of this attempt only, on a resume)."""
        seconds: Dict[str, float] = {}

        def step(name: str, command: Sequence[str]) -> None:
            show(name, command)
            start = time.monotonic()
            status = run_child(list(command), env, grace, stop_signals, self._inherited())
            if status != 0:
                raise StepFailed(_FAILED_STEP[name], command, status)
            seconds[name] = time.monotonic() - start

        if self.stage() != 'trained':
            self.mark('training', job)
            step('train', train)
            self.mark('trained', job)
        checkpoint = self.last_checkpoint()
        if not checkpoint:
            raise UserError(f'{self.name}: training left no last_checkpoint in {self.work_dir}')
        if not osp.isfile(checkpoint):
            raise UserError(f'{self.name}: {self.work_dir}/last_checkpoint names no checkpoint '
                            f'file ({checkpoint!r}): training left none to test')
        step('test', test(checkpoint))
        self.mark('tested', job)
        return seconds


def step_times(seconds: Mapping[str, float]) -> str:
    """``trained in 52 s, tested in 9 s`` of :meth:`Run.train_then_test`'s answer."""
    done = {'train': 'trained', 'test': 'tested'}
    return ', '.join(f'{done[step]} in {value:.0f} s' for step, value in seconds.items())


def run_child(argv: List[str], env: Optional[Mapping[str, str]] = None, grace: float = 30,
              stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
              pass_fds: Sequence[int] = ()) -> int:
    """Run ``argv`` (keeping ``pass_fds`` open in it) in a process group of its own; its
    exit status (128 + N when signal N ended it, 127 when it cannot be started, as a shell
    says). On one of ``stop_signals`` the group gets TERM (KILL after ``grace`` s), then
    :class:`Stopped`."""
    previous = {sig: signal.signal(sig, raise_stopped) for sig in stop_signals}
    process = None
    try:
        try:
            process = subprocess.Popen(argv, env=None if env is None else dict(env),
                                       start_new_session=True, pass_fds=tuple(pass_fds))
        except OSError as error:
            print(f'{argv[0]}: {error.strerror}', file=sys.stderr, flush=True)
            return 127
        status = process.wait()
        return 128 - status if status < 0 else status
    except Stopped:
        if process is not None:
            for sig in previous:  # a second signal must not cut the stop short
                signal.signal(sig, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(grace)
                    break
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
