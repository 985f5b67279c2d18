"""tools/benchmark/benchmark_loss.py end to end, on CPU with tiny sizes, in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'benchmark' / 'benchmark_loss.py'
CPU_METHODS = ('mmdet FocalLoss', 'Poly1FocalLoss (fused)', 'Poly-1 naive autograd')


def _run(args: List[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tiny_cpu_run_agrees_and_reports_every_method(tmp_path):
    out = tmp_path / 'report.md'
    result = _run(['--device', 'cpu', '--images', '1', '--anchors-per-image', '2000',
                   '--classes', '8', '--repeats', '2', '--dtype', 'float32', 'bfloat16',
                   '--out', str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    agreement = [line for line in result.stdout.splitlines() if line.startswith('[OK]')]
    assert len(agreement) == 4, result.stdout  # 2 checks x 2 dtypes
    assert any('at epsilon=0 vs mmdet FocalLoss' in line for line in agreement)
    assert any('vs Poly-1 naive autograd at epsilon=-1' in line for line in agreement)
    assert 'MISMATCH' not in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith('| ')]
    for method in CPU_METHODS:
        timed = [r for r in rows if r.startswith(f'| {method} |')]
        assert len(timed) == 2, (method, rows)  # one row per dtype, with numbers
        assert all(float(r.split('|')[3]) > 0 for r in timed), timed

    assert out.read_text().startswith('# Loss benchmark')
    data = json.loads(out.with_suffix('.json').read_text())
    assert [t['dtype'] for t in data['tables']] == ['float32', 'bfloat16']
    assert all(c['ok'] for t in data['tables'] for c in t['checks'])
    # Single fp32 elements at |logit| up to 40 against float64: every CPU method
    # (mmdet's torch path included) is accurate to a few ulp in loss and gradient.
    probe = data['accuracy_probe']
    assert {(r['target'], abs(r['logit'])) for r in probe} >= {('background', 40.0),
                                                               ('positive', 40.0)}
    for row in probe:
        assert set(row['errors']) == set(CPU_METHODS), row
        assert all(max(err) < 1e-5 for err in row['errors'].values()), row
    assert '## Accuracy at large logits' in result.stdout
    assert data['tables'][0]['baseline'] == 'mmdet FocalLoss'


def test_bad_arguments_give_a_clear_error():
    result = _run(['--device', 'cpu', '--anchors-per-image', '0'])
    assert result.returncode == 2
    assert '--anchors-per-image' in result.stderr and "'0'" in result.stderr
    result = _run(['--device', 'tpu'])
    assert result.returncode == 2 and '--device' in result.stderr and 'tpu' in result.stderr


def test_cuda_requested_without_cuda_is_an_error():
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    result = _run(['--device', 'cuda'])
    assert result.returncode == 2
    assert '--device' in result.stderr and 'cuda' in result.stderr
