"""Reading the runs of a sweep: mmengine work dirs, as data.

Each run is an mmengine work dir (``tools/train.py`` / ``tools/test.py``).
Metrics come from the JSON files mmengine writes there:

- ``<work_dir>/<timestamp>/vis_data/scalars.json`` (training; one line per
  logged step, validation lines carry ``coco/bbox_mAP`` ...), and
- ``<work_dir>/<timestamp>/<timestamp>.json`` (a ``tools/test.py`` run).

The newest evaluation wins (timestamps sort; within a file, the last line).
The loss (type, epsilon, alpha-weighted or not) is read from the config
mmengine dumps into the work dir. That file is Python, but nothing in it is
run: it is parsed, and only the plain values ``Config.dump`` writes are
accepted (see :func:`parse_dumped_config`). CocoMetric logs recall
(``AR@100`` ...) only when its ``metric_items`` ask for it; the demo configs
do, mmdet's COCO configs do not (see docs/reproduction.md for the
--cfg-options line).
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .loss_types import BASELINE_LOSSES, poly_losses

_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
#: Loss arguments that RunResult holds in fields of their own, not in ``other``.
_OWN_FIELDS = ('type', 'epsilon', 'alpha_weighted_poly')


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
    def is_baseline(self) -> bool:
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
        poly = poly_losses().get(self.loss_type)
        epsilons = dict(self.other).get('epsilons')
        if poly is not None and poly.is_poly_n and epsilons is not None:
            return f'poly-N eps={epsilons}'
        if self.epsilon is None:
            return self.loss_type
        kind = ' CE' if poly is not None and not poly.is_focal else ''
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


# ------------------------------------------------------------------ metrics

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


def _timestamp_dirs(work_dir: Path) -> List[Path]:
    """The ``<timestamp>`` folders of ``work_dir``, oldest first."""
    return sorted(p for p in work_dir.iterdir() if p.is_dir() and _TIMESTAMP.match(p.name))


def _metric_files(work_dir: Path) -> List[Path]:
    """JSON files that may hold metrics, oldest run first."""
    files = []
    for run_dir in _timestamp_dirs(work_dir):
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
            found = {name: float(value) for key, value in record.items()
                     if (name := _metric_key(key)) and isinstance(value, (int, float))}
            if 'bbox_mAP' in found:
                latest, source = found, str(path)
    return latest, source


# ------------------------------------------------------- the dumped config

#: Bare names mmengine's ``Config.dump`` writes for float values (``str(inf)``).
_FLOAT_NAMES = {'inf': float('inf'), 'nan': float('nan')}


class _NotData(Exception):
    """A node of a dumped config that is not a plain value."""

    def __init__(self, node: ast.AST) -> None:
        super().__init__(node)
        self.node = node


def _number(node: ast.AST) -> Any:
    """An int, float or complex constant, or one of the float names."""
    if isinstance(node, ast.Name) and node.id in _FLOAT_NAMES:
        return _FLOAT_NAMES[node.id]
    if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex))
            and not isinstance(node.value, bool)):
        return node.value
    raise _NotData(node)


def _hashed(node: ast.AST, kind: type, items: List[Any]) -> Any:
    """``kind(items)``; a set member or dict key that cannot be one is not data."""
    try:
        return kind(items)
    except TypeError:
        raise _NotData(node) from None


def _literal(node: ast.AST) -> Any:
    """The value of a plain-value expression; :class:`_NotData` for anything else.

    Accepted: constants (strings, bytes, numbers, True/False/None), tuples,
    lists, sets, dicts, ``dict(...)`` with keyword values and an optional dict
    literal first (mmengine writes ``dict({'a.b': 1})`` for keys that are not
    names), signed numbers, ``inf``/``nan`` and complex numbers such as
    ``(1 + 2j)``.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return _hashed(node, {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)], items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):  # {**other}
            raise _NotData(node)
        pairs = [(_literal(key), _literal(node.values[i])) for i, key in enumerate(node.keys)]
        return _hashed(node, dict, pairs)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
        if len(node.args) > 1 or (node.args and not isinstance(node.args[0], ast.Dict)):
            raise _NotData(node)
        if any(kw.arg is None for kw in node.keywords):  # dict(**other)
            raise _NotData(node)
        out = _literal(node.args[0]) if node.args else {}
        out.update((kw.arg, _literal(kw.value)) for kw in node.keywords)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _number(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):  # (1 + 2j)
        try:
            real, imag = _literal(node.left), _number(node.right)
        except _NotData:
            raise _NotData(node) from None
        if type(real) not in (int, float) or not isinstance(imag, complex):
            raise _NotData(node)
        return real + imag if isinstance(node.op, ast.Add) else real - imag
    if isinstance(node, ast.Name) and node.id in _FLOAT_NAMES:
        return _FLOAT_NAMES[node.id]
    raise _NotData(node)


def _not_data_error(path: Path, text: str, node: ast.AST, what: str) -> SweepReportError:
    source = (ast.get_source_segment(text, node) or type(node).__name__).splitlines()[0]
    if len(source) > 60:
        source = source[:57] + '...'
    return SweepReportError(
        f'{path}:{node.lineno}: {what}, found {source!r}; the sweep report reads a '
        "run's config as data (as mmengine's Config.dump writes it) and runs none of it")


def parse_dumped_config(path: Path) -> Dict[str, Any]:
    """The ``name = value`` lines of a config mmengine dumped, as a dict.

    The file is parsed, never run: every statement must assign a plain value
    (see :func:`_literal`) to a name; anything else (an import, a call other
    than ``dict(...)``, a name, an operator) raises :class:`SweepReportError`
    naming the file and line.
    """
    try:
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise SweepReportError(f'{path}:{err.lineno}: not a config mmengine dumped: '
                               f'{err.msg}') from None
    except (ValueError, RecursionError, MemoryError) as err:  # not text, null bytes, too deep
        raise SweepReportError(f'{path}: not a config mmengine dumped: '
                               f'{type(err).__name__} {err}') from None
    config: Dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise _not_data_error(path, text, stmt, 'expected a `name = value` line')
        try:
            config[stmt.targets[0].id] = _literal(stmt.value)
        except _NotData as err:
            raise _not_data_error(path, text, err.node, 'expected a plain value') from None
    return config


def read_dumped_config(work_dir: Path, run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The config of one run, as a dict ({} if none): the one mmengine dumped
    in ``run_dir`` (``<timestamp>/vis_data/config.py``) if given and present,
    else the newest ``*.py`` in ``work_dir`` (which every run overwrites)."""
    own = None if run_dir is None else run_dir / 'vis_data' / 'config.py'
    if own is not None and own.is_file():
        path = own
    else:
        dumped = sorted(work_dir.glob('*.py'), key=lambda p: p.stat().st_mtime)
        if not dumped:
            return {}
        path = dumped[-1]
    return parse_dumped_config(path)


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


# ------------------------------------------------------------------ one run

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
    for run_dir in reversed(_timestamp_dirs(work_dir)):
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


def _loss_settings(loss: Dict[str, Any]) -> Tuple[Optional[float], Optional[bool]]:
    """(epsilon, alpha_weighted) of a ``loss_cls``: 0 and None for the baselines,
    the config's values or the loss class's defaults for the Poly-1 losses,
    None for the others."""
    loss_type = loss.get('type')
    if loss_type in BASELINE_LOSSES:
        return 0.0, None
    poly = poly_losses().get(loss_type) if isinstance(loss_type, str) else None
    if poly is None or not poly.is_poly1:
        return None, None
    epsilon = float(loss.get('epsilon', poly.defaults['epsilon']))
    if 'alpha_weighted_poly' not in poly.defaults:
        return epsilon, None
    return epsilon, bool(loss.get('alpha_weighted_poly', poly.defaults['alpha_weighted_poly']))


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
    config = read_dumped_config(path, metrics_dir)
    loss = dict(classifier_loss(config.get('model', {})) or {})
    seed_config = (config if train_dir in (None, metrics_dir)
                   else read_dumped_config(path, train_dir))
    seed = (seed_config.get('randomness') or {}).get('seed')
    if not isinstance(seed, int):
        seed = (config.get('randomness') or {}).get('seed')
    train_cfg = config.get('train_cfg') or {}
    schedule = train_cfg.get('max_epochs', train_cfg.get('max_iters'))
    other = tuple(sorted((key, _canonical(value)) for key, value in loss.items()
                         if key not in _OWN_FIELDS))
    other += (('schedule', repr(schedule)),)
    epsilon, alpha_weighted = _loss_settings(loss)
    return RunResult(
        name=name or path.resolve().name,
        work_dir=path,
        loss_type=loss.get('type'),
        epsilon=epsilon,
        alpha_weighted=alpha_weighted,
        metrics=metrics,
        source=source,
        seed=seed if isinstance(seed, int) else None,
        other=other)
