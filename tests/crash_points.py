"""Fault injection for checkpoint saving (test-only).

:class:`FileOps` wraps ``os.write``, ``os.fsync``, ``os.replace`` and
``os.remove`` so that calls on paths under a root directory are logged, and
one chosen call is interrupted: before it runs, after it ran, or (a write)
half-way through its bytes. In the unit tests the interruption raises
:class:`SimulatedCrash`; run as a script, this module kills the process with
SIGKILL instead, then runs a training script as ``python SCRIPT ARGS``::

    POLYLOSS_CRASH_ROOT=WORK_DIR POLYLOSS_CRASH='replace epoch_2.pth 1 after' \\
        python tests/crash_points.py tools/train.py CONFIG --work-dir WORK_DIR ...

A call is named by its operation and its path relative to the root, with the
random part of a temporary file's name dropped (``.epoch_2.pth.tmp``); the
directory itself (fsynced after a rename) is ``.``. ``POLYLOSS_CRASH`` is
``OP NAME N WHEN``: the N-th such call, WHEN one of before, after, partial.
"""
import os
import re
import runpy
import signal
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

#: The operations FileOps sees; every other file access passes unseen.
OPS = ('write', 'fsync', 'replace', 'remove')
WHEN = ('before', 'after', 'partial')
_TEMP_SUFFIX = re.compile(r'\.[0-9a-f]{12}\.tmp$')


class SimulatedCrash(Exception):
    """Raised in place of a kill by the in-process tests."""


class CrashPoint(NamedTuple):
    op: str
    name: str
    nth: int = 1  # 1-based, among calls with this op and name
    when: str = 'before'

    @classmethod
    def parse(cls, text: str) -> 'CrashPoint':
        op, name, nth, when = text.split()
        point = cls(op, name, int(nth), when)
        assert op in OPS and when in WHEN and (when != 'partial' or op == 'write'), text
        return point

    def __str__(self) -> str:
        return f'{self.op} {self.name} {self.nth} {self.when}'


def raise_crash() -> None:
    raise SimulatedCrash()


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FileOps:
    """Logs the operations in :data:`OPS` on paths under ``root`` (in
    ``log``, as ``(op, name)``) and interrupts the one at ``crash``."""

    def __init__(self, root: str, crash: Optional[CrashPoint] = None,
                 action: Callable[[], None] = raise_crash) -> None:
        self.root = os.path.abspath(root)
        self.crash = crash
        self.action = action
        self.log: List[Tuple[str, str]] = []
        self._fd_paths: Dict[int, str] = {}
        self._real: Dict[str, Callable[..., Any]] = {}

    def install(self, setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
        """Wrap the functions in ``os`` (pass ``monkeypatch.setattr`` to undo
        it after a test)."""
        for name in ('open', 'close', *OPS):
            self._real[name] = getattr(os, name)
            setattr_(os, name, getattr(self, f'_{name}'))

    def name_of(self, path: Any) -> Optional[str]:
        """``path`` relative to the root (temporary names without their random
        part), or None outside it."""
        if isinstance(path, int):
            path = self._fd_paths.get(path)
            if path is None:
                return None
        path = os.path.abspath(os.fsdecode(path))
        if path != self.root and not path.startswith(self.root + os.sep):
            return None
        return _TEMP_SUFFIX.sub('.tmp', os.path.relpath(path, self.root))

    def _call(self, op: str, target: Any, run: Callable[[], Any],
              partial: Optional[Callable[[], Any]] = None) -> Any:
        name = self.name_of(target)
        if name is None:
            return run()
        self.log.append((op, name))
        crash = self.crash
        if crash is None or (crash.op, crash.name) != (op, name) or \
                self.log.count((op, name)) != crash.nth:
            return run()
        if crash.when == 'partial':
            partial()
        elif crash.when == 'after':
            run()
        self.action()
        raise AssertionError('the crash action returned')  # pragma: no cover

    def _open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        fd = self._real['open'](path, flags, mode, **kwargs)
        if self.name_of(path) is not None:
            self._fd_paths[fd] = os.path.abspath(os.fsdecode(path))
        return fd

    def _close(self, fd: int) -> None:
        self._fd_paths.pop(fd, None)
        self._real['close'](fd)

    def _write(self, fd: int, data: Any) -> int:
        write = self._real['write']
        view = memoryview(data)
        return self._call('write', fd, lambda: write(fd, view),
                          partial=lambda: write(fd, view[:len(view) // 2]))

    def _fsync(self, fd: int) -> None:
        return self._call('fsync', fd, lambda: self._real['fsync'](fd))

    def _replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        return self._call('replace', dst, lambda: self._real['replace'](src, dst, **kwargs))

    def _remove(self, path: Any, **kwargs: Any) -> None:
        return self._call('remove', path, lambda: self._real['remove'](path, **kwargs))


def main(argv: List[str]) -> None:
    """Install a killing FileOps from the environment, then run ``argv``."""
    spec = os.environ.get('POLYLOSS_CRASH')
    FileOps(os.environ['POLYLOSS_CRASH_ROOT'], CrashPoint.parse(spec) if spec else None,
            action=kill_self).install()
    script = os.path.abspath(argv[0])
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(script)  # as `python SCRIPT` has it
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main(sys.argv[1:])
