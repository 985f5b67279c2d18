"""Resuming from a mid-epoch checkpoint continues at the next iteration with
the same batches and random state (tools/lib/resume.py): the resumed run's
loss curve is the uninterrupted run's."""
import json
import random
import shutil
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

from mmdet_polyloss.engine.checkpoint import mmengine_safe_globals
from tools.lib import resume

from train_helpers import ROOT, make_workspace, run

CONFIG = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'

# 16 images in batches of 4: 4 iterations an epoch, 3 epochs; a checkpoint
# every 2 iterations (iter_6.pth is in the middle of epoch 2, iter_4.pth at
# the end of epoch 1); every iteration's loss logged as is (no smoothing).
OPTIONS = [
    'train_cfg.max_epochs=3', 'train_cfg.val_interval=3', 'param_scheduler.0.end=2',
    '+default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=2',
    'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
    'log_processor.window_size=1', 'randomness.seed=0', 'model.test_cfg.nms_pre=100',
    'model.test_cfg.max_per_img=20', 'model.test_cfg.score_thr=0.0',
] + [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
     for key in ('batch_size=4', 'num_workers=0', 'persistent_workers=False')]


# ------------------------------------------------------------ no training
def test_only_mmengines_epoch_loop_is_replaced():
    from mmengine.config import Config
    cfg = Config(dict(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=2)))
    assert resume.enable_mid_epoch_resume(cfg) is True
    assert cfg.train_cfg.type == 'MidEpochResumeTrainLoop'
    for kept in ('mmengine.EpochBasedTrainLoop', 'IterBasedTrainLoop'):
        cfg = Config(dict(train_cfg=dict(type=kept)))
        assert resume.enable_mid_epoch_resume(cfg) is False and cfg.train_cfg.type == kept


def test_skip_batches_drops_the_first_batches_only():
    from torch.utils.data import BatchSampler, SequentialSampler
    inner = BatchSampler(SequentialSampler(range(10)), batch_size=3, drop_last=False)
    skipped = resume.SkipBatches(inner, 2)
    assert list(skipped) == [[6, 7, 8], [9]] and len(skipped) == 2
    assert skipped.sampler is inner.sampler  # DistSamplerSeedHook's set_epoch reaches it
    assert list(resume.SkipBatches(inner, 4)) == [] and len(resume.SkipBatches(inner, 5)) == 0


def test_random_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save({'rng_state': resume.random_state()}, tmp_path / 'state.pth')
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    # Plain lists and tensors: weights-only loading needs no allow-list for them.
    state = torch.load(tmp_path / 'state.pth', weights_only=True)['rng_state']
    resume.set_random_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


# ------------------------------------------------------------ training runs
def losses(work_dir: Path) -> List[Tuple[int, int, float]]:
    """(epoch, iteration, loss) of each logged training iteration."""
    (scalars,) = work_dir.glob('*/vis_data/scalars.json')
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [(row['epoch'], row['iter'], row['loss']) for row in rows if 'loss' in row]


def train(workspace: Path, work_dir: str, *args: str) -> str:
    return run([sys.executable, str(ROOT / 'tools/train.py'), str(CONFIG), '--work-dir',
                work_dir, *args, '--cfg-options', *OPTIONS], workspace)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> Path:
    """12 iterations without a break; its checkpoints are where the others resume."""
    workspace = make_workspace(tmp_path_factory.mktemp('resume'))
    train(workspace, 'work/whole')
    return workspace


def resumed(workspace: Path, name: str, checkpoint: str, *options: str) -> Path:
    """Resume a copy of the uninterrupted run's ``checkpoint`` in work/<name>."""
    work_dir = workspace / 'work' / name
    work_dir.mkdir(parents=True)
    shutil.copy(workspace / 'work/whole' / checkpoint, work_dir / checkpoint)
    out = train(workspace, str(work_dir), '--resume', str(work_dir / checkpoint),
                *(['--cfg-options', *options] if options else []))
    (work_dir / 'train.log').write_text(out)
    return work_dir


def same_curve(resumed_run, whole_run) -> None:
    assert [row[:2] for row in resumed_run] == [row[:2] for row in whole_run]
    assert [row[2] for row in resumed_run] == pytest.approx([row[2] for row in whole_run],
                                                            rel=1e-5)


@pytest.mark.slow
def test_mid_epoch_resume_continues_the_uninterrupted_run(uninterrupted):
    whole = losses(uninterrupted / 'work/whole')
    assert [row[:2] for row in whole] == [(1 + i // 4, i + 1) for i in range(12)]
    work_dir = resumed(uninterrupted, 'mid_epoch', 'iter_6.pth')
    out = (work_dir / 'train.log').read_text()
    assert 'resumed epoch: 1, iter: 6' in out
    assert 'Epoch(train) [2][3/4]' in out and 'Epoch(train) [2][1/4]' not in out
    same_curve(losses(work_dir), whole[6:])  # iterations 7 to 12, the same losses
    assert (work_dir / 'iter_12.pth').is_file() and not (work_dir / 'iter_14.pth').exists()


@pytest.mark.slow
def test_resume_at_an_epochs_end_runs_the_next_epoch(uninterrupted):
    """A by-iteration checkpoint at the end of epoch 1 (mmengine's meta: epoch
    0, iteration 4): the resumed run goes on with epoch 2."""
    work_dir = resumed(uninterrupted, 'epoch_end', 'iter_4.pth')
    same_curve(losses(work_dir), losses(uninterrupted / 'work/whole')[4:])


@pytest.mark.slow
def test_mmengines_loop_restarts_the_epoch(uninterrupted):
    """What the loop fixes, kept for comparison: mmengine 0.10.7's own loop
    runs the whole of epoch 2 again after iteration 6 (8 iterations, not 6),
    and its losses leave the uninterrupted run's from the first step."""
    work_dir = resumed(uninterrupted, 'mmengine_loop', 'iter_6.pth',
                       'train_cfg.type=mmengine.EpochBasedTrainLoop')
    rows = losses(work_dir)
    assert [row[:2] for row in rows] == [(2, 7), (2, 8), (2, 9), (2, 10), (3, 11), (3, 12),
                                         (3, 13), (3, 14)]
    whole = losses(uninterrupted / 'work/whole')
    assert rows[0][2] != pytest.approx(whole[6][2], rel=1e-3)


@pytest.mark.slow
def test_checkpoints_load_weights_only_with_the_random_state(uninterrupted):
    """The state the loop adds to checkpoints loads under the tools' allow-list."""
    with mmengine_safe_globals():
        checkpoint = torch.load(uninterrupted / 'work/whole/iter_6.pth', weights_only=True)
    assert set(checkpoint['rng_state']) >= {'python', 'numpy', 'torch'}
    assert checkpoint['meta']['iter'] == 6 and checkpoint['meta']['epoch'] == 1
