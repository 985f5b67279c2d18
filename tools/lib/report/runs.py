"""Reading the runs of a sweep: mmengine work dirs, as data.

Each run is an mmengine work dir (``tools/train.py`` / ``tools/test.py``).
Its metrics are those of the ``tools/test.py`` run of the checkpoint its
training ended with (:mod:`.final_test`); a run without one is unfinished
(``RunResult.unfinished`` says why) and the report leaves it out of its tables.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import SweepReportError
from .final_test import (
    last_checkpoint,
    newest_test_of,
    read_json_lines,
    tested_elsewhere,
    timestamp_dirs,
    training_unfinished,
)
from .loss_types import BASELINE_LOSSES, poly_losses

#: Loss arguments that RunResult holds in fields of their own, not in ``other``.
_OWN_FIELDS = ('type', 'epsilon', 'alpha_weighted_poly')


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
    #: Why the run has no final test to report ('' when it has one).
    unfinished: str = ''

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

def training_run_dir(work_dir: Path) -> Optional[Path]:
    """The newest ``<timestamp>`` folder in ``work_dir`` that logged a training
    loss, or None. Its config holds the checkpoint's seed; a later test run's
    config carries its own (0 unless told)."""
    for run_dir in reversed(timestamp_dirs(work_dir)):
        scalars = run_dir / 'vis_data' / 'scalars.json'
        if scalars.is_file() and any('loss' in r for r in read_json_lines(scalars)):
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
    """Read one run; raise :class:`SweepReportError` on unusable input. A run
    without a test of the checkpoint its training ended with comes back with no
    metrics and ``unfinished`` saying why."""
    path = Path(work_dir)
    if not path.is_dir():
        raise SweepReportError(
            f'work_dir {work_dir!r} does not exist or is not a directory')
    name = name or path.resolve().name
    train_dir = training_run_dir(path)
    train_config = read_dumped_config(path, train_dir)
    final, home = last_checkpoint(path), path
    if final is None:  # a work dir of tests only: the checkpoint's own work dir says
        final, home = tested_elsewhere(
            path, lambda run_dir: read_dumped_config(path, run_dir)) or (None, path)
        if home != path:  # the schedule and the seed of the training that made it
            train_dir = training_run_dir(home)
            train_config = read_dumped_config(home, train_dir)
    why = ('no checkpoint yet (no last_checkpoint file)' if final is None else
           training_unfinished(home, final, train_config.get('train_cfg')))
    found = None if why else newest_test_of(path, final,
                                            lambda run_dir: read_dumped_config(path, run_dir))
    if found is None:
        why = why or (f'no tools/test.py run of {Path(final).name}, the checkpoint its '
                      'training ended with')
        return RunResult(name, path, None, None, None, unfinished=why)
    metrics, source, metrics_dir = found
    # Loss settings from the test that logged these metrics; the seed from the
    # training run (tools/test.py dumps seed 0 unless told otherwise).
    config = read_dumped_config(path, metrics_dir)
    loss = dict(classifier_loss(config.get('model', {})) or {})
    seed = (train_config.get('randomness') or {}).get('seed') if train_dir else None
    if not isinstance(seed, int):
        seed = (config.get('randomness') or {}).get('seed')
    train_cfg = config.get('train_cfg') or {}
    schedule = train_cfg.get('max_epochs', train_cfg.get('max_iters'))
    other = tuple(sorted((key, _canonical(value)) for key, value in loss.items()
                         if key not in _OWN_FIELDS))
    other += (('schedule', repr(schedule)),)
    epsilon, alpha_weighted = _loss_settings(loss)
    return RunResult(
        name=name,
        work_dir=path,
        loss_type=loss.get('type'),
        epsilon=epsilon,
        alpha_weighted=alpha_weighted,
        metrics=metrics,
        source=str(source),
        seed=seed if isinstance(seed, int) else None,
        other=other)
