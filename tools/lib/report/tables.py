"""The sweep report's statistics and tables: one row per run, and across seeds.

Figures are COCO bbox metrics in AP points (CocoMetric's fractions times
100); ``n/a`` where a run did not log one (or COCO logged -1: no objects of
that size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .runs import RunResult, SweepReportError

#: (column title, CocoMetric key suffix) of the per-run table, in table order.
METRICS: Tuple[Tuple[str, str], ...] = (
    ('mAP', 'bbox_mAP'),
    ('AP50', 'bbox_mAP_50'),
    ('AP75', 'bbox_mAP_75'),
    ('AP_s', 'bbox_mAP_s'),
    ('AP_m', 'bbox_mAP_m'),
    ('AP_l', 'bbox_mAP_l'),
    ('AR@100', 'bbox_AR@100'),
    ('AR_s', 'bbox_AR_s@1000'),
    ('AR_m', 'bbox_AR_m@1000'),
    ('AR_l', 'bbox_AR_l@1000'),
)
#: Metrics of the across-seeds table: (column title, CocoMetric key suffix).
SEED_METRICS: Tuple[Tuple[str, str], ...] = (
    ('mAP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AR@100', 'bbox_AR@100'))


def order_runs(runs: Sequence[RunResult],
               baseline: Optional[str] = None) -> List[RunResult]:
    """Baseline first, then the other runs of its setting (seeds), then by
    epsilon (unknown last), input order on ties.

    The baseline is the run named ``baseline`` (a run name or a work dir
    path) if given, else the first baseline-loss run (``is_baseline``), else
    the first run.
    """
    if not runs:
        raise SweepReportError('work_dirs: no runs given')
    if baseline is not None:
        matches = [r for r in runs if baseline == r.name
                   or Path(baseline).resolve() == r.work_dir.resolve()]
        if not matches:
            names = ', '.join(r.name for r in runs)
            raise SweepReportError(
                f'--baseline {baseline!r} matches none of the runs ({names})')
        base = matches[0]
    else:
        base = next((r for r in runs if r.is_baseline), runs[0])
    rest = [r for r in runs if r is not base]
    rest.sort(key=lambda r: (r.setting != base.setting, r.epsilon is None, r.epsilon or 0.0))
    return [base] + rest


# --------------------------------------------------------------- statistics

def group_by_setting(runs: Sequence[RunResult]) -> List[List[RunResult]]:
    """Runs of the same loss setting together, groups in order of first appearance."""
    groups: Dict[Tuple[Any, ...], List[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    return list(groups.values())


def is_seed_group(group: Sequence[RunResult]) -> bool:
    """True when the runs differ only by seed as far as the report can tell:
    every seed known and none repeated. Runs with the same seed differ in
    something else (a schedule, say) and must not be averaged."""
    seeds = [r.seed for r in group]
    return None not in seeds and len(set(seeds)) == len(seeds)


def logged(runs: Sequence[RunResult], key: str) -> List[float]:
    """The values of ``key`` in the runs that logged it (CocoMetric's -1 means
    no objects of that size: not logged)."""
    return [r.metrics[key] for r in runs if r.metrics.get(key, -1) >= 0]


def mean_sd(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


# ------------------------------------------------------------------ tables

def _fmt(value: Optional[float]) -> str:
    if value is None or value < 0:  # -1: COCO has no objects of that size
        return 'n/a'
    return f'{100 * value:.1f}'


def _fmt_delta(value: Optional[float], base: Optional[float]) -> str:
    text = _fmt(value)
    if text == 'n/a' or base is None or base < 0:
        return text
    return f'{text} ({100 * (value - base):+.1f})'


def runs_table(runs: Sequence[RunResult]) -> str:
    """Markdown table, one row per run: the baseline (``runs[0]``) first, the
    others with their change against it in AP points; only the metric columns
    some run logged."""
    base = runs[0]
    shown = [(title, key) for title, key in METRICS
             if any(key in r.metrics for r in runs)]
    header = ['run', 'loss'] + [title for title, _ in shown]
    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join(['---'] * 2 + ['---:'] * len(shown)) + '|'
    ]
    for i, run in enumerate(runs):
        name = f'{run.name} (baseline)' if i == 0 else run.name
        cells = [name, run.label_against(base)]
        for _, key in shown:
            value = run.metrics.get(key)
            cells.append(_fmt(value) if i == 0 else _fmt_delta(value, base.metrics.get(key)))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _fmt_mean_sd(values: Sequence[float], signed: bool = False) -> str:
    mean, sd = mean_sd([100 * v for v in values])
    text = f'{mean:+.1f}' if signed else f'{mean:.1f}'
    return text if sd is None else f'{text} ± {sd:.1f}'


def _delta(group: Sequence[RunResult], base: Sequence[RunResult], key: str) -> str:
    """Change against the baseline group: mean ± sd of the per-seed differences
    where seeds pair up, else the difference of the means."""
    base_by_seed = {r.seed: r.metrics[key] for r in base
                    if r.seed is not None and r.metrics.get(key, -1) >= 0}
    paired = [r.metrics[key] - base_by_seed[r.seed] for r in group
              if r.seed in base_by_seed and r.metrics.get(key, -1) >= 0]
    if paired:
        return f'{_fmt_mean_sd(paired, signed=True)} ({len(paired)} paired)'
    ours, theirs = logged(group, key), logged(base, key)
    if not ours or not theirs:
        return 'n/a'
    return f'{100 * (mean_sd(ours)[0] - mean_sd(theirs)[0]):+.1f} (means)'


def seed_table(runs: Sequence[RunResult]) -> Optional[str]:
    """Mean ± sd over the runs (seeds) of each loss setting, and the change
    against the baseline's setting; None when no setting has two runs.

    A setting whose runs repeat a seed (or lack one) is left out with a note
    saying why; without an averageable baseline there is only the note.
    """
    groups = group_by_setting(runs)
    if all(len(group) < 2 for group in groups):
        return None
    mixed = [g for g in groups if not is_seed_group(g)]
    notes = [f'Not averaged: {g[0].label_against(groups[0][0])} has runs '
             f"({', '.join(r.name for r in g)}) with repeated or unknown seeds "
             f"({', '.join('?' if r.seed is None else str(r.seed) for r in g)}), so "
             'they differ in more than the seed; compare them row by row above.'
             for g in mixed]
    base = groups[0]
    if base in mixed:
        return '\n'.join(notes)
    shown = [(title, key) for title, key in SEED_METRICS if logged(runs, key)]
    header = ['loss', 'runs (seeds)']
    for title, _ in shown:
        header += [title, f'Δ {title}']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join(['---'] * 2 + ['---:'] * (2 * len(shown))) + '|']
    for group in groups:
        if group in mixed:
            continue
        seeds = ', '.join(str(r.seed) for r in group)
        label = group[0].label_against(base[0]) + (' (baseline)' if group is base else '')
        cells = [label, f'{len(group)} ({seeds})']
        for _, key in shown:
            values = logged(group, key)
            cells.append(_fmt_mean_sd(values) if values else 'n/a')
            cells.append('' if group is base else _delta(group, base, key))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + ([''] + notes if notes else []))
