"""The report's tables, in AP points (CocoMetric's fractions times 100; KITTI's APs as
they were logged): one row per run, and mean ± sd across seeds; ``n/a`` where a run
logged no value (or COCO's -1)."""
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .runs import RunResult, SweepReportError

#: (column title, metric key) of the per-run table, in table order: CocoMetric's, then
#: mmdet3d KittiMetric's AP40 at moderate difficulty (overall 3D and BEV, 3D per class).
METRICS: Tuple[Tuple[str, str], ...] = (
    ('mAP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AP75', 'bbox_mAP_75'),
    ('AP_s', 'bbox_mAP_s'), ('AP_m', 'bbox_mAP_m'), ('AP_l', 'bbox_mAP_l'),
    ('AR@100', 'bbox_AR@100'), ('AR_s', 'bbox_AR_s@1000'), ('AR_m', 'bbox_AR_m@1000'),
    ('AR_l', 'bbox_AR_l@1000'),
    ('3D AP40 mod', 'kitti/Overall_3D_AP40_moderate'),
    ('BEV AP40 mod', 'kitti/Overall_BEV_AP40_moderate'),
    ('Car 3D', 'kitti/Car_3D_AP40_moderate_strict'),
    ('Ped 3D', 'kitti/Pedestrian_3D_AP40_moderate_strict'),
    ('Cyc 3D', 'kitti/Cyclist_3D_AP40_moderate_strict'))
SEED_METRICS = tuple(m for m in METRICS if m[0] in ('mAP', 'AP50', 'AR@100', '3D AP40 mod',
                                                   'BEV AP40 mod'))  # across seeds


def order_runs(runs: Sequence[RunResult], baseline: Optional[str] = None) -> List[RunResult]:
    """The baseline (named, else the first ``is_baseline`` run, else the first), the other
    runs of its setting, then the rest by epsilon (unknown last)."""
    if not runs:
        raise SweepReportError('work_dirs: no runs given')
    base = next((r for r in runs if (r.is_baseline if baseline is None else r.matches(baseline))),
                runs[0] if baseline is None else None)
    if base is None:
        raise SweepReportError(f'--baseline {baseline!r} matches none of the runs '
                               f"({', '.join(r.name for r in runs)})")
    rest = sorted((r for r in runs if r is not base),  # stable: input order on ties
                  key=lambda r: (r.setting != base.setting, r.epsilon is None, r.epsilon or 0.0))
    return [base] + rest


def group_by_setting(runs: Sequence[RunResult]) -> List[List[RunResult]]:
    """Runs of the same loss setting together, groups in order of first appearance."""
    groups: Dict[Tuple[Any, ...], List[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    return list(groups.values())


def is_seed_group(group: Sequence[RunResult]) -> bool:
    """Whether the runs differ only by seed: every seed known and none repeated."""
    seeds = [r.seed for r in group]
    return None not in seeds and len(set(seeds)) == len(seeds)


def logged(runs: Sequence[RunResult], key: str) -> List[float]:
    """The values of ``key`` in the runs that logged it (COCO's -1: not logged)."""
    return [r.metrics[key] for r in runs if r.metrics.get(key, -1) >= 0]


def mean_sd(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _markdown(header: List[str], rows: List[List[str]]) -> List[str]:
    """A markdown table's lines: two text columns, then right-aligned numbers."""
    rule = '|' + '|'.join(['---'] * 2 + ['---:'] * (len(header) - 2)) + '|'
    lines = ['| ' + ' | '.join(cells) + ' |' for cells in [header, *rows]]
    return [lines[0], rule] + lines[1:]


def _mean_sd_points(values: Sequence[float], signed: bool = False) -> str:
    mean, sd = mean_sd([100 * v for v in values])
    text = f'{mean:+.1f}' if signed else f'{mean:.1f}'
    return text if sd is None else f'{text} ± {sd:.1f}'


def runs_table(runs: Sequence[RunResult]) -> str:
    """One row per run, with the change against ``runs[0]``; the columns some run logged."""
    shown = [(title, key) for title, key in METRICS if any(key in r.metrics for r in runs)]
    rows = []
    for i, run in enumerate(runs):
        cells = [f'{run.name} (baseline)' if i == 0 else run.name, run.label_against(runs[0])]
        for _, key in shown:
            value, base = run.metrics.get(key), runs[0].metrics.get(key) if i else None
            cells.append('n/a' if value is None or value < 0 else f'{100 * value:.1f}' + (
                '' if base is None or base < 0 else f' ({100 * (value - base):+.1f})'))
        rows.append(cells)
    return '\n'.join(_markdown(['run', 'loss'] + [title for title, _ in shown], rows))


def _delta(group: Sequence[RunResult], base: Sequence[RunResult], key: str) -> str:
    """Change against ``base``: mean ± sd of per-seed differences, else of the means."""
    base_by_seed = {r.seed: r.metrics[key] for r in base
                    if r.seed is not None and r.metrics.get(key, -1) >= 0}
    paired = [r.metrics[key] - base_by_seed[r.seed] for r in group
              if r.seed in base_by_seed and r.metrics.get(key, -1) >= 0]
    if paired:
        return f'{_mean_sd_points(paired, signed=True)} ({len(paired)} paired)'
    ours, theirs = logged(group, key), logged(base, key)
    if not ours or not theirs:
        return 'n/a'
    return f'{100 * (mean_sd(ours)[0] - mean_sd(theirs)[0]):+.1f} (means)'


def seed_table(runs: Sequence[RunResult]) -> Optional[str]:
    """Mean ± sd over each setting's seeds and the change against the baseline's (None when
    no setting has two runs); runs repeating a seed get a note instead (the baseline's:
    only notes)."""
    groups = group_by_setting(runs)
    if all(len(group) < 2 for group in groups):
        return None
    base = groups[0]
    mixed = [g for g in groups if not is_seed_group(g)]
    notes = [f'Not averaged: {g[0].label_against(base[0])} has runs '
             f"({', '.join(r.name for r in g)}) with repeated or unknown seeds "
             f"({', '.join('?' if r.seed is None else str(r.seed) for r in g)}), so "
             'they differ in more than the seed; compare them row by row above.'
             for g in mixed]
    if base in mixed:
        return '\n'.join(notes)
    shown = [(title, key) for title, key in SEED_METRICS if logged(runs, key)]
    rows = []
    for group in (g for g in groups if g not in mixed):
        label = group[0].label_against(base[0]) + (' (baseline)' if group is base else '')
        cells = [label, f"{len(group)} ({', '.join(str(r.seed) for r in group)})"]
        for _, key in shown:
            values = logged(group, key)
            cells += [_mean_sd_points(values) if values else 'n/a',
                      '' if group is base else _delta(group, base, key)]
        rows.append(cells)
    header = ['loss', 'runs (seeds)'] + [t for title, _ in shown for t in (title, f'Δ {title}')]
    return '\n'.join(_markdown(header, rows) + ([''] + notes if notes else []))
