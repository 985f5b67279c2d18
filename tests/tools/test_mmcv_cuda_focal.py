"""tools/dev/mmcv_cuda_focal.py: the stand-in ``mmcv._ext`` the GPU check
uses where mmcv has no compiled ops. The CUDA kernel itself needs a GPU (the
GPU check runs it); these tests cover everything around it on CPU."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools.dev import mmcv_cuda_focal
from tools.dev.mmcv_cuda_focal import FocalOnlyExt, ensure_ops

REPO = Path(__file__).resolve().parents[2]

HEADER = Path('mmcv', 'ops', 'csrc', 'common', 'cuda', 'sigmoid_focal_loss_cuda_kernel.cuh')


@pytest.fixture
def fake_mmcv_src(tmp_path) -> str:
    """A tree with the one file ensure_ops looks for (never compiled here)."""
    (tmp_path / HEADER).parent.mkdir(parents=True)
    (tmp_path / HEADER).write_text('// placeholder\n')
    return str(tmp_path)


@pytest.fixture
def mmcv_without_ops(monkeypatch):
    """Make this process look like one with mmcv-lite: no ``mmcv._ext``."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == 'mmcv._ext' else real_find_spec(name, *args, **kwargs)
    monkeypatch.setattr(importlib.util, 'find_spec', find_spec)
    monkeypatch.delitem(sys.modules, 'mmcv._ext', raising=False)


def test_stand_in_offers_every_op_name_but_runs_only_focal_loss(fake_mmcv_src):
    ext = FocalOnlyExt(fake_mmcv_src)
    assert hasattr(ext, 'nms') and hasattr(ext, 'roi_align_forward')
    with pytest.raises(NotImplementedError, match="mmcv op 'nms' is not available"):
        ext.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    assert not hasattr(ext, '__wrapped__')  # dunder lookups stay AttributeErrors


@pytest.mark.parametrize('op', ['sigmoid_focal_loss_forward', 'sigmoid_focal_loss_backward'])
def test_stand_in_rejects_a_class_weight_before_building(op, fake_mmcv_src, monkeypatch):
    monkeypatch.setattr(mmcv_cuda_focal, '_build', lambda src: pytest.fail('built'))
    pred = torch.zeros(3, 4)
    with pytest.raises(NotImplementedError, match=r'per-class weight \(got one of shape \(4,\)\)'):
        getattr(FocalOnlyExt(fake_mmcv_src), op)(
            pred, torch.zeros(3, dtype=torch.long), torch.ones(4), torch.zeros(3, 4),
            gamma=2.0, alpha=0.25)


def test_stand_in_calls_the_built_kernel_with_mmcvs_arguments(fake_mmcv_src, monkeypatch):
    calls = []

    class Kernels:
        def focal_forward(self, *args):
            calls.append(('forward', args))

        def focal_backward(self, *args):
            calls.append(('backward', args))
    monkeypatch.setattr(mmcv_cuda_focal, '_build', lambda src: Kernels())
    ext = FocalOnlyExt(fake_mmcv_src)
    pred, labels, out = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.zeros(3, 4)
    no_weight = pred.new_empty(0)  # what mmcv passes for weight=None
    ext.sigmoid_focal_loss_forward(pred, labels, no_weight, out, gamma=2.0, alpha=0.25)
    ext.sigmoid_focal_loss_backward(pred, labels, no_weight, out, gamma=1.5, alpha=0.5)
    assert [(name, args[3:]) for name, args in calls] == [('forward', (2.0, 0.25)),
                                                          ('backward', (1.5, 0.5))]
    assert all(args[0] is pred and args[2] is out for _, args in calls)


def test_compiled_mmcv_ops_are_left_alone(fake_mmcv_src):
    if importlib.util.find_spec('mmcv._ext') is None:
        pytest.skip('this environment has mmcv without compiled ops')
    before = sys.modules.get('mmcv._ext')
    assert ensure_ops(fake_mmcv_src) == "mmcv's compiled ops"
    assert sys.modules.get('mmcv._ext') is before


def test_without_ops_it_needs_a_source_tree(mmcv_without_ops, tmp_path):
    with pytest.raises(RuntimeError, match='--mmcv-src'):
        ensure_ops(None)
    with pytest.raises(ValueError, match=f'mmcv_src={str(tmp_path)!r} holds no'):
        ensure_ops(str(tmp_path))
    assert 'mmcv._ext' not in sys.modules


def test_without_ops_it_installs_the_stand_in_once(mmcv_without_ops, fake_mmcv_src):
    assert ensure_ops(fake_mmcv_src).endswith('(stand-in mmcv._ext)')
    stand_in = sys.modules['mmcv._ext']
    assert isinstance(stand_in, FocalOnlyExt)
    assert ensure_ops(fake_mmcv_src).endswith('(stand-in mmcv._ext)')
    assert sys.modules['mmcv._ext'] is stand_in


@pytest.mark.slow
def test_mmdet_imports_and_trains_on_the_stand_in(fake_mmcv_src):
    """What the GPU check does with mmcv-lite: mmdet's models import through the
    stand-in, and mmdet's FocalLoss (CPU path here) trains; ops outside focal
    loss fail loudly when called."""
    code = f'''
import sys
sys.modules['mmcv._ext'] = None  # hide the compiled ops: mmcv-lite
from tools.dev import mmcv_cuda_focal
print(mmcv_cuda_focal.ensure_ops({fake_mmcv_src!r}))
import torch, mmcv.ops
from mmdet.models.losses import FocalLoss
pred = torch.randn(6, 3, requires_grad=True)
FocalLoss()(pred, torch.tensor([0, 1, 2, 3, 3, 3])).backward()
print('grad', bool(pred.grad.abs().sum() > 0))
try:
    mmcv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except NotImplementedError as err:
    print('nms:', err)
'''
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'mmcv 2.1.0 kernel, JIT-built (stand-in mmcv._ext)'
    assert lines[1] == 'grad True'
    assert lines[2].startswith("nms: mmcv op 'nms' is not available")
