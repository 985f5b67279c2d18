"""A run folder stays mmdet's: the demo config, and the config a project tool
dumps into its work dir, train, resume, load and test with mmdet 3.3's own
tools/train.py and tools/test.py (the copies in mmdet's installed ``.mim``
folder), given only the configs' ``custom_imports`` of mmdet_polyloss, on the
pinned torch (weights-only checkpoint loading). Slow: ~2 min."""
import re
import sys
from pathlib import Path
from typing import List

import mmdet
import pytest

from train_helpers import FAST, ROOT, make_workspace, run

MMDET_TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
CONFIG = ROOT / 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'

pytestmark = pytest.mark.slow


def mmdet_tool(workspace: Path, tool: str, args: List[str], options: List[str] = ()) -> str:
    """mmdet's own tools/<tool>.py; the checkout is importable (as an installed
    mmdet_polyloss would be), nothing else of the project's is used."""
    return run([sys.executable, str(MMDET_TOOLS / f'{tool}.py'), *args,
                '--cfg-options', *FAST, *options], workspace, PYTHONPATH=str(ROOT))


def test_mmdet_tools_train_resume_load_and_test_project_run_folders(tmp_path):
    workspace = make_workspace(tmp_path)
    # The project's config, trained by mmdet's train.py.
    out = mmdet_tool(workspace, 'train', [str(CONFIG), '--work-dir', 'mm'])
    dumped = workspace / 'mm' / CONFIG.name
    assert (workspace / 'mm/epoch_1.pth').is_file() and "type='Poly1FocalLoss'" in \
        dumped.read_text()
    # Its dumped config and checkpoint: resumed for a second epoch...
    out = mmdet_tool(workspace, 'train', [str(dumped), '--work-dir', 'mm', '--resume'],
                     ['train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 4' in out and 'Epoch(train) [2][4/4]' in out
    assert (workspace / 'mm/epoch_2.pth').is_file()
    # ... and tested.
    out = mmdet_tool(workspace, 'test', [str(dumped), 'mm/epoch_2.pth', '--work-dir', 'mm'])
    assert 'coco/bbox_mAP:' in out
    # A folder written by the project's own train.py: its dumped config trains
    # with mmdet's tool from that checkpoint (load_from).
    run([sys.executable, str(ROOT / 'tools/train.py'), str(CONFIG), '--work-dir', 'ours',
         '--cfg-options', *FAST], workspace)
    ours = workspace / 'ours' / CONFIG.name
    out = mmdet_tool(workspace, 'train', [str(ours), '--work-dir', 'ours_again'],
                     ['load_from=mm/epoch_2.pth'])
    assert 'Load checkpoint from mm/epoch_2.pth' in out
    assert (workspace / 'ours_again/epoch_1.pth').is_file()


def test_mmengine_restarts_an_epoch_resumed_from_an_iteration_checkpoint(tmp_path):
    """What the README says of --resume: from a checkpoint saved by iteration
    (here iteration 6, the second of epoch 2's four), mmengine trains epoch 2
    from its first batch, so its counter reaches 8 after two more batches and
    the run ends at 10 (4 iterations per epoch)."""
    workspace = make_workspace(tmp_path)
    by_iteration = ['train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=6',
                    'default_hooks.checkpoint.max_keep_ckpts=3',
                    'default_hooks.checkpoint.by_epoch=False',  # mmdet's tool adds keys
                    'default_hooks.logger.interval=1']
    mmdet_tool(workspace, 'train', [str(CONFIG), '--work-dir', 'it'], by_iteration)
    out = mmdet_tool(workspace, 'train', [str(CONFIG), '--work-dir', 'it', '--resume',
                                          'it/iter_6.pth'], by_iteration)
    events = re.findall(r'resumed epoch: \d+, iter: \d+|Epoch\(train\) \[\d+\]\[\d+/\d+\]'
                        r'|Saving checkpoint at \d+ iterations', out)
    assert events == ['resumed epoch: 1, iter: 6', 'Epoch(train) [2][1/4]',
                      'Epoch(train) [2][2/4]', 'Saving checkpoint at 8 iterations',
                      'Epoch(train) [2][3/4]', 'Epoch(train) [2][4/4]']
