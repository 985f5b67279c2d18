"""mmdet3d's own tools/train.py and tools/test.py (shipped in its wheel) train PointPillars
with Poly-1 focal on the synthetic KITTI set for a few iterations, resume, and test."""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from mmdet3d_required import import_mmdet3d

mmdet3d = import_mmdet3d()

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(mmdet3d.__file__).parent / '.mim' / 'tools'
CONFIG = (ROOT / 'configs/pointpillars' /
          'pointpillars_hv_secfpn_poly1-eps-1_8xb6-160e_kitti-3d-3class.py')
#: A small run: one scene a step, no worker processes, the set once per epoch.
SMALL = ['train_dataloader.batch_size=1', 'train_dataloader.dataset.times=1',
         *(f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                            'test_dataloader')
           for key in ('num_workers=0', 'persistent_workers=False')),
         'default_hooks.logger.interval=1']
LOSS_LINE = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[(\d+)/\d+\].*loss_cls: ([0-9.]+)')


def run_tool(cwd: Path, tool: str, *args: str) -> str:
    # mmdet3d's KITTI evaluation computes rotated IoUs with numba CUDA kernels: on a
    # machine without a GPU, numba's CUDA simulator runs them on the CPU.
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM='1', PYTHONWARNINGS='ignore')
    result = subprocess.run([sys.executable, str(TOOLS / tool), str(CONFIG), *args],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def losses(log: str) -> List[tuple]:
    return [(int(e), int(i), float(v)) for e, i, v in LOSS_LINE.findall(log)]


@pytest.mark.slow
def test_mmdet3d_tools_train_resume_and_test_poly1_pointpillars(tmp_path: Path):
    subprocess.run([sys.executable, str(ROOT / 'tools/make_kitti3d_data.py'), 'data/kitti',
                    '--num-train', '2', '--num-val', '1'], cwd=tmp_path, check=True, timeout=300)
    work = tmp_path / 'work'
    first = run_tool(tmp_path, 'train.py', '--work-dir', str(work), '--cfg-options', *SMALL,
                     'train_cfg.max_epochs=1', 'val_cfg=None', 'val_dataloader=None',
                     'val_evaluator=None')
    assert 'PolyFocalAnchor3DHead' in first and "type='mmdet.Poly1FocalLoss'" in first
    assert [step[:2] for step in losses(first)] == [(1, 1), (1, 2)]
    assert (work / 'epoch_1.pth').is_file()

    second = run_tool(tmp_path, 'train.py', '--work-dir', str(work), '--resume',
                      '--cfg-options', *SMALL, 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1, iter: 2' in second
    assert [step[:2] for step in losses(second)] == [(2, 1), (2, 2)]  # epoch 1 not redone
    assert all(0 < value < 100 for *_, value in losses(first) + losses(second))
    assert (work / 'epoch_2.pth').is_file()
    assert 'Kitti metric/pred_instances_3d/KITTI/Car_3D_AP40_moderate_strict' in second  # val

    tested = run_tool(tmp_path, 'test.py', str(work / 'epoch_2.pth'), '--work-dir', str(work),
                      '--cfg-options', *SMALL)
    assert re.search(r'Epoch\(test\) \[1/1\].*Car_3D_AP40_moderate_strict: [0-9.]+', tested)
