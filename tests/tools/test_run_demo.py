"""tools/run_demo.sh: SEEDS and EPSILONS checked before any work (in Python:
tools/lib/run_settings.py), the commands they make (DRY_RUN=1), and a damaged
finished run (stand-in tools); the full demo run is what users run by hand,
and tests/tools/test_train_test.py runs the same tools end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.lib.errors import UserError
from tools.lib.run_settings import parse_epsilons, parse_seeds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('variable,value,message', [
    ('SEEDS', '0 x1', "SEEDS must hold non-negative integers, got 'x1' in SEEDS='0 x1'"),
    ('SEEDS', '-1', "got '-1' in SEEDS='-1'"),
    ('SEEDS', '1.5', "got '1.5' in SEEDS='1.5'"),
    ('SEEDS', '0 1 01', "SEEDS lists seed 1 twice: SEEDS='0 1 01'"),
    # bash arithmetic made these 1 and a negative seed; a seed is below 2^32.
    ('SEEDS', '18446744073709551617', "SEEDS must hold seeds below 2^32 = 4294967296, got "
     "'18446744073709551617' in SEEDS='18446744073709551617'"),
    ('SEEDS', '9223372036854775808', "got '9223372036854775808'"),
    ('SEEDS', '0 4294967296', "SEEDS must hold seeds below 2^32 = 4294967296, got '4294967296'"),
    ('SEEDS', '9' * 5000, 'SEEDS must hold seeds below 2^32'),  # no int() of 5000 digits
    ('SEEDS', '\u0661', "SEEDS must hold non-negative integers, got '\u0661'"),  # not ASCII
    ('SEEDS', '*', "got '*' in SEEDS='*'"),  # no file names from a glob
    ('SEEDS', ' ', "SEEDS lists no seed: SEEDS=' '"),
    ('EPSILONS', '-1 x', "EPSILONS must hold decimal numbers >= -1, got 'x' in EPSILONS='-1 x'"),
    ('EPSILONS', '-1.5', "got '-1.5' in EPSILONS='-1.5'"),  # negative loss: refused
    ('EPSILONS', '1e-3', "got '1e-3' in EPSILONS='1e-3'"),
    ('EPSILONS', '--1', "got '--1' in EPSILONS='--1'"),
    ('EPSILONS', '-0.5 -1 -.5', "EPSILONS lists epsilon -0.5 twice: EPSILONS='-0.5 -1 -.5'"),
    ('EPSILONS', '0 -0', "EPSILONS lists epsilon 0 twice"),
    ('EPSILONS', '9' * 400, "is too large for a float"),
])
def test_bad_settings_stop_before_any_work(variable, value, message, tmp_path):
    env = dict(os.environ, WORK_DIR=str(tmp_path / 'demo'))
    env[variable] = value
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith('run_demo: error: ') and result.stderr.count('\n') == 1
    assert '[run_demo]' not in result.stdout  # no set-up, data or training started
    assert not (tmp_path / 'demo').exists()


def test_settings_as_the_shell_loop_normalised_them():
    assert parse_seeds('00 7 4294967295') == [0, 7, 4294967295]
    assert parse_seeds('1\t2\n3') == [1, 2, 3]
    assert parse_epsilons('-1 -.5 0.50 1. 0.1234567890123456789 -0') == [
        '-1', '-0.5', '+0.5', '+1', '+0.123456789012346', '0']
    assert parse_epsilons('') == []  # focal loss only
    with pytest.raises(UserError, match="^MY_SEEDS must hold non-negative integers, got 'a'"):
        parse_seeds('a', 'MY_SEEDS')  # for other launchers (the sweep)


def test_dry_run_shows_each_seed_and_epsilon_reaching_train_and_test(tmp_path):
    """Each (seed, epsilon) gets its own work dir, and its seed and epsilon
    reach tools/train.py and tools/test.py (the report reads them from the
    config test.py dumps); epsilon -1 is the config file unchanged."""
    work = tmp_path / 'demo'
    env = dict(os.environ, WORK_DIR=str(work), SEEDS='0 1', EPSILONS='-1 -.5 0.25',
               DRY_RUN='1')
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [line.split(': ', 1)[1] for line in result.stdout.splitlines()
                if line.startswith('DRY_RUN: ')]
    focal = 'configs/demo/retinanet_tiny_fpn_focal_shapes.py'
    poly = 'configs/demo/retinanet_tiny_fpn_poly1-eps-1_shapes.py'
    eps = 'model.bbox_head.loss_cls.epsilon='
    runs = [(focal, 'retinanet_tiny_fpn_focal_shapes', ''),
            (poly, 'retinanet_tiny_fpn_poly1-eps-1_shapes', ''),
            (poly, 'retinanet_tiny_fpn_poly1-eps-0.5_shapes', f' {eps}-0.5'),
            (poly, 'retinanet_tiny_fpn_poly1-eps+0.25_shapes', f' {eps}+0.25')]
    expected_train, expected_test = [], []
    for seed in (0, 1):
        for config, name, loss in runs:
            run = work / (name + ('' if seed == 0 else f'_seed{seed}'))
            options = f'--cfg-options randomness.seed={seed}{loss}'
            expected_train.append(f'tools/train.py {config} --work-dir {run} {options}')
            expected_test.append(
                f'tools/test.py {config} {run}/LAST_CHECKPOINT --work-dir {run} {options}')
    assert commands[:8] == expected_train
    assert commands[8:16] == expected_test
    assert commands[16].startswith('tools/sweep_report.py ') and len(commands) == 17
    assert not work.exists()  # nothing was run


# ---------------------------------------------------------------- damaged runs
STUB_TRAIN = """import pathlib, sys
work = pathlib.Path(sys.argv[sys.argv.index('--work-dir') + 1])
work.mkdir(parents=True, exist_ok=True)
(work / 'epoch_1.pth').write_bytes(b'PK stand-in checkpoint')
(work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
"""
STUB_TEST = """import pathlib, sys
ckpt = sys.argv[2]
if not pathlib.Path(ckpt).read_bytes().startswith(b'PK'):
    print(f'test.py: error: checkpoint {ckpt} is not a file torch.save wrote', file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture
def stand_in_checkout(tmp_path) -> Path:
    """A copy of run_demo.sh in a checkout whose tools are fast stand-ins (no
    set-up, data or training) and whose venv is this Python."""
    root = tmp_path / 'checkout'
    (root / 'tools').mkdir(parents=True)
    (root / 'tools/run_demo.sh').write_text((ROOT / 'tools/run_demo.sh').read_text())
    (root / 'tools/__init__.py').write_text('')
    (root / 'tools/lib').symlink_to(ROOT / 'tools/lib')
    (root / 'tools/setup_env.sh').write_text('exit 0\n')
    (root / 'tools/make_demo_data.py').write_text(
        "import pathlib; d = pathlib.Path('data/polyloss_shapes'); "
        "d.mkdir(parents=True, exist_ok=True); (d / 'meta.json').write_text('{}')\n")
    (root / 'tools/train.py').write_text(STUB_TRAIN)
    (root / 'tools/test.py').write_text(STUB_TEST)
    (root / 'tools/sweep_report.py').write_text('')
    (root / 'configs/demo/_base_').mkdir(parents=True)
    for name in ('retinanet_tiny_fpn_focal_shapes.py', 'retinanet_tiny_fpn_poly1-eps-1_shapes.py',
                 '_base_/base.py'):
        (root / 'configs/demo' / name).write_text('')
    (root / 'mmdet_polyloss').mkdir()
    (root / 'mmdet_polyloss/__init__.py').write_text('')
    (root / 'venv/bin').mkdir(parents=True)
    (root / 'venv/bin/python').symlink_to(sys.executable)
    return root


def run_demo(root: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(root / 'tools/run_demo.sh')], cwd=root, text=True,
                          capture_output=True, timeout=60,
                          env=dict(os.environ, POLYLOSS_VENV=str(root / 'venv'), **env))


def test_a_damaged_finished_run_says_that_force_retrains_it(stand_in_checkout):
    root = stand_in_checkout
    first = run_demo(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'finished run found' in run_demo(root).stdout  # reused as it stands
    run = 'work_dirs/demo/retinanet_tiny_fpn_focal_shapes'  # WORK_DIR's default, relative
    focal = root / run
    (focal / 'epoch_1.pth').unlink()
    result = run_demo(root)
    assert result.returncode == 2
    assert result.stderr == (f'run_demo: error: the finished run in {run} is damaged '
                             f'({run}/epoch_1.pth is missing or empty); FORCE=1 retrains it\n')
    (focal / 'last_checkpoint').unlink()
    assert '(no last_checkpoint file); FORCE=1 retrains it' in run_demo(root).stderr
    assert run_demo(root, FORCE='1').returncode == 0
    assert (focal / 'epoch_1.pth').is_file()


def test_a_checkpoint_test_py_refuses_says_that_force_retrains_it(stand_in_checkout):
    root = stand_in_checkout
    assert run_demo(root).returncode == 0
    run = 'work_dirs/demo/retinanet_tiny_fpn_focal_shapes'
    (root / run / 'epoch_1.pth').write_bytes(b'garbage')  # and newer than .demo-tested
    result = run_demo(root)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'test.py: error: checkpoint {run}/epoch_1.pth is not a file torch.save wrote',
        f'run_demo: error: tools/test.py refused the run in {run} (above); FORCE=1 retrains it']
