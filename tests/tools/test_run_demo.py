"""tools/run_demo.sh: SEEDS and EPSILONS checked before any work, and the commands
they make (DRY_RUN=1); the full demo run is what users run by hand, and
tests/tools/test_train_test.py runs the same tools end to end."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('variable,value,message', [
    ('SEEDS', '0 x1', "SEEDS must hold non-negative integers, got 'x1' in SEEDS='0 x1'"),
    ('SEEDS', '-1', "got '-1' in SEEDS='-1'"),
    ('SEEDS', '1.5', "got '1.5' in SEEDS='1.5'"),
    ('SEEDS', '0 1 01', "SEEDS lists seed 1 twice: SEEDS='0 1 01'"),
    ('EPSILONS', '-1 x', "EPSILONS must hold decimal numbers >= -1, got 'x' in EPSILONS='-1 x'"),
    ('EPSILONS', '-1.5', "got '-1.5' in EPSILONS='-1.5'"),  # negative loss: refused
    ('EPSILONS', '1e-3', "got '1e-3' in EPSILONS='1e-3'"),
    ('EPSILONS', '--1', "got '--1' in EPSILONS='--1'"),
    ('EPSILONS', '-0.5 -1 -.5', "EPSILONS lists epsilon -0.5 twice: EPSILONS='-0.5 -1 -.5'"),
    ('EPSILONS', '0 -0', "EPSILONS lists epsilon 0 twice"),
])
def test_bad_settings_stop_before_any_work(variable, value, message, tmp_path):
    env = dict(os.environ, WORK_DIR=str(tmp_path / 'demo'))
    env[variable] = value
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert '[run_demo]' not in result.stdout  # no set-up, data or training started
    assert not (tmp_path / 'demo').exists()


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
