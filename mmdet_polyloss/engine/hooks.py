"""Checkpoints that a crash at any instant cannot break.

mmengine 0.10.7's ``CheckpointHook`` removes the oldest checkpoint before it
writes the new one, writes the new one in place and then rewrites
``last_checkpoint`` in place. Killed in between (with ``max_keep_ckpts=1``),
it leaves a partial file or none, and a ``last_checkpoint`` that names a
deleted file: ``--resume`` fails and the run is lost.

:class:`AtomicCheckpointHook` changes the order and the writes, nothing else:
every file goes to a temporary name in its final directory, is flushed and
fsynced, and is renamed over its final name with :func:`os.replace` (then the
directory is fsynced); ``last_checkpoint`` is updated the same way, and only
then are checkpoints beyond ``max_keep_ckpts`` (or a superseded best
checkpoint) removed. The writes go through :class:`AtomicLocalBackend`, an
mmengine file backend registered as ``'polyloss_atomic_local'``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import os.path as osp
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Tuple, Union

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'ATOMIC_BACKEND', 'write_atomically',
           'is_temporary_file']

#: The name :class:`AtomicLocalBackend` is registered under in mmengine's fileio.
ATOMIC_BACKEND = 'polyloss_atomic_local'
#: ``.<final name>.<12 hex digits>.tmp``: what :func:`write_atomically` writes first.
_TEMP_NAME = re.compile(r'^\..+\.[0-9a-f]{12}\.tmp$')
#: errno values with which a file system says it cannot fsync a directory.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def is_temporary_file(name: str) -> bool:
    """Whether ``name`` (a base name) is one of :func:`write_atomically`'s temporary files."""
    return bool(_TEMP_NAME.match(name))


def fsync_directory(directory: str) -> None:
    """Make a rename or file creation in ``directory`` durable (POSIX; a no-op
    on Windows and on file systems that do not support it)."""
    if os.name == 'nt':  # directories cannot be opened there; NTFS journals renames
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def write_atomically(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` so that, whenever the process or the machine
    stops, ``path`` holds either its previous content (or nothing, if it did
    not exist) or all of ``data``.

    The data goes to a temporary file next to ``path`` (same file system),
    which is fsynced, renamed onto ``path`` and its directory fsynced. On an
    exception the temporary file is removed; after a kill it stays, and
    :class:`AtomicCheckpointHook` removes such leftovers when training starts.
    """
    path = osp.abspath(path)
    directory, name = osp.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(directory, f'.{name}.{uuid.uuid4().hex[:12]}.tmp')
    # 0o666 and O_EXCL: the umask applies as for open(path, 'wb'); never reuse a file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less (at most ~2 GiB per call on Linux)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_directory(directory)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` and ``put_text`` write
    through :func:`write_atomically`; everything else is inherited."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomically(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        write_atomically(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)  # force: module reloads


class _DeferredRemoval:
    """Stands in for a file backend: queues ``remove`` and ``rmtree`` calls,
    passes everything else on."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.queued: List[Tuple[Callable[[str], None], str]] = []

    def remove(self, path: str) -> None:
        self.queued.append((self._backend.remove, path))

    def rmtree(self, path: str) -> None:
        self.queued.append((self._backend.rmtree, path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) whose saves survive a
    crash at any instant.

    Guarantees, for a local ``out_dir``: every checkpoint file on disk is
    complete; ``last_checkpoint`` always names a complete checkpoint (or does
    not exist yet); a checkpoint, regular or best, is removed only after its
    successor and ``last_checkpoint`` are on disk. So ``--resume`` always
    works. What a crash can leave behind: a temporary ``.<name>.<hex>.tmp``
    file (removed when training starts again), one regular checkpoint beyond
    ``max_keep_ckpts`` (removed by the resumed run) and, during a best-checkpoint
    save, one extra complete ``best_*`` file (left for the user). While saving,
    the disk needs room for one checkpoint more than ``max_keep_ckpts``.

    With a non-local backend (e.g. ``backend_args=dict(backend='petrel')``) or
    the deprecated ``file_client_args``, it warns once and behaves exactly as
    ``CheckpointHook``: atomicity is not guaranteed there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(keep := self.max_keep_ckpts, int) or isinstance(keep, bool):
            raise TypeError(f'max_keep_ckpts must be an int (-1 keeps all), got {keep!r}')
        self.atomic = False  # decided in before_train, once out_dir is known
        self._warned = False

    def before_train(self, runner: Runner) -> None:
        out_dir = runner.work_dir if self.out_dir is None else self.out_dir
        backend = None if self.file_client_args is not None else get_file_backend(
            out_dir, backend_args=self.backend_args)
        self.atomic = type(backend) in (LocalBackend, AtomicLocalBackend)
        if self.atomic:
            # The parent saves every checkpoint through runner.save_checkpoint with
            # these backend_args (all but the model published after training).
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        elif not self._warned:
            self._warned = True
            where = 'file_client_args' if backend is None else type(backend).__name__
            runner.logger.warning(
                f'AtomicCheckpointHook: saving to {out_dir} through {where}: atomicity is '
                'not guaranteed there (only on a local disk, without file_client_args). '
                "Saving as mmengine's CheckpointHook does: a crash while saving can break "
                'the checkpoints.')
        # Resuming: the parent also removes checkpoints beyond max_keep_ckpts that
        # the resumed checkpoint still lists (see _make_room_for).
        super().before_train(runner)
        if self.atomic and is_main_process():
            self._remove_leftovers(runner, {self.out_dir, runner.work_dir})

    def _save_checkpoint_with_step(self, runner: Runner, step: int, meta: Dict[str, Any]) -> None:
        # Reimplemented, not extended: the parent removes the oldest checkpoint
        # before it saves and writes last_checkpoint in place, in this one method;
        # the order of these steps is what this class changes.
        if not self.atomic:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        expired = self._make_room_for(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(  # a no-op on ranks other than the main one
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if expired:
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        if not is_main_process():
            return
        write_atomically(osp.join(runner.work_dir, 'last_checkpoint'),
                         str(self.last_ckpt).encode())
        for old_step in expired:
            self._remove_checkpoint(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step)))

    def _save_best_checkpoint(self, runner: Runner, metrics: Dict[str, Any]) -> None:
        """The parent's, with every removal it asks for (the previous best
        checkpoint, expired regular ones) held back until all its writes are done."""
        if not self.atomic:
            super()._save_best_checkpoint(runner, metrics)
            return
        backend = self.file_backend
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for remove, path in deferred.queued:  # not reached if a write failed
            remove(path)

    def _make_room_for(self, runner: Runner, step: int) -> List[int]:
        """Add ``step`` to the kept checkpoints; return the steps it pushes out,
        whose files the caller removes once the new checkpoint is saved."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []  # the latter: the best-checkpoint path saving the same step again
        expired = []
        while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
            expired.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        # Stored in the new checkpoint: until they are removed, the expired steps
        # stay listed, so a run resumed from it removes them (parent's before_train).
        runner.message_hub.update_info('keep_ckpt_ids', expired + list(self.keep_ckpt_ids))
        return expired

    def _remove_checkpoint(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed
            self.file_backend.rmtree(path)

    @staticmethod
    def _remove_leftovers(runner: Runner, directories: Iterable[str]) -> None:
        """Remove temporary files that a killed run left in ``directories``."""
        for directory in sorted({str(d) for d in directories}):
            if not osp.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                path = osp.join(directory, name)
                if is_temporary_file(name) and osp.isfile(path):
                    runner.logger.info(f'Removing {path}, left by an interrupted save.')
                    os.remove(path)
