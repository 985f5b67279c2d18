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
from tools.dev.mmcv_cuda_focal import StandInExt, ensure_ops

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


def test_stand_in_offers_every_op_name_but_runs_only_focal_loss_and_nms(fake_mmcv_src):
    ext = StandInExt(fake_mmcv_src)
    assert hasattr(ext, 'roi_align_forward') and hasattr(ext, 'softnms')
    with pytest.raises(NotImplementedError, match="mmcv op 'softnms' is not available"):
        ext.softnms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    with pytest.raises(NotImplementedError, match='offset 0 only, got 1'):
        ext.nms(torch.zeros(1, 4), torch.zeros(1), 0.5, offset=1)
    assert not hasattr(ext, '__wrapped__')  # dunder lookups stay AttributeErrors


def test_stand_in_nms_keeps_what_mmcvs_compiled_nms_keeps():
    """Against mmcv's own compiled op (where it is installed, as in CI): random boxes in
    clusters, so that many overlap, at mmdet's offset 0."""
    if importlib.util.find_spec('mmcv._ext') is None:
        pytest.skip('this environment has mmcv without compiled ops')
    from mmcv.utils import ext_loader
    compiled = ext_loader.load_ext('_ext', ['nms'])
    generator = torch.Generator().manual_seed(0)
    for threshold in (0.3, 0.5, 0.7):
        centres = torch.rand(40, 2, generator=generator).repeat_interleave(25, 0) * 200
        sizes = 10 + 40 * torch.rand(1000, 2, generator=generator)
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
        scores = torch.rand(1000, generator=generator)
        kept = StandInExt.nms(boxes, scores, threshold)
        assert 40 <= len(kept) < 1000
        assert torch.equal(kept, compiled.nms(boxes, scores, iou_threshold=threshold, offset=0))


@pytest.mark.parametrize('op', ['sigmoid_focal_loss_forward', 'sigmoid_focal_loss_backward'])
def test_stand_in_rejects_a_class_weight_before_building(op, fake_mmcv_src, monkeypatch):
    monkeypatch.setattr(mmcv_cuda_focal, '_build', lambda src: pytest.fail('built'))
    pred = torch.zeros(3, 4)
    with pytest.raises(NotImplementedError, match=r'per-class weight \(got one of shape \(4,\)\)'):
        getattr(StandInExt(fake_mmcv_src), op)(
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
    ext = StandInExt(fake_mmcv_src)
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
    assert isinstance(stand_in, StandInExt)
    assert ensure_ops(fake_mmcv_src).endswith('(stand-in mmcv._ext)')
    assert sys.modules['mmcv._ext'] is stand_in


@pytest.mark.slow
def test_mmdet_imports_and_trains_on_the_stand_in(fake_mmcv_src):
    """What the GPU check does with mmcv-lite: mmdet's models import through the
    stand-in, mmdet's FocalLoss (CPU path here) trains, mmcv's batched_nms (mmdet's
    test-time NMS) runs; other ops fail loudly when called."""
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
boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
dets, keep = mmcv.ops.batched_nms(boxes, torch.tensor([.9, .8, .7]), torch.tensor([0, 0, 0]),
                                  dict(type='nms', iou_threshold=0.5))
print('kept', keep.tolist())
try:
    mmcv.ops.soft_nms(boxes, torch.tensor([.9, .8, .7]), 0.5)
except NotImplementedError as err:
    print('softnms:', err)
'''
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'mmcv 2.1.0 kernel, JIT-built (stand-in mmcv._ext)'
    assert lines[1] == 'grad True'
    assert lines[2] == 'kept [0, 2]'
    assert lines[3].startswith("softnms: mmcv op 'softnms' is not available")


def test_the_gpu_site_hook_gives_every_process_the_stand_in(fake_mmcv_src):
    """tools/dev/gpu_site/sitecustomize.py, in an interpreter whose mmcv has no compiled ops
    (the floor environment's mmcv, as on the GPU machine): with POLYLOSS_MMCV_SRC set, a
    process that imports mmcv.ops gets the stand-in; without it, mmcv.ops cannot load."""
    python = REPO / '.venv-floor' / 'bin' / 'python'
    if not python.is_file():
        pytest.skip('no .venv-floor (POLYLOSS_FLOOR=0): no mmcv without compiled ops here')
    env = dict(os.environ, PYTHONPATH=f'{REPO / "tools" / "dev" / "gpu_site"}:{REPO}')
    code = 'import sys, mmcv.ops; print(type(sys.modules["mmcv._ext"]).__name__)'
    hooked = subprocess.run([str(python), '-c', code], capture_output=True, text=True,
                            env=dict(env, POLYLOSS_MMCV_SRC=fake_mmcv_src), timeout=300)
    assert (hooked.returncode, hooked.stdout) == (0, 'StandInExt\n'), hooked.stderr
    env.pop('POLYLOSS_MMCV_SRC', None)
    plain = subprocess.run([str(python), '-c', code], capture_output=True, text=True, env=env,
                           timeout=300)
    assert plain.returncode != 0 and '_ext' in plain.stderr


@pytest.mark.slow
def test_a_detector_trains_and_tests_through_the_tools_on_the_stand_in(fake_mmcv_src, tmp_path):
    """The GPU check's trees step on CPU: tools/train.py and tools/test.py, in processes whose
    mmcv has no compiled ops (a sitecustomize hides them, as an image's own would run after
    the hook), get the stand-in from the GPU site hook, build mmengine's optimizer (which
    asks importlib about mmcv._ext) and test with the stand-in's NMS."""
    from train_helpers import FAST, make_workspace, run
    workspace = make_workspace(tmp_path)
    hide = tmp_path / 'mmcv_lite_site'
    hide.mkdir()
    (hide / 'sitecustomize.py').write_text(
        'import atexit, sys\nsys.modules["mmcv._ext"] = None  # mmcv-lite\natexit.register('
        'lambda: print("mmcv._ext at exit:", type(sys.modules.get("mmcv._ext")).__name__))\n')
    env = dict(PYTHONPATH=f'{REPO / "tools" / "dev" / "gpu_site"}:{hide}:{REPO}',
               POLYLOSS_MMCV_SRC=fake_mmcv_src)
    config = str(REPO / 'configs' / 'demo' / 'retinanet_tiny_fpn_focal_shapes.py')
    work_dir = str(tmp_path / 'run')
    trained = run([sys.executable, str(REPO / 'tools' / 'train.py'), config, '--work-dir',
                   work_dir, '--cfg-options', *FAST], workspace, **env)
    assert 'mmcv._ext at exit: StandInExt' in trained
    checkpoint = Path(work_dir, 'last_checkpoint').read_text().strip()
    tested = run([sys.executable, str(REPO / 'tools' / 'test.py'), config, checkpoint,
                  '--work-dir', work_dir, '--cfg-options', *FAST], workspace, **env)
    assert 'coco/bbox_mAP:' in tested and 'mmcv._ext at exit: StandInExt' in tested


def test_the_gpu_site_hook_runs_the_sitecustomize_it_shadows(tmp_path):
    """An image's own sitecustomize, later on sys.path, still runs (once); one earlier on
    the path is the one Python imports, and the hook is not run at all then."""
    image = tmp_path / 'image_site'
    image.mkdir()
    (image / 'sitecustomize.py').write_text(
        'import os\nos.environ["IMAGE_SITE"] = os.environ.get("IMAGE_SITE", "") + "ran"\n')
    hook = REPO / 'tools' / 'dev' / 'gpu_site'
    code = 'import os, sitecustomize; print(os.environ.get("IMAGE_SITE"), sitecustomize.__file__)'
    env = {k: v for k, v in os.environ.items() if k != 'POLYLOSS_MMCV_SRC'}
    for path, expected in ((f'{hook}:{image}:{REPO}', f'ran {hook / "sitecustomize.py"}\n'),
                           (f'{hook}:{REPO}', f'None {hook / "sitecustomize.py"}\n'),
                           (f'{image}:{hook}:{REPO}', f'ran {image / "sitecustomize.py"}\n')):
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                env=dict(env, PYTHONPATH=path), timeout=120)
        assert (result.returncode, result.stdout) == (0, expected), result.stderr
    # A failing one is reported, as Python reports its own sitecustomize's failure.
    (image / 'sitecustomize.py').write_text('raise OSError("image site broken")\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=f'{hook}:{image}:{REPO}'), timeout=120)
    assert (result.returncode, result.stdout) == (0, f'None {hook / "sitecustomize.py"}\n')
    assert "OSError('image site broken')" in result.stderr


def test_the_gpu_check_names_its_parts(tmp_path):
    """tools/dev/gpu_check.sh PART: loss, trees or all; anything else is one line, exit 2,
    before it makes its result folder, installs or runs anything."""
    result = subprocess.run(['bash', str(REPO / 'tools' / 'dev' / 'gpu_check.sh'), 'tree'],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, OUT=str(tmp_path / 'out')))
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == "gpu_check.sh: expected loss, trees or all, got 'tree'\n"
    assert not (tmp_path / 'out').exists()


def test_the_gpu_checks_loss_part_stops_where_torch_sees_no_cuda(tmp_path):
    """Every CUDA test takes 'device' from the devices torch sees: without CUDA they ran on
    the CPU only and the step said exit status 0. Now the part stops at once, failing."""
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the check would run')
    env = dict(os.environ, OUT=str(tmp_path / 'out'), GPU_CARRY=str(tmp_path / 'none'),
               PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}')
    result = subprocess.run(['bash', str(REPO / 'tools' / 'dev' / 'gpu_check.sh'), 'loss'],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ('no CUDA device torch can use: the CUDA tests would run on the CPU only and pass'
            in result.stdout)
    assert result.stdout.rstrip().endswith(
        '(the loss part stopped: nothing in it means anything without CUDA)')
    assert '== CUDA tests' not in result.stdout and '== GPU benchmark' not in result.stdout
