"""SIGKILL a real tools/train.py while it saves a checkpoint, then --resume.

The demo config (AtomicCheckpointHook, max_keep_ckpts=1) on 4 images in one
batch, 2 epochs of one iteration, a checkpoint after each. tests/crash_points.py
kills the run at a named step of the second save; each killed work dir must
name a complete checkpoint in last_checkpoint, and ``--resume`` must finish
the run. The same kill with mmengine's CheckpointHook loses the run. Runs two
scenarios at a time (slow: ~1 min on 2 cores).
"""
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import pytest
import torch

import mmdet_polyloss  # noqa: F401  (weights-only loading of mmengine checkpoints)
from mmdet_polyloss.engine.hooks import is_temporary_file

from crash_points import CrashPoint
from train_helpers import FAST, ROOT, TIMEOUT, make_workspace

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')]

CONFIG = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
OPTIONS = [*FAST, 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
           'default_hooks.checkpoint.max_keep_ckpts=1']
MMENGINE_HOOK = ['default_hooks.checkpoint.type=CheckpointHook']


class Scenario(NamedTuple):
    point: CrashPoint
    resumes_from: int  # the epoch last_checkpoint names after the kill
    options: List[str] = []


SCENARIOS = {
    'atomic/mid-write': Scenario(CrashPoint('write', '.epoch_2.pth.tmp', 1, 'partial'), 1),
    'atomic/before-rename': Scenario(CrashPoint('replace', 'epoch_2.pth', 1, 'before'), 1),
    'atomic/before-last_checkpoint': Scenario(CrashPoint('replace', 'epoch_2.pth', 1, 'after'), 1),
    'atomic/before-removal': Scenario(CrashPoint('replace', 'last_checkpoint', 2, 'after'), 2),
    # CheckpointHook removes epoch_1.pth, then writes epoch_2.pth: killed between.
    'mmengine/after-removal': Scenario(CrashPoint('remove', 'epoch_1.pth', 1, 'after'), 1,
                                       MMENGINE_HOOK),
}
ATOMIC = [name for name in SCENARIOS if name.startswith('atomic/')]


def train(workspace: Path, work_dir: Path, scenario: Scenario, *args: str,
          crash: bool = False) -> subprocess.CompletedProcess:
    command = [str(ROOT / 'tools/train.py'), str(CONFIG), '--work-dir', str(work_dir), *args,
               '--cfg-options', *OPTIONS, *scenario.options]
    env = dict(os.environ, OMP_NUM_THREADS='1')  # two runs share 2 cores
    if crash:
        command[:0] = [str(ROOT / 'tests/crash_points.py')]
        env.update(POLYLOSS_CRASH=str(scenario.point), POLYLOSS_CRASH_ROOT=str(work_dir))
    return subprocess.run([sys.executable, *command], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def load(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location='cpu')


def snapshot(workspace: Path, work_dir: Path) -> Dict[str, Any]:
    """What a resume would find in ``work_dir``."""
    files = {p.name: p.stat().st_size for p in work_dir.glob('*') if p.is_file()}
    last = work_dir / 'last_checkpoint'
    named: Optional[Path] = workspace / last.read_text().strip() if last.exists() else None
    epochs = {}
    for name in files:
        if name.endswith('.pth'):
            try:
                epochs[name] = load(work_dir / name)['meta']['epoch']
            except Exception as err:  # a partial file: recorded, asserted on below
                epochs[name] = f'unloadable: {err!r}'
    return dict(files=files, epochs=epochs, last=named and named.name,
                last_exists=bool(named and named.is_file()),
                temporary={n: size for n, size in files.items() if is_temporary_file(n)})


def play(workspace: Path, name: str) -> Dict[str, Any]:
    scenario = SCENARIOS[name]
    work_dir = workspace / 'work' / name.replace('/', '_')
    killed = train(workspace, work_dir, scenario, crash=True)
    after_kill = snapshot(workspace, work_dir)
    resumed = train(workspace, work_dir, scenario, '--resume')
    return dict(killed=killed, after_kill=after_kill, resumed=resumed,
                final=snapshot(workspace, work_dir))


@pytest.fixture(scope='module')
def results(tmp_path_factory) -> Dict[str, Dict[str, Any]]:
    workspace = make_workspace(tmp_path_factory.mktemp('crash'), num_train=4, num_val=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(play, workspace, name) for name in SCENARIOS}
        return {name: future.result() for name, future in futures.items()}


def _killed(result: Dict[str, Any], point: CrashPoint) -> None:
    proc = result['killed']
    assert proc.returncode == -signal.SIGKILL, (proc.stdout + proc.stderr)[-3000:]
    assert 'Saving checkpoint at 2 epochs' in proc.stdout, f'not killed at {point}'


@pytest.mark.parametrize('name', ATOMIC)
def test_kill_leaves_last_checkpoint_naming_a_complete_checkpoint(results, name):
    scenario, result = SCENARIOS[name], results[name]
    _killed(result, scenario.point)
    state = result['after_kill']
    expected = f'epoch_{scenario.resumes_from}.pth'
    assert state['last'] == expected and state['last_exists']
    # Every checkpoint file is complete (here: epoch_1 and, after its rename, epoch_2).
    assert all(isinstance(epoch, int) for epoch in state['epochs'].values()), state['epochs']
    assert state['epochs'][expected] == scenario.resumes_from
    if scenario.point.when == 'partial':  # the kill hit the write: half a temporary file
        (size, ) = state['temporary'].values()
        assert 0 < size < state['files']['epoch_1.pth']


@pytest.mark.parametrize('name', ATOMIC)
def test_resume_after_the_kill_finishes_the_run(results, name):
    scenario, result = SCENARIOS[name], results[name]
    proc = result['resumed']
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert re.search(rf'resumed epoch: {scenario.resumes_from}, iter: {scenario.resumes_from}',
                     out), out[-3000:]
    final = result['final']
    assert final['epochs'] == {'epoch_2.pth': 2}  # max_keep_ckpts=1: one, complete
    assert final['last'] == 'epoch_2.pth' and final['last_exists']
    assert final['temporary'] == {}  # the killed run's leftover is gone


def test_the_same_kill_loses_the_run_with_mmengines_checkpoint_hook(results):
    """So the tests above would have caught the bug."""
    result = results['mmengine/after-removal']
    _killed(result, SCENARIOS['mmengine/after-removal'].point)
    state = result['after_kill']
    assert state['epochs'] == {}  # epoch_1.pth removed, epoch_2.pth never written
    assert state['last'] == 'epoch_1.pth' and not state['last_exists']
    proc = result['resumed']
    assert proc.returncode == 2  # train.py refuses the resume before training, in one line
    assert re.search(r'train\.py: error: no such checkpoint: \S*epoch_1\.pth; --resume cannot '
                     'continue from it', proc.stderr), proc.stderr[-2000:]
