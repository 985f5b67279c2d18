"""AtomicCheckpointHook: a drop-in CheckpointHook whose saves a crash cannot break.

Runs mmengine's Runner on a one-layer model (a fraction of a second per run).
The fault-injection tests interrupt every file operation of the saves in turn
(tests/crash_points.py) and check that what is on disk can be resumed."""
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
import torch
from mmdet.registry import HOOKS
from mmengine.evaluator import BaseMetric
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmdet_polyloss.engine.hooks import (
    ATOMIC_BACKEND,
    AtomicCheckpointHook,
    AtomicLocalBackend,
    is_temporary_file,
    write_atomically,
)

from crash_points import CrashPoint, FileOps, SimulatedCrash


class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return list(out)


class ScriptedMetric(BaseMetric):
    """Reports the next of ``scores`` as ``score`` at each validation."""

    def __init__(self, scores: Sequence[float]) -> None:
        super().__init__()
        self.scores = list(scores)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        self.results.append(0)

    def compute_metrics(self, results: List[Any]) -> Dict[str, float]:
        return dict(score=self.scores.pop(0))


def loader(batches: int = 2) -> DataLoader:
    data = [dict(inputs=torch.full((2, ), float(i))) for i in range(2 * batches)]
    return DataLoader(data, batch_size=2)


def make_runner(work_dir: Path, hook: CheckpointHook, max_epochs: int = 2,
                scores: Optional[Sequence[float]] = None, resume: bool = False,
                by_epoch: bool = True) -> Runner:
    val: Dict[str, Any] = {}
    if scores is not None:
        val = dict(val_dataloader=loader(), val_cfg=dict(),
                   val_evaluator=[ScriptedMetric(scores)])
    train_cfg = dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else \
        dict(by_epoch=False, max_iters=2 * max_epochs, val_interval=2)
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=uuid.uuid4().hex,
        # By iteration: one pass of the data (mmengine sleeps 2 s when it starts another).
        train_dataloader=loader() if by_epoch else loader(2 * max_epochs), train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=hook, logger=dict(type='LoggerHook', interval=1)),
        resume=resume, **val)


def train(runner: Runner) -> None:
    """Resuming loads weights-only (the package registered mmengine's types)."""
    runner.train()


def load(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location='cpu')


def checkpoints(work_dir: Path) -> List[str]:
    return sorted(p.name for p in work_dir.glob('*.pth'))


def temporary_files(work_dir: Path) -> List[str]:
    return sorted(name for name in os.listdir(work_dir) if is_temporary_file(name))


def last_checkpoint(work_dir: Path) -> Optional[Path]:
    path = work_dir / 'last_checkpoint'
    return Path(path.read_text()) if path.exists() else None


def assert_resumable(work_dir: Path) -> Optional[int]:
    """Every .pth file loads and ``last_checkpoint``, if there, names one;
    returns the epoch it resumes from (None: from scratch)."""
    for name in checkpoints(work_dir):
        load(work_dir / name)  # raises on a partial file
    last = last_checkpoint(work_dir)
    if last is None:
        return None
    assert last.is_file(), f'last_checkpoint names {last}, which is gone'
    return load(last)['meta']['epoch']


def atomic(**kwargs: Any) -> AtomicCheckpointHook:
    return AtomicCheckpointHook(interval=1, **kwargs)


# ------------------------------------------------------------ the hook, uninterrupted


def test_registered_in_mmdet_and_takes_checkpoint_hooks_arguments():
    args = dict(interval=2, by_epoch=False, max_keep_ckpts=3, save_best='auto',
                filename_tmpl='ckpt_{}.pth', save_begin=1, published_keys=['meta'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        hook = HOOKS.build(dict(type='AtomicCheckpointHook', **args))
    assert type(hook) is AtomicCheckpointHook and isinstance(hook, CheckpointHook)
    reference = CheckpointHook(**args)
    assert {k: v for k, v in vars(hook).items() if k not in ('atomic', '_warned')} == \
        vars(reference)


@pytest.mark.parametrize('by_epoch', [True, False], ids=['by_epoch', 'by_iter'])
@pytest.mark.parametrize('max_keep', [1, 2, -1])
def test_keeps_what_checkpoint_hook_keeps(tmp_path, by_epoch, max_keep):
    runs = {}
    for hook_type in (CheckpointHook, AtomicCheckpointHook):
        work_dir = tmp_path / hook_type.__name__
        make_runner(work_dir, hook_type(interval=1, by_epoch=by_epoch, max_keep_ckpts=max_keep),
                    max_epochs=3, by_epoch=by_epoch).train()
        runs[hook_type] = work_dir
        assert temporary_files(work_dir) == []
    atomic_dir = runs[AtomicCheckpointHook]
    assert checkpoints(atomic_dir) == checkpoints(runs[CheckpointHook])
    kept = {1: 1, 2: 2, -1: 6 if not by_epoch else 3}[max_keep]
    assert len(checkpoints(atomic_dir)) == kept
    final = 'epoch_3.pth' if by_epoch else 'iter_6.pth'
    assert last_checkpoint(atomic_dir) == atomic_dir / final
    state = load(atomic_dir / final)
    assert state['meta']['epoch' if by_epoch else 'iter'] == (3 if by_epoch else 6)
    assert {'state_dict', 'optimizer', 'message_hub'} <= set(state)


def test_save_best_keeps_one_best_and_the_latest(tmp_path):
    runs = {}
    for hook_type in (CheckpointHook, AtomicCheckpointHook):
        work_dir = tmp_path / hook_type.__name__
        hook = hook_type(interval=1, max_keep_ckpts=1, save_best='score', rule='greater')
        make_runner(work_dir, hook, max_epochs=4, scores=[0.1, 0.5, 0.3, 0.7]).train()
        runs[hook_type] = work_dir
    work_dir = runs[AtomicCheckpointHook]
    assert checkpoints(work_dir) == checkpoints(runs[CheckpointHook]) == \
        ['best_score_epoch_4.pth', 'epoch_4.pth']
    hub = load(work_dir / 'epoch_4.pth')['message_hub']['runtime_info']
    assert hub['best_score'] == 0.7
    assert hub['best_ckpt'] == str(work_dir / 'best_score_epoch_4.pth')
    best = load(work_dir / 'best_score_epoch_4.pth')
    assert best['meta']['epoch'] == 4 and 'optimizer' not in best
    assert temporary_files(work_dir) == []


def test_save_best_removes_the_previous_best_only_after_writing_the_new_one(tmp_path, monkeypatch):
    ops = FileOps(str(tmp_path))
    ops.install(monkeypatch.setattr)
    hook = atomic(max_keep_ckpts=1, save_best='score', rule='greater')
    make_runner(tmp_path, hook, max_epochs=2, scores=[0.1, 0.5]).train()
    log = [f'{op} {name}' for op, name in ops.log if op in ('replace', 'remove')]
    assert log == [
        'replace epoch_1.pth', 'replace last_checkpoint',
        'replace best_score_epoch_1.pth',
        'replace epoch_1.pth', 'replace last_checkpoint',  # again: names the best one
        'replace epoch_2.pth', 'replace last_checkpoint',
        'remove epoch_1.pth',
        'replace best_score_epoch_2.pth',
        'replace epoch_2.pth', 'replace last_checkpoint',
        'remove best_score_epoch_1.pth',
    ]


@pytest.mark.parametrize('point', [
    CrashPoint('write', '.best_score_epoch_2.pth.tmp', 1, 'partial'),
    CrashPoint('replace', 'best_score_epoch_2.pth', 1, 'before'),
    CrashPoint('replace', 'best_score_epoch_2.pth', 1, 'after'),
    CrashPoint('replace', 'epoch_2.pth', 2, 'after'),  # the save naming the new best
    CrashPoint('replace', 'last_checkpoint', 4, 'after'),
    CrashPoint('remove', 'best_score_epoch_1.pth', 1, 'before'),
], ids=str)
def test_a_crash_while_saving_a_best_checkpoint_keeps_one(tmp_path, monkeypatch, point):
    hook = atomic(max_keep_ckpts=1, save_best='score', rule='greater')
    FileOps(str(tmp_path), point).install(monkeypatch.setattr)
    with pytest.raises(SimulatedCrash):
        make_runner(tmp_path, hook, max_epochs=2, scores=[0.1, 0.5]).train()
    monkeypatch.undo()
    assert assert_resumable(tmp_path) == 2
    hub = load(last_checkpoint(tmp_path))['message_hub']['runtime_info']
    assert load(Path(hub['best_ckpt']))['meta']['epoch'] == (2 if hub['best_score'] == 0.5 else 1)
    assert len([name for name in checkpoints(tmp_path) if name.startswith('best_')]) <= 2


def test_resume_removes_a_checkpoint_a_crash_left_beyond_max_keep(tmp_path, monkeypatch):
    """Killed after last_checkpoint names epoch_2.pth, before epoch_1.pth is
    removed: the resumed run removes it when it starts."""
    FileOps(str(tmp_path), CrashPoint('remove', 'epoch_1.pth', 1, 'before')).install(
        monkeypatch.setattr)
    with pytest.raises(SimulatedCrash):
        make_runner(tmp_path, atomic(max_keep_ckpts=1), max_epochs=2).train()
    monkeypatch.undo()
    assert checkpoints(tmp_path) == ['epoch_1.pth', 'epoch_2.pth']
    assert last_checkpoint(tmp_path) == tmp_path / 'epoch_2.pth'
    train(make_runner(tmp_path, atomic(max_keep_ckpts=1), max_epochs=2, resume=True))
    assert checkpoints(tmp_path) == ['epoch_2.pth']


def test_training_start_removes_temporary_files_a_kill_left(tmp_path):
    leftovers = ['.epoch_2.pth.0123456789ab.tmp', '.last_checkpoint.ba9876543210.tmp']
    others = ['.epoch_2.pth.tmp', 'notes.tmp', '.x.0123456789AB.tmp']
    for name in leftovers + others:
        (tmp_path / name).write_bytes(b'partial')
    make_runner(tmp_path, atomic(max_keep_ckpts=1), max_epochs=1).train()
    assert sorted(n for n in os.listdir(tmp_path) if n in leftovers + others) == sorted(others)


# ------------------------------------------------------------ interrupted at every step


def _recorded_ops(work_dir: Path) -> List[str]:
    """Every file operation of a 2-epoch run with max_keep_ckpts=1, as 'op name'."""
    ops = FileOps(str(work_dir))
    with pytest.MonkeyPatch.context() as mp:
        ops.install(mp.setattr)
        make_runner(work_dir, atomic(max_keep_ckpts=1)).train()
    return [f'{op} {name}' for op, name in ops.log]


#: One save, in order: checkpoint to a temporary file, its fsync, the rename, the
#: directory's fsync, the same for last_checkpoint, then the removal.
SAVE_1 = ['write .epoch_1.pth.tmp', 'fsync .epoch_1.pth.tmp', 'replace epoch_1.pth', 'fsync .',
          'write .last_checkpoint.tmp', 'fsync .last_checkpoint.tmp', 'replace last_checkpoint',
          'fsync .']
SAVE_2 = [op.replace('epoch_1', 'epoch_2') for op in SAVE_1] + ['remove epoch_1.pth']
SAVES = SAVE_1 + SAVE_2


def test_the_save_sequence(tmp_path):
    assert _recorded_ops(tmp_path) == SAVES


def _crash_points() -> List[CrashPoint]:
    """Before and after every step of SAVES (a write: before and half-way)."""
    points = []
    for i, step in enumerate(SAVES):
        op, name = step.split()
        nth = SAVES[:i + 1].count(step)
        points += [CrashPoint(op, name, nth, when) for when in
                   (('before', 'partial') if op == 'write' else ('before', 'after'))]
    return points


@pytest.mark.parametrize('point', _crash_points(), ids=str)
def test_a_crash_at_any_step_leaves_a_resumable_work_dir(tmp_path, monkeypatch, point):
    FileOps(str(tmp_path), point).install(monkeypatch.setattr)
    with pytest.raises(SimulatedCrash):
        make_runner(tmp_path, atomic(max_keep_ckpts=1), max_epochs=2).train()
    monkeypatch.undo()
    resumed_from = assert_resumable(tmp_path)
    assert len(checkpoints(tmp_path)) <= 2  # max_keep_ckpts + the one being saved
    # It resumes from the epoch whose last_checkpoint update had finished.
    at = [i for i, step in enumerate(SAVES) if step == f'{point.op} {point.name}'][point.nth - 1]
    finished = SAVES[:at + (point.when == 'after')]
    assert resumed_from == (finished.count('replace last_checkpoint') or None)

    runner = make_runner(tmp_path, atomic(max_keep_ckpts=1), max_epochs=2, resume=True)
    train(runner)
    assert runner.epoch == 2
    assert checkpoints(tmp_path) == ['epoch_2.pth']
    assert last_checkpoint(tmp_path) == tmp_path / 'epoch_2.pth'
    assert load(tmp_path / 'epoch_2.pth')['meta']['epoch'] == 2
    assert temporary_files(tmp_path) == []


def test_the_same_crash_breaks_mmengines_checkpoint_hook(tmp_path, monkeypatch):
    """The negative control: CheckpointHook removes epoch_1.pth before it
    writes epoch_2.pth; a crash in between leaves nothing to resume from."""
    ops = FileOps(str(tmp_path), CrashPoint('remove', 'epoch_1.pth', 1, 'after'))
    ops.install(monkeypatch.setattr)
    with pytest.raises(SimulatedCrash):
        make_runner(tmp_path, CheckpointHook(interval=1, max_keep_ckpts=1)).train()
    monkeypatch.undo()
    assert checkpoints(tmp_path) == []
    with pytest.raises(AssertionError, match='which is gone'):
        assert_resumable(tmp_path)
    with pytest.raises(FileNotFoundError):
        train(make_runner(tmp_path, CheckpointHook(interval=1, max_keep_ckpts=1), resume=True))


def test_a_crash_while_saving_a_best_checkpoint_loses_it_with_checkpoint_hook(tmp_path,
                                                                            monkeypatch):
    """The negative control for best checkpoints: CheckpointHook removes the
    previous best before it writes the new one."""
    FileOps(str(tmp_path), CrashPoint('remove', 'best_score_epoch_1.pth', 1, 'after')).install(
        monkeypatch.setattr)
    hook = CheckpointHook(interval=1, max_keep_ckpts=1, save_best='score', rule='greater')
    with pytest.raises(SimulatedCrash):
        make_runner(tmp_path, hook, max_epochs=2, scores=[0.1, 0.5]).train()
    monkeypatch.undo()
    hub = load(last_checkpoint(tmp_path))['message_hub']['runtime_info']
    assert not Path(hub['best_ckpt']).exists()
    assert checkpoints(tmp_path) == ['epoch_2.pth']  # no best checkpoint at all


# ------------------------------------------------------------ backends and helpers


class RemoteLikeBackend(LocalBackend):
    """Stands for a remote store: not known to be a local disk."""

    puts: List[str] = []

    def put(self, obj: bytes, filepath: Any) -> None:
        type(self).puts.append(os.path.basename(str(filepath)))
        super().put(obj, filepath)


register_backend('polyloss_test_remote', RemoteLikeBackend, force=True)


@pytest.mark.parametrize('args', [dict(backend_args=dict(backend='polyloss_test_remote')),
                                  dict(file_client_args=dict(backend='disk'))],
                         ids=['remote backend', 'file_client_args'])
def test_other_backends_fall_back_to_checkpoint_hook_with_one_warning(tmp_path, args):
    RemoteLikeBackend.puts.clear()
    hook = atomic(max_keep_ckpts=1, **args)
    runner = make_runner(tmp_path, hook, max_epochs=3)
    warnings: List[str] = []
    real_warning = runner.logger.warning
    runner.logger.warning = lambda msg, *a, **k: (warnings.append(msg), real_warning(msg, *a, **k))
    runner.train()
    assert not hook.atomic
    assert len([w for w in warnings if 'atomicity is not guaranteed' in w]) == 1
    if 'backend_args' in args:
        assert RemoteLikeBackend.puts == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    assert checkpoints(tmp_path) == ['epoch_3.pth']


def test_local_backend_names_turn_atomic(tmp_path):
    hook = atomic(backend_args=dict(backend='local'))
    make_runner(tmp_path, hook, max_epochs=1).train()
    assert hook.atomic and hook.backend_args == dict(backend=ATOMIC_BACKEND)
    assert type(get_file_backend(backend_args=hook.backend_args)) is AtomicLocalBackend


def test_write_atomically_replaces_whole_files_with_the_usual_mode(tmp_path):
    path = tmp_path / 'sub' / 'file.bin'
    write_atomically(path, b'old')
    write_atomically(str(path), b'new content')
    assert path.read_bytes() == b'new content'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(path.parent) == ['file.bin']


def test_write_atomically_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / 'file.bin'
    path.write_bytes(b'old')
    FileOps(str(tmp_path), CrashPoint('write', '.file.bin.tmp', 1, 'partial')).install(
        monkeypatch.setattr)
    with pytest.raises(SimulatedCrash):
        write_atomically(path, b'new' * 1000)
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['file.bin']  # the temporary file is gone


def test_temporary_names():
    assert is_temporary_file('.epoch_1.pth.0123456789ab.tmp')
    for name in ('epoch_1.pth', '.epoch_1.pth.tmp', 'x.0123456789ab.tmp',
                 '.x.0123456789ab.tmp.pth'):
        assert not is_temporary_file(name), name
