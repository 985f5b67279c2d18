"""The report's plot (tools.lib.sweep.report.plot), on runs made by hand."""
from pathlib import Path
from typing import List, Optional

import pytest
from PIL import Image

from tools.lib.sweep.report import RunResult, plot_sweep


def run(name: str, loss_type: str = 'Poly1FocalLoss', epsilon: float = -1.0,
        alpha_weighted: Optional[bool] = True, seed: Optional[int] = None,
        **metrics: float) -> RunResult:
    return RunResult(name=name, work_dir=Path('/nowhere') / name, loss_type=loss_type,
                     epsilon=epsilon, alpha_weighted=alpha_weighted, seed=seed,
                     metrics={f'bbox_{k}': v for k, v in metrics.items()})


@pytest.fixture
def drawn(monkeypatch) -> List[tuple]:
    """What plot_sweep draws: (kind, label, x, y, yerr) per errorbar / axhline / text."""
    from matplotlib.axes import Axes
    calls: List[tuple] = []
    errorbar, axhline, text = Axes.errorbar, Axes.axhline, Axes.text

    def record_errorbar(ax, x, y, yerr=None, **kwargs):
        calls.append(('errorbar', kwargs.get('label'), list(x),
                      [round(v, 2) for v in y], [round(v, 2) for v in yerr]))
        return errorbar(ax, x, y, yerr, **kwargs)

    def record_axhline(ax, y=0, *args, **kwargs):
        calls.append(('hline', kwargs.get('label'), [], [round(y, 2)], []))
        return axhline(ax, y, *args, **kwargs)

    def record_text(ax, x, y, s, *args, **kwargs):
        calls.append(('text', s, [], [], []))
        return text(ax, x, y, s, *args, **kwargs)
    monkeypatch.setattr(Axes, 'errorbar', record_errorbar)
    monkeypatch.setattr(Axes, 'axhline', record_axhline)
    monkeypatch.setattr(Axes, 'text', record_text)
    return calls


def test_seeds_are_one_point_with_a_bar_other_repeats_are_points(tmp_path, drawn):
    runs = [run('f0', 'FocalLoss', 0.0, None, seed=0, mAP=0.30),
            run('f1', 'FocalLoss', 0.0, None, seed=1, mAP=0.32),
            run('p0', seed=0, mAP=0.33), run('p1', seed=1, mAP=0.37),
            # Same setting, same seed: not replicates, so two points.
            run('q0', epsilon=1.0, seed=0, mAP=0.20), run('q0b', epsilon=1.0, seed=0, mAP=0.24),
            run('n', epsilon=-1.0, alpha_weighted=False, mAP=0.25)]
    png = tmp_path / 'sub' / 'plot.png'
    plot_sweep(runs, str(png))
    line, crosses, base, ar_text = drawn
    assert line == ('errorbar', 'Poly-1 (focal at eps=0)', [-1.0, 0.0, 1.0, 1.0],
                    [35.0, 31.0, 20.0, 24.0], [2.83, 1.41, 0.0, 0.0])
    assert crosses == ('errorbar', 'Poly-1, no alpha_t on eps term', [-1.0], [25.0], [0.0])
    assert base == ('hline', 'baseline (focal)', [], [31.0], [])  # the mean of its seeds
    assert ar_text == ('text', 'AR@100 not logged', [], [], [])
    with Image.open(png) as im:
        assert im.format == 'PNG'


def test_a_baseline_with_repeated_seeds_is_drawn_as_its_own_value(tmp_path, drawn):
    runs = [run('f0', 'FocalLoss', 0.0, None, seed=0, mAP=0.30, **{'AR@100': 0.5}),
            run('f0b', 'FocalLoss', 0.0, None, seed=0, mAP=0.40, **{'AR@100': 0.6})]
    plot_sweep(runs, str(tmp_path / 'plot.png'))
    hlines = [call for call in drawn if call[0] == 'hline']
    assert [h[3] for h in hlines] == [[30.0], [50.0]]  # AP, AR@100 of runs[0] only
