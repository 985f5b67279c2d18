"""tools/run_demo.sh checks SEEDS and EPSILONS before any work (the full demo run is
what users run by hand; tests/test_tools.py runs the same tools end to end)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('variable,value,message', [
    ('SEEDS', '0 x1', "SEEDS must hold non-negative integers, got 'x1' in SEEDS='0 x1'"),
    ('SEEDS', '-1', "got '-1' in SEEDS='-1'"),
    ('SEEDS', '1.5', "got '1.5' in SEEDS='1.5'"),
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
