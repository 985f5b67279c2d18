"""tools/run_demo.sh argument checks (the full demo run is what CI's users run by hand)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('seeds,bad', [('0 x1', 'x1'), ('-1', '-1'), ('1.5', '1.5')])
def test_bad_seeds_stop_before_any_work(seeds, bad, tmp_path):
    env = dict(os.environ, SEEDS=seeds, WORK_DIR=str(tmp_path / 'demo'))
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'run_demo.sh')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"got '{bad}' in SEEDS='{seeds}'" in result.stderr
    assert '[run_demo]' not in result.stdout  # no set-up, data or training started
    assert not (tmp_path / 'demo').exists()
