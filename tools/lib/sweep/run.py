"""One run, one trainer: the per-run lock (``flock`` on ``WORK_DIR/.slurm-run.lock``, held
by tools/slurm_run.sh and the local tools/sweep.py alike; the file says who holds it) and
a child process that ends with its driver. Standard library only."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

LOCK_NAME = '.slurm-run.lock'  # the job script's name for it
MARKER = '.sweep-run.json'  # the sweep's key and state of a run (tools/lib/sweep/plan.py)


class RunBusy(Exception):
    """Another process holds the run's lock."""


class Stopped(Exception):
    """The driver got SIGTERM or SIGINT (the message names it); its child is stopped."""


@contextlib.contextmanager
def run_lock(work_dir: Path) -> Iterator[None]:
    """Hold the run's lock (making ``work_dir``); RunBusy at once if another process does."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(work_dir) / LOCK_NAME, 'a+') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunBusy(f'{work_dir} is being run by another process '
                          f'({handle.read().strip() or "unknown"})') from None
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
    """Who holds the run's lock now, or None."""
    with contextlib.suppress(OSError), open(Path(work_dir) / LOCK_NAME) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or 'unknown'
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def run_child(argv: List[str], env: Optional[Dict[str, str]] = None, grace: float = 30) -> int:
    """Run ``argv`` in a process group of its own; its exit status. On SIGTERM or
    SIGINT the group gets TERM (KILL after ``grace`` s), then Stopped is raised."""
    def on_signal(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    process = None
    try:
        process = subprocess.Popen(argv, env=env, start_new_session=True)
        return process.wait()
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
