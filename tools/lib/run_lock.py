"""One run, one trainer: the per-run lock and a child process that ends with its driver.

Every process that trains or tests a sweep's run holds ``WORK_DIR/.slurm-run.lock``
(``flock``) while it does: the Slurm job script (``tools/slurm_run.sh``) and the
local driver (``tools/sweep.py --launcher none|pytorch``) take the same lock, so
two drivers on one work-dir root, or a driver and a Slurm task, never train one
run at once. The lock file holds who has it (a job id or a process id and host).

:func:`run_child` runs a tool in its own process group and, when the driver gets
SIGTERM or SIGINT, stops that group (TERM, KILL after a grace period) before the
driver exits: no ``tools/train.py`` is left training on its own.

Only the standard library.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

#: The lock file in a run's work dir (the job script's name for it).
LOCK_NAME = '.slurm-run.lock'
#: Seconds a stopped child may take to end before it is killed.
STOP_GRACE = 30


class RunBusy(Exception):
    """Another process holds the run's lock; ``holder`` is what it wrote there."""

    def __init__(self, work_dir: Path, holder: str) -> None:
        super().__init__(f'{work_dir} is being run by another process ({holder or "unknown"})')
        self.work_dir = work_dir
        self.holder = holder


class Stopped(Exception):
    """The driver got SIGTERM or SIGINT (``signum``); its child has been stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def run_lock(work_dir: Path) -> Iterator[None]:
    """Hold the run's lock (creating ``work_dir``); :class:`RunBusy` at once if
    another process holds it."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    with open(path, 'a+') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunBusy(work_dir, handle.read().strip()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f'pid {os.getpid()} on {socket.gethostname().split(".")[0]}, since '
                     f'{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}\n')
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_busy(work_dir: Path) -> Optional[str]:
    """Who holds the run's lock now, or None (the lock is not kept)."""
    path = Path(work_dir) / LOCK_NAME
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or 'unknown'
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _stop_group(process: subprocess.Popen, grace: float) -> None:
    """TERM to the child's process group; KILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(argv: List[str], env: Optional[Dict[str, str]] = None,
              grace: float = STOP_GRACE) -> int:
    """Run ``argv`` in a process group of its own and return its exit status. On
    SIGTERM or SIGINT to this process the group is stopped first, then
    :class:`Stopped` is raised."""
    def on_signal(signum, frame):
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    process = None
    try:
        process = subprocess.Popen(argv, env=env, start_new_session=True)
        return process.wait()
    except Stopped:
        if process is not None:
            for sig in previous:  # a second signal must not cut the stop short
                signal.signal(sig, signal.SIG_IGN)
            _stop_group(process, grace)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
