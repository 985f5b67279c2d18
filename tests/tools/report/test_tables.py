"""The report's statistics and tables (tools.lib.sweep.report.tables), on runs
made by hand."""
from pathlib import Path
from typing import Optional

import pytest

from tools.lib.sweep.report import RunResult, SweepReportError, order_runs, runs_table
from tools.lib.sweep.report.tables import is_seed_group, mean_sd, seed_table


def run(name: str, loss_type: Optional[str] = 'Poly1FocalLoss',
        epsilon: Optional[float] = -1.0, alpha_weighted: Optional[bool] = True,
        seed: Optional[int] = None, other=(), **metrics: float) -> RunResult:
    return RunResult(name=name, work_dir=Path('/nowhere') / name, loss_type=loss_type,
                     epsilon=epsilon, alpha_weighted=alpha_weighted, seed=seed,
                     other=tuple(other), metrics={f'bbox_{k}': v for k, v in metrics.items()})


def focal(name: str, **kwargs) -> RunResult:
    return run(name, 'FocalLoss', 0.0, None, **kwargs)


@pytest.mark.parametrize('result, expected', [
    (focal('f'), True),
    (run('ce', 'CrossEntropyLoss', 0.0, None), True),
    (run('p0', epsilon=0.0), True),  # Poly-1 at epsilon 0 is focal loss
    (run('p0ce', 'Poly1CrossEntropyLoss', 0.0, None), True),
    (run('p', epsilon=-1.0), False),
    (run('n', 'PolyNFocalLoss', None, None), False),
    (run('unknown', None, None, None), False),
])
def test_is_baseline(result, expected):
    assert result.is_baseline is expected


@pytest.mark.parametrize('result, label', [
    (focal('f'), 'focal'),
    (run('ce', 'CrossEntropyLoss', 0.0, None), 'cross-entropy'),
    (run('p', epsilon=-0.5), 'poly-1 eps=-0.5'),
    (run('p', epsilon=2.0, alpha_weighted=False), 'poly-1 eps=+2, no alpha_t'),
    (run('pce', 'Poly1CrossEntropyLoss', -1.0, None), 'poly-1 CE eps=-1'),
    (run('n', 'PolyNFocalLoss', None, None, other=[('epsilons', '(1.0, -1.0)')]),
     'poly-N eps=(1.0, -1.0)'),
    (run('mine', 'MyLoss', None, None), 'MyLoss'),
    (run('none', None, None, None), '?'),
])
def test_loss_labels(result, label):
    assert result.loss_label == label


def test_order_baseline_first_then_its_seeds_then_by_epsilon():
    runs = [run('p+1', epsilon=1.0), run('p?', 'MyLoss', None, None),
            run('p-1', epsilon=-1.0), run('ce', 'CrossEntropyLoss', 0.0, None),
            run('p-1b', epsilon=-1.0), run('ce2', 'CrossEntropyLoss', 0.0, None, seed=1),
            run('ce3', 'CrossEntropyLoss', 0.0, None)]
    assert [r.name for r in order_runs(runs)] == [
        'ce', 'ce2', 'ce3', 'p-1', 'p-1b', 'p+1', 'p?']
    # No baseline loss at all: the first run.
    assert order_runs(runs[:3])[0].name == 'p+1'
    assert order_runs(runs, baseline='p-1b')[0].name == 'p-1b'
    with pytest.raises(SweepReportError, match="--baseline 'x' matches none"):
        order_runs(runs, baseline='x')
    with pytest.raises(SweepReportError, match='no runs'):
        order_runs([])


def test_runs_table_cells():
    rows = runs_table([
        focal('base', mAP=0.365, mAP_50=0.5, mAP_l=-1.0),
        run('better', mAP=0.372, mAP_50=0.49, mAP_l=0.2),
        run('partial', epsilon=-0.5, mAP=0.30),
    ]).splitlines()
    assert rows[:2] == ['| run | loss | mAP | AP50 | AP_l |', '|---|---|---:|---:|---:|']
    assert rows[2] == '| base (baseline) | focal | 36.5 | 50.0 | n/a |'
    # The baseline's AP_l is -1 (no large objects): nothing to compare against.
    assert rows[3] == '| better | poly-1 eps=-1 | 37.2 (+0.7) | 49.0 (-1.0) | 20.0 |'
    assert rows[4] == '| partial | poly-1 eps=-0.5 | 30.0 (-6.5) | n/a | n/a |'


def test_runs_table_says_what_else_differs_from_the_baseline():
    base = focal('base', other=[('gamma', '2.0'), ('schedule', '12')], mAP=0.3)
    longer = focal('long', other=[('gamma', '2.0'), ('schedule', '24')], mAP=0.3)
    assert runs_table([base, longer]).splitlines()[3].split('|')[2] == ' focal (schedule=24) '


def test_mean_and_sample_sd():
    mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and sd == pytest.approx((5 / 3) ** 0.5)
    assert mean_sd([0.5]) == (0.5, None)


def test_seed_groups_need_distinct_known_seeds():
    assert is_seed_group([focal('a', seed=0), focal('b', seed=1)])
    assert not is_seed_group([focal('a', seed=0), focal('b', seed=0)])
    assert not is_seed_group([focal('a', seed=0), focal('b')])


def test_seed_table():
    runs = [focal('f0', seed=0, mAP=0.30), focal('f1', seed=1, mAP=0.34),
            run('p0', seed=0, mAP=0.33), run('p1', seed=1, mAP=0.35),
            run('q', epsilon=1.0, seed=7, mAP=0.20),
            run('r', epsilon=0.5, mAP=0.25), run('r2', epsilon=0.5, mAP=0.26)]
    table = seed_table(runs)
    lines = table.splitlines()
    assert lines[:2] == ['| loss | runs (seeds) | mAP | Δ mAP |', '|---|---|---:|---:|']
    assert lines[2] == '| focal (baseline) | 2 (0, 1) | 32.0 ± 2.8 |  |'
    assert lines[3] == '| poly-1 eps=-1 | 2 (0, 1) | 34.0 ± 1.4 | +2.0 ± 1.4 (2 paired) |'
    assert lines[4] == '| poly-1 eps=+1 | 1 (7) | 20.0 | -12.0 (means) |'
    assert lines[5] == ''
    assert lines[6].startswith('Not averaged: poly-1 eps=+0.5 has runs (r, r2) with '
                               'repeated or unknown seeds (?, ?)')
    assert seed_table([focal('f0', seed=0, mAP=0.3), run('p', mAP=0.3)]) is None
