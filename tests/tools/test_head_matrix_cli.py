"""tools/head_matrix.py: argument errors name the argument (no training run)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_unknown_head_is_named_with_the_known_ones():
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'head_matrix.py'), '--heads', 'NoSuchHead'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "argument --heads: ['NoSuchHead'] not among" in proc.stderr
    assert "'RetinaHead'" in proc.stderr
