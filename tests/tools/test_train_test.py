"""End to end: tools/train.py, --resume, tools/test.py and a 2-process
torchrun, each in a subprocess on a tiny generated dataset (slow: ~2 min)."""
import json
import pickle
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from train_helpers import FAST, ROOT, TIMEOUT, make_workspace, run

CONFIG = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A cwd with data/polyloss_shapes, where the demo configs look."""
    return make_workspace(tmp_path_factory.mktemp('tools'))


def train(workspace: Path, work_dir: str, args: List[str] = (),
          options: List[str] = ()) -> str:
    """tools/train.py with ``args``; ``options`` override FAST's."""
    return run([
        sys.executable, str(ROOT / 'tools/train.py'), str(CONFIG),
        '--work-dir', work_dir, *args, '--cfg-options', *FAST, *options
    ], workspace)


def coco_metrics(path: Path) -> List[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if 'coco/bbox_mAP' in line]


@pytest.fixture(scope='module')
def trained(workspace) -> Path:
    """One epoch (4 iterations) of the Poly-1 demo config."""
    train(workspace, 'work/poly')
    return workspace / 'work' / 'poly'


def test_train_writes_checkpoint_and_metrics(trained):
    assert (trained / 'epoch_1.pth').is_file()
    assert (trained / 'last_checkpoint').read_text().strip().endswith(
        'epoch_1.pth')
    scalars = next(trained.glob('*/vis_data/scalars.json'))
    evals = coco_metrics(scalars)
    assert len(evals) == 1 and 0.0 <= evals[0]['coco/bbox_mAP'] <= 1.0
    assert 'coco/bbox_AR@100' in evals[0]
    # The dumped config is the Poly-1 one (the report reads epsilon there).
    dumped = (trained / CONFIG.name).read_text()
    assert "type='Poly1FocalLoss'" in dumped and 'epsilon=-1.0' in dumped


def test_resume_continues_from_the_checkpoint(workspace, trained):
    # Into another work dir: resuming in place would let the config's
    # max_keep_ckpts=1 delete epoch_1.pth, which the other tests read.
    out = train(workspace, 'work/poly_resumed',
                ['--resume', str(trained / 'epoch_1.pth')],
                ['train_cfg.max_epochs=2'])
    assert 'Weights only load failed' not in out
    assert re.search(r'resumed epoch: 1, iter: 4', out), out[-3000:]
    assert 'Epoch(train) [2][4/4]' in out
    assert (workspace / 'work/poly_resumed/epoch_2.pth').is_file()
    assert (trained / 'epoch_1.pth').is_file()


def test_bare_resume_continues_from_the_work_dirs_last_checkpoint(workspace, trained):
    """``--resume`` without a path: mmengine's auto-resume from last_checkpoint."""
    work_dir = workspace / 'work/poly_auto'
    work_dir.mkdir(parents=True)
    shutil.copy(trained / 'epoch_1.pth', work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    out = train(workspace, str(work_dir), ['--resume'], ['train_cfg.max_epochs=2'])
    assert re.search(r'resumed epoch: 1, iter: 4', out), out[-3000:]
    assert (work_dir / 'epoch_2.pth').is_file()


def test_resume_with_another_loss_is_refused(workspace, trained):
    """The Poly-1 run's real checkpoint (mmengine saved its config in meta['cfg'])
    resumed with the focal config: one line naming both losses, before any work."""
    focal = ROOT / 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
    checkpoint = trained / 'epoch_1.pth'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'), str(focal), '--work-dir', 'work/mixed',
         '--resume', str(checkpoint), '--cfg-options', *FAST], cwd=workspace,
        capture_output=True, text=True, timeout=TIMEOUT)
    assert (proc.returncode, proc.stderr.splitlines()[-1]) == (2, (
        f'train.py: error: --resume: the run in {checkpoint} was trained with another loss '
        "(model.bbox_head.loss_cls.type: 'Poly1FocalLoss' in its checkpoint, 'FocalLoss' in "
        'this config); resuming would continue it with this one, and its results would be '
        'labelled by it: resume with the config it was trained with, or train this one in '
        'another --work-dir')), proc.stderr[-3000:]
    assert not (workspace / 'work/mixed').exists()


def test_resume_from_missing_checkpoint_names_it(workspace):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/train.py'), str(CONFIG),
         '--resume', 'no/such.pth'], cwd=workspace, capture_output=True,
        text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr == "train.py: error: --resume: no such checkpoint: 'no/such.pth'\n"


def test_test_tool_evaluates_and_dumps(workspace, trained):
    ckpt = trained / 'epoch_1.pth'
    out = run([
        sys.executable, str(ROOT / 'tools/test.py'), str(CONFIG), str(ckpt),
        '--work-dir', 'work/poly_test', '--out', 'work/preds.pkl',
        '--cfg-options', *FAST
    ], workspace)
    assert 'Weights only load failed' not in out
    assert f'Load checkpoint from {ckpt}' in out
    (metrics_file, ) = (workspace / 'work/poly_test').glob('*/2*.json')
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert 'coco/bbox_AR@100' in metrics
    with open(workspace / 'work/preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 8  # one entry per val image
    assert {'img_id', 'pred_instances'} <= set(preds[0])
    # The report reads the same work dir.
    table = run([
        sys.executable, str(ROOT / 'tools/sweep_report.py'),
        str(workspace / 'work/poly_test')
    ], workspace)
    assert '| poly_test (baseline) | poly-1 eps=-1 |' in table


def test_test_tool_with_flip_tta(workspace, trained):
    """--tta on a config without tta settings (mmdet's default: flip and merge)."""
    out = run([
        sys.executable, str(ROOT / 'tools/test.py'), str(CONFIG),
        str(trained / 'epoch_1.pth'), '--tta', '--work-dir', 'work/poly_tta',
        '--cfg-options', *FAST
    ], workspace)
    assert '--tta: the config has no tta_pipeline' in out
    (metrics_file, ) = (workspace / 'work/poly_tta').glob('*/2*.json')
    assert 0.0 <= json.loads(metrics_file.read_text())['coco/bbox_mAP'] <= 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(workspace):
    """The multi-GPU path (torchrun, DDP, sharded data) on gloo / CPU, for
    dist_train.sh and then dist_test.sh on its checkpoint."""
    out = run([
        'bash', str(ROOT / 'tools/dist_train.sh'), str(CONFIG), '2',
        '--work-dir', 'work/dist', '--cfg-options', *FAST
    ], workspace, PYTHON=sys.executable, PORT=str(_free_port()),
        OMP_NUM_THREADS='1')
    assert 'Distributed training: True' in out
    # 16 images, 2 processes x 4 per batch: 2 iterations per epoch.
    assert 'Epoch(train) [1][2/2]' in out
    assert (workspace / 'work/dist/epoch_1.pth').is_file()
    scalars = next((workspace / 'work/dist').glob('*/vis_data/scalars.json'))
    assert len(coco_metrics(scalars)) == 1  # evaluated across both ranks

    out = run([
        'bash', str(ROOT / 'tools/dist_test.sh'), str(CONFIG), 'work/dist/epoch_1.pth', '2',
        '--work-dir', 'work/dist_test', '--out', 'work/dist_test/preds.pkl',
        '--cfg-options', *FAST
    ], workspace, PYTHON=sys.executable, PORT=str(_free_port()),
        OMP_NUM_THREADS='1')
    assert 'Distributed training: True' in out
    with open(workspace / 'work/dist_test/preds.pkl', 'rb') as f:
        predictions = pickle.load(f)
    # Both ranks' shards gathered: one prediction per val image, none twice.
    val = json.loads((workspace / 'data/polyloss_shapes/annotations/instances_val.json')
                     .read_text())
    assert sorted(p['img_id'] for p in predictions) == sorted(i['id'] for i in val['images'])
    assert re.search(r'coco/bbox_mAP: \d', out)
