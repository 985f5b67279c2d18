"""tools/head_matrix.py: argument errors name the argument, and the table it
prints (no training run)."""
import subprocess
import sys
from pathlib import Path

from tools.lib.head_matrix import HeadCase, HeadResult, _error_summary, head_table

REPO = Path(__file__).resolve().parents[2]


def test_unknown_head_is_named_with_the_known_ones():
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'head_matrix.py'), '--heads', 'NoSuchHead'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "argument --heads: ['NoSuchHead'] not among" in proc.stderr
    assert "'RetinaHead'" in proc.stderr


def test_an_out_md_that_cannot_be_written_is_refused_before_any_head_trains(tmp_path):
    """It was a traceback (IsADirectoryError) after the whole matrix had trained."""
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'head_matrix.py'), '--out-md', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr == (f"head_matrix.py: error: --out-md '{tmp_path}' cannot be written: "
                           f"'{tmp_path}' is a directory\n")


def test_head_table_rows(tmp_path):
    root = tmp_path / 'configs'
    inside = HeadCase('RetinaHead', root / 'retinanet' / 'r.py',
                      [('bbox_head', 'loss_cls'), ('aux_head', 0, 'loss_cls')])
    outside = HeadCase('OtherHead', tmp_path / 'other.py', [('bbox_head', 'loss_cls')])
    table = head_table([HeadResult(inside, 'ok', 'FocalLoss 1 | Poly1FocalLoss 2'),
                        HeadResult(outside, 'skipped')], root)
    assert table.splitlines() == [
        '| head | config (mmdet) | FocalLoss slots swapped | result | detail |',
        '| --- | --- | --- | --- | --- |',
        '| RetinaHead | retinanet/r.py | bbox_head.loss_cls, aux_head.0.loss_cls | ok | '
        'FocalLoss 1 / Poly1FocalLoss 2 |',  # a '|' would split the cell
        f'| OtherHead | {tmp_path / "other.py"} | bbox_head.loss_cls | skipped |  |',
    ]


def test_error_summary_is_one_short_line():
    assert _error_summary(ValueError('first\nsecond')) == 'ValueError: first second'
    long = _error_summary(RuntimeError('x' * 500))
    assert len(long) == 160 and long.startswith('RuntimeError: xxx') and long.endswith('...')
