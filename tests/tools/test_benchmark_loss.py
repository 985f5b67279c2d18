"""tools/benchmark/benchmark_loss.py: end to end on CPU with tiny sizes in a
subprocess (from another directory, without PYTHONPATH), its argument errors,
and the agreement check of tools/benchmark/cases.py against wrong
implementations."""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from tools.benchmark import benchmark_loss, cases, measure

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'benchmark' / 'benchmark_loss.py'
CPU_METHODS = ('mmdet FocalLoss', 'Poly1FocalLoss (fused)',
               'Poly1FocalLoss (fused, value checks off)', 'Poly-1 naive autograd')


def _run(args: List[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_out_that_cannot_be_written_fails_before_the_run(tmp_path):
    """One line, exit status 2, before any method is loaded or timed."""
    (tmp_path / 'file').write_text('')
    out = tmp_path / 'file' / 'report.md'  # a folder that is a file
    result = _run(['--device', 'cpu', '--images', '1', '--out', str(out)])
    assert result.returncode == 2 and not result.stdout, result.stdout
    assert result.stderr.splitlines() == [
        f"benchmark_loss.py: error: --out '{out}' cannot be written: [Errno 17] File exists: "
        f"'{tmp_path / 'file'}'"]


def test_tiny_cpu_run_agrees_and_reports_every_method(tmp_path):
    """Run from another directory without PYTHONPATH: the script puts the
    repository root on sys.path itself (and its memory worker, a second run of
    it, too)."""
    out = tmp_path / 'report.md'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--device', 'cpu', '--images', '1',
         '--anchors-per-image', '2000', '--classes', '8', '--repeats', '2',
         '--dtype', 'float32', 'bfloat16', '--out', str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'no memory column' not in result.stdout
    agreement = [line for line in result.stdout.splitlines() if line.startswith('[OK]')]
    # (mmdet, fused at 0, fused at -1, unchecked at -1, naive) x (label, element
    # weights) x 2 dtypes
    assert len(agreement) == 20, result.stdout
    for dtype in ('float32', 'bfloat16'):
        for weights in ('label weights', 'element weights'):
            where = f'{dtype}, 1 image(s), {weights}: '
            assert where + 'mmdet FocalLoss vs float64 (epsilon=0)' in result.stdout
            assert where + 'Poly1FocalLoss (fused) at epsilon=-1 vs float64' in result.stdout
            assert (where + 'Poly1FocalLoss (fused, value checks off) at epsilon=-1 vs '
                    'float64') in result.stdout
    assert 'MISMATCH' not in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith('| ')]
    for method in CPU_METHODS:
        timed = [r for r in rows if r.startswith(f'| {method} |')]
        assert len(timed) == 2, (method, rows)  # one row per dtype, with numbers
        assert all(float(r.split('|')[3]) > 0 for r in timed), timed

    report = out.read_text()
    assert report.startswith('# Loss benchmark')
    assert result.stdout.rstrip().endswith(report.rstrip())
    assert report.count('\n- [OK] ') == 20 and 'MISMATCH' not in report
    titles = [line for line in report.splitlines() if line.startswith('## ')]
    assert [t.split(',')[0] for t in titles if 'image(s)' in t] == ['## float32', '## bfloat16']
    baselines = [line for line in report.splitlines() if line.startswith('Baseline:')]
    assert baselines[0] == 'Baseline: mmdet FocalLoss', baselines
    # Single fp32 elements at |logit| up to 40 against float64: every CPU method
    # (mmdet's torch path included) is accurate to a few ulp in loss and gradient.
    probe = report.split('## Accuracy at large logits')[1].split('\n## ')[0].splitlines()
    table = [[cell.strip() for cell in line.strip('|').split('|')] for line in probe
             if line.startswith('| ')]
    assert table[0][3:] == list(CPU_METHODS), table[0]
    assert {(row[0], abs(float(row[1]))) for row in table[1:]} >= {('background', 40.0),
                                                                   ('positive', 40.0)}
    for row in table[1:]:
        assert len(row) == 3 + len(CPU_METHODS), row
        errors = [float(e) for cell in row[3:] for e in cell.split(' / ')]
        assert all(err < 1e-5 for err in errors), row


def test_bad_arguments_give_a_clear_error():
    result = _run(['--device', 'cpu', '--anchors-per-image', '0'])
    assert result.returncode == 2
    assert '--anchors-per-image' in result.stderr and "'0'" in result.stderr
    result = _run(['--device', 'tpu'])
    assert result.returncode == 2 and '--device' in result.stderr and 'tpu' in result.stderr


def test_a_seed_torch_cannot_take_and_a_case_too_large_to_allocate_are_one_line():
    """Both were tracebacks from inside torch (Overflow when unpacking long long;
    DefaultCPUAllocator: can't allocate memory)."""
    result = _run(['--device', 'cpu', '--seed', str(2**64)])
    assert result.returncode == 2 and result.stderr.splitlines() == [
        'benchmark_loss.py: error: argument --seed: expected an integer from 0 to '
        f"9223372036854775807, got '{2**64}'"]
    with pytest.raises(cases.UserError, match=r'^1 image\(s\) x --anchors-per-image '
                       r'10000000000000 x --classes 80: 3.2e\+06 GB of float32 logits cannot be '
                       r'allocated \(.*allocate'):
        cases.make_case(1, 10**13, 80, 1, 0, torch.float32, 'cpu')


def test_cuda_requested_without_cuda_is_an_error():
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    result = _run(['--device', 'cuda'])
    assert result.returncode == 2
    assert '--device' in result.stderr and 'cuda' in result.stderr


def _zero_small_gradients(fraction: float):
    """Poly-1 at epsilon -1 whose gradient elements below ``fraction`` of the
    largest are dropped (a kernel that loses small values)."""
    correct = cases.poly1(-1.0)

    def loss(pred, labels, weight, avg_factor):
        routed = pred * 1.0
        routed.register_hook(
            lambda g: torch.where(g.abs() < fraction * g.abs().max(), torch.zeros_like(g), g))
        return correct(routed, labels, weight, avg_factor)
    return loss


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_agreement_check_fails_wrong_implementations(dtype):
    """The float64 check passes the real fused loss and fails a loss 1 % off
    (alpha 0.2525, epsilon -0.99) and a gradient zeroed below 1e-5 of its maximum,
    in every dtype (the per-dtype tolerances of the old check let bf16 pass
    3 to 5 % errors)."""
    case = cases.make_case(1, 3000, 8, 20, 0, dtype, 'cpu')
    reference = cases.float64_reference(case, -1.0)
    tolerances = (cases.LOSS_RTOL, cases.GRAD_RTOL, cases.GRAD_ATOL_FRACTION[dtype])

    def check(fn):
        return cases.compare('check', cases.Method('m', fn), reference, case, tolerances)

    assert check(cases.poly1(-1.0)).ok
    assert not check(cases.poly1(-0.99)).ok
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cases, 'ALPHA', 0.2525)
        off_alpha = cases.poly1(-1.0)
    assert not check(off_alpha).ok
    assert not check(_zero_small_gradients(1e-5)).ok


def test_a_failed_training_step_fails_the_run(monkeypatch, capsys):
    """The GPU check relies on the exit status: a --train-step that crashed is
    a failure, not a 'Skipped' line in a report that exits 0."""
    def crash(args):
        raise RuntimeError('train step crashed')
    monkeypatch.setattr(measure, 'train_step', crash)
    status = benchmark_loss.main(['--device', 'cpu', '--images', '1',
                                  '--anchors-per-image', '300', '--classes', '4',
                                  '--positives-per-image', '3', '--repeats', '1',
                                  '--train-step'])
    assert status == 1
    assert '--train-step: RuntimeError: train step crashed' in capsys.readouterr().err
