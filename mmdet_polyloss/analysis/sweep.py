"""Compare the COCO results of an epsilon sweep: markdown table and plot.

Each run is an mmengine work dir (``tools/train.py`` / ``tools/test.py``).
Metrics come from the JSON files mmengine writes there:

- ``<work_dir>/<timestamp>/vis_data/scalars.json`` (training; one line per
  logged step, validation lines carry ``coco/bbox_mAP`` ...), and
- ``<work_dir>/<timestamp>/<timestamp>.json`` (a ``tools/test.py`` run).

The newest evaluation wins (timestamps sort; within a file, the last line).
The loss (type, epsilon, alpha-weighted or not) is read from the config
mmengine dumps into the work dir. CocoMetric logs recall (``AR@100`` ...) only
when its ``metric_items`` ask for it; the demo configs do, mmdet's COCO
configs do not (see docs/reproduction.md for the --cfg-options line). Missing
figures show as ``n/a``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: (column title, CocoMetric key suffix) in table order.
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
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


class SweepReportError(ValueError):
    """Bad input to the sweep report; the message names the culprit."""


@dataclass
class RunResult:
    """One work dir: its loss settings and final COCO bbox metrics."""

    name: str
    work_dir: Path
    loss_type: Optional[str]
    epsilon: Optional[float]
    alpha_weighted: Optional[bool]
    metrics: Dict[str, float] = field(default_factory=dict)
    source: str = ''
    seed: Optional[int] = None
    #: Everything else that must match for runs to count as seeds of one
    #: setting: the other loss_cls arguments and the schedule, as text pairs.
    other: Tuple[Tuple[str, str], ...] = ()

    @property
    def setting(self) -> Tuple[Any, ...]:
        """What the runs of one loss setting share (seeds aside)."""
        return self.loss_type, self.epsilon, self.alpha_weighted, self.other

    @property
    def is_focal(self) -> bool:
        """mmdet's own loss (focal or cross-entropy), or Poly-1 at epsilon 0
        (the same loss): a baseline."""
        return self.loss_type in BASELINE_LOSSES or (
            self.loss_type is not None and self.epsilon == 0.0)

    @property
    def loss_label(self) -> str:
        """Short loss description for the table."""
        if self.loss_type is None:
            return '?'
        if self.loss_type in BASELINE_LOSSES:
            return BASELINE_LOSSES[self.loss_type]
        epsilons = dict(self.other).get('epsilons')
        if self.loss_type == 'PolyNFocalLoss' and epsilons is not None:
            return f'poly-N eps={epsilons}'
        if self.epsilon is None:
            return self.loss_type
        kind = ' CE' if 'CrossEntropy' in self.loss_type else ''
        label = f'poly-1{kind} eps={self.epsilon:+g}'
        return label if self.alpha_weighted is not False else (
            label + ', no alpha_t')

    def label_against(self, base: 'RunResult') -> str:
        """``loss_label`` plus what else differs from ``base`` (loss arguments,
        schedule), so that no two settings in a table read the same."""
        theirs = dict(base.other)
        diffs = [f'{key}={value}' for key, value in self.other
                 if key != 'epsilons' and theirs.get(key) != value]
        return self.loss_label + (f" ({', '.join(diffs)})" if diffs else '')


#: mmdet's losses that Poly-1 replaces, and their short names in the table.
BASELINE_LOSSES = {'FocalLoss': 'focal', 'CrossEntropyLoss': 'cross-entropy'}


def _metric_key(key: str) -> Optional[str]:
    """``'coco/bbox_mAP'`` -> ``'bbox_mAP'``; None if not a bbox metric."""
    suffix = key.rsplit('/', 1)[-1]
    return suffix if suffix.startswith('bbox_') else None


def _read_json_records(path: Path) -> List[Dict[str, Any]]:
    """The dict records of a JSON or JSON-lines file (bad lines skipped)."""
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _metric_files(work_dir: Path) -> List[Path]:
    """JSON files that may hold metrics, oldest run first."""
    files = []
    for run_dir in sorted(p for p in work_dir.iterdir()
                          if p.is_dir() and _TIMESTAMP.match(p.name)):
        files.append(run_dir / 'vis_data' / 'scalars.json')
        files.append(run_dir / f'{run_dir.name}.json')
    return [f for f in files if f.is_file()]


def read_metrics(work_dir: Path) -> Tuple[Dict[str, float], str]:
    """The newest COCO bbox metrics in ``work_dir`` and their source file.

    Values are as CocoMetric logs them (fractions in [0, 1]; -1 when COCO
    has no objects of that size).
    """
    latest: Dict[str, float] = {}
    source = ''
    for path in _metric_files(work_dir):
        for record in _read_json_records(path):
            found = {
                name: float(value)
                for key, value in record.items()
                if (name := _metric_key(key)) and isinstance(value, (int,
                                                                    float))
            }
            if 'bbox_mAP' in found:
                latest, source = found, str(path)
    return latest, source


def _find_loss_cls(node: Any) -> Optional[Dict[str, Any]]:
    """The first ``loss_cls`` dict in a (nested) model config."""
    if isinstance(node, dict):
        if isinstance(node.get('loss_cls'), dict):
            return node['loss_cls']
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return None
    for child in children:
        found = _find_loss_cls(child)
        if found is not None:
            return found
    return None


def classifier_loss(model: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The box classifier's ``loss_cls``: the RoI head's in two-stage models
    (not the RPN's), else the dense head's, else the first one found."""
    roi_bbox_head = (model.get('roi_head') or {}).get('bbox_head')
    if isinstance(roi_bbox_head, (list, tuple)):  # cascades: the first stage
        roi_bbox_head = roi_bbox_head[0] if roi_bbox_head else None
    for head in (roi_bbox_head, model.get('bbox_head')):
        if isinstance(head, dict) and isinstance(head.get('loss_cls'), dict):
            return head['loss_cls']
    return _find_loss_cls(model)


def read_config(work_dir: Path, run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The config of one run, as a dict ({} if none): the one mmengine dumped
    in ``run_dir`` (``<timestamp>/vis_data/config.py``) if given and present,
    else the newest ``*.py`` in ``work_dir`` (which every run overwrites)."""
    from mmengine.config import Config
    own = None if run_dir is None else run_dir / 'vis_data' / 'config.py'
    if own is not None and own.is_file():
        path = own
    else:
        dumped = sorted(work_dir.glob('*.py'), key=lambda p: p.stat().st_mtime)
        if not dumped:
            return {}
        path = dumped[-1]
    return Config.fromfile(str(path), import_custom_modules=False).to_dict()


def _run_dir(source: str, work_dir: Path) -> Optional[Path]:
    """The ``<timestamp>`` folder a metrics file belongs to."""
    for parent in Path(source).parents:
        if parent.parent == work_dir and _TIMESTAMP.match(parent.name):
            return parent
    return None


def training_run_dir(work_dir: Path) -> Optional[Path]:
    """The newest ``<timestamp>`` folder in ``work_dir`` that logged a training
    loss, or None. Its config holds the checkpoint's seed; a later test run's
    config carries its own (0 unless told)."""
    for run_dir in sorted((p for p in work_dir.iterdir()
                           if p.is_dir() and _TIMESTAMP.match(p.name)), reverse=True):
        scalars = run_dir / 'vis_data' / 'scalars.json'
        if scalars.is_file() and any('loss' in r for r in _read_json_records(scalars)):
            return run_dir
    return None


def _canonical(value: Any) -> str:
    """A config value as text, numbers as floats: ``gamma=2`` equals ``gamma=2.0``."""
    return repr(_as_floats(value))


def _as_floats(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_as_floats(v) for v in value)
    return value


def load_run(work_dir: str, name: Optional[str] = None) -> RunResult:
    """Read one run; raise :class:`SweepReportError` on unusable input."""
    path = Path(work_dir)
    if not path.is_dir():
        raise SweepReportError(
            f'work_dir {work_dir!r} does not exist or is not a directory')
    metrics, source = read_metrics(path)
    if not metrics:
        raise SweepReportError(
            f'work_dir {work_dir!r} holds no COCO bbox metrics (looked for '
            "'bbox_mAP' in <timestamp>/vis_data/scalars.json and "
            '<timestamp>/<timestamp>.json); train with validation or run '
            'tools/test.py on it first')
    # Loss settings from the run that logged these metrics; the seed from
    # the training run (the metrics may come from a later tools/test.py).
    metrics_dir, train_dir = _run_dir(source, path), training_run_dir(path)
    config = read_config(path, metrics_dir)
    loss = dict(classifier_loss(config.get('model', {})) or {})
    seed_config = config if train_dir in (None, metrics_dir) else read_config(path, train_dir)
    seed = (seed_config.get('randomness') or {}).get('seed')
    if not isinstance(seed, int):
        seed = (config.get('randomness') or {}).get('seed')
    loss_type = loss.get('type')
    train_cfg = config.get('train_cfg') or {}
    schedule = train_cfg.get('max_epochs', train_cfg.get('max_iters'))
    other = tuple(sorted((key, _canonical(value)) for key, value in loss.items()
                         if key not in ('type', 'epsilon', 'alpha_weighted_poly')))
    other += (('schedule', repr(schedule)),)
    epsilon: Optional[float] = None
    alpha_weighted: Optional[bool] = None
    if loss_type in BASELINE_LOSSES:
        epsilon = 0.0
    elif loss_type in ('Poly1FocalLoss', 'Poly1CrossEntropyLoss'):
        epsilon = float(loss.get('epsilon', 1.0))  # 1.0: the losses' default
        if loss_type == 'Poly1FocalLoss':
            alpha_weighted = bool(loss.get('alpha_weighted_poly', True))
    return RunResult(
        name=name or path.resolve().name,
        work_dir=path,
        loss_type=loss_type,
        epsilon=epsilon,
        alpha_weighted=alpha_weighted,
        metrics=metrics,
        source=source,
        seed=seed if isinstance(seed, int) else None,
        other=other)


def order_runs(runs: Sequence[RunResult],
               baseline: Optional[str] = None) -> List[RunResult]:
    """Baseline first, then the other runs of its setting (seeds), then by
    epsilon (unknown last), input order on ties.

    The baseline is the run named ``baseline`` if given, else the first
    focal-loss run, else the first run.
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
        base = next((r for r in runs if r.is_focal), runs[0])
    rest = [r for r in runs if r is not base]
    rest.sort(key=lambda r: (r.setting != base.setting, r.epsilon is None, r.epsilon or 0.0))
    return [base] + rest


def _fmt(value: Optional[float]) -> str:
    if value is None or value < 0:  # -1: COCO has no objects of that size
        return 'n/a'
    return f'{100 * value:.1f}'


def _fmt_delta(value: Optional[float], base: Optional[float]) -> str:
    text = _fmt(value)
    if text == 'n/a' or base is None or base < 0:
        return text
    return f'{text} ({100 * (value - base):+.1f})'


def markdown_table(runs: Sequence[RunResult]) -> str:
    """Baseline row first, others with (delta) against it, in AP points."""
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
            cells.append(
                _fmt(value) if i == 0 else _fmt_delta(value,
                                                      base.metrics.get(key)))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


#: Metrics of the across-seeds table: (column title, CocoMetric key suffix).
SEED_METRICS: Tuple[Tuple[str, str], ...] = (
    ('mAP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AR@100', 'bbox_AR@100'))


def group_by_setting(runs: Sequence[RunResult]) -> List[List[RunResult]]:
    """Runs of the same loss setting together, groups in order of first appearance."""
    groups: Dict[Tuple[Any, ...], List[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    return list(groups.values())


def _logged(runs: Sequence[RunResult], key: str) -> List[float]:
    """The values of ``key`` in the runs that logged it (CocoMetric's -1 means
    no objects of that size: not logged)."""
    return [r.metrics[key] for r in runs if r.metrics.get(key, -1) >= 0]


def _mean_sd(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _fmt_mean_sd(values: Sequence[float], signed: bool = False) -> str:
    mean, sd = _mean_sd([100 * v for v in values])
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
    ours, theirs = _logged(group, key), _logged(base, key)
    if not ours or not theirs:
        return 'n/a'
    return f'{100 * (_mean_sd(ours)[0] - _mean_sd(theirs)[0]):+.1f} (means)'


def is_seed_group(group: Sequence[RunResult]) -> bool:
    """True when the runs differ only by seed as far as the report can tell:
    every seed known and none repeated. Runs with the same seed differ in
    something else (a schedule, say) and must not be averaged."""
    seeds = [r.seed for r in group]
    return None not in seeds and len(set(seeds)) == len(seeds)


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
    shown = [(title, key) for title, key in SEED_METRICS if _logged(runs, key)]
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
            values = _logged(group, key)
            cells.append(_fmt_mean_sd(values) if values else 'n/a')
            cells.append('' if group is base else _delta(group, base, key))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + ([''] + notes if notes else []))


def _points(runs: Sequence[RunResult], key: str,
            alpha_weighted: bool) -> List[Tuple[float, float, float]]:
    """(epsilon, value, sd) in % of the runs with ``key``: alpha-weighted (or
    focal) runs, or the others. The runs of a setting that differ only by
    seed become their mean and sd; any other run is its own point."""
    points = []
    for group in group_by_setting(runs):
        group = [r for r in group if r.epsilon is not None and r.metrics.get(key, -1) >= 0
                 and (r.alpha_weighted is False) != alpha_weighted]
        if not group:
            continue
        if is_seed_group(group):
            mean, sd = _mean_sd([100 * r.metrics[key] for r in group])
            points.append((group[0].epsilon, mean, sd or 0.0))
        else:
            points += [(r.epsilon, 100 * r.metrics[key], 0.0) for r in group]
    return sorted(points)


def plot_sweep(runs: Sequence[RunResult], out_file: str) -> None:
    """PNG of AP (left) and AR@100 (right) against epsilon.

    Alpha-weighted Poly-1 runs and focal runs (epsilon 0) form the line;
    runs without alpha_t on the epsilon term are separate crosses; the
    baseline is a dashed horizontal line. Several runs (seeds) at one
    epsilon are drawn as their mean with a bar of one standard deviation.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    base = runs[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (title, key) in zip(axes, [('AP', 'bbox_mAP'),
                                       ('AR@100', 'bbox_AR@100')]):
        line = _points(runs, key, alpha_weighted=True)
        other = _points(runs, key, alpha_weighted=False)
        if not line and not other:
            ax.text(0.5, 0.5, f'{title} not logged', ha='center',
                    va='center', transform=ax.transAxes)
        if line:
            ax.errorbar(*zip(*line), fmt='o-', color='tab:blue', capsize=3,
                        label='Poly-1 (focal at eps=0)')
        if other:
            ax.errorbar(*zip(*other), fmt='x', color='tab:red', markersize=9,
                        capsize=3, label='Poly-1, no alpha_t on eps term')
        base_runs = [r for r in runs if r.setting == base.setting]
        if not is_seed_group(base_runs):
            base_runs = [base]
        base_values = _logged(base_runs, key)
        if base_values:
            ax.axhline(100 * _mean_sd(base_values)[0], color='gray', ls='--', lw=1,
                       label=f'baseline ({base.loss_label})')
        ax.set_xlabel('epsilon')
        ax.set_ylabel(f'box {title} (%)')
        ax.set_title(f'box {title} vs epsilon (COCO eval)')
        ax.grid(alpha=0.3)
        if line or other:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def build_report(work_dirs: Sequence[str],
                 baseline: Optional[str] = None,
                 out_png: Optional[str] = None,
                 out_md: Optional[str] = None) -> str:
    """Read the runs, write the optional PNG / markdown, return the table."""
    if not work_dirs:
        raise SweepReportError('work_dirs: give at least one work dir')
    runs = order_runs([load_run(d) for d in work_dirs], baseline)
    table = markdown_table(runs)
    across_seeds = seed_table(runs)
    if across_seeds:
        table += ('\n\n(Deltas above are against the one baseline run; per-seed '
                  'paired differences are below.)'
                  '\n\nAcross seeds (mean ± sd; Δ against the baseline\'s setting):\n\n'
                  + across_seeds)
    if out_png:
        plot_sweep(runs, out_png)
    if out_md:
        Path(out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(out_md).write_text(table + '\n')
    return table

