"""A sweep's runs read from their mmengine work dirs as data (nothing in them is run): each
run's test of the checkpoint its training ended with, else why it is ``unfinished``."""
from __future__ import annotations

import contextlib
import inspect
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from tools.lib.errors import UserError
from tools.lib.recipe import annotation_files, loss_difference, parse_config_text
from tools.lib.sweep.run import LOCK_NAME, MARKER, Run

#: mmdet's losses that the Poly losses replace, and their short names in the tables.
BASELINE_LOSSES: Mapping[str, str] = {'FocalLoss': 'focal', 'CrossEntropyLoss': 'cross-entropy'}
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
_CHECKPOINT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


class SweepReportError(UserError):
    """Bad input to the sweep report; the message names the culprit."""


class PolyLoss(NamedTuple):
    """A loss of this package: its defaults; does it take ``epsilon`` (Poly-1), ``epsilons``
    (Poly-N), ``gamma`` (focal; else a cross-entropy)?"""
    defaults: Mapping[str, Any]
    is_poly1: bool
    is_poly_n: bool
    is_focal: bool


@lru_cache(maxsize=None)
def poly_losses() -> Dict[str, PolyLoss]:
    """This package's losses by registered name, read from their classes."""
    from mmdet_polyloss import losses
    found = {}
    for name in losses.__all__:
        params = inspect.signature(getattr(losses, name).__init__).parameters.values()
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        found[name] = PolyLoss(defaults, *(k in defaults for k in ('epsilon', 'epsilons', 'gamma')))
    return found


@dataclass
class RunResult:
    """One work dir: its loss settings and final COCO bbox metrics."""
    name: str
    work_dir: Path
    loss_type: Optional[str]
    epsilon: Optional[float]
    alpha_weighted: Optional[bool]
    metrics: Dict[str, float] = field(default_factory=dict)
    source: str = ''  # the metrics file
    seed: Optional[int] = None
    other: Tuple[Tuple[str, str], ...] = ()  # the other loss_cls arguments and the schedule
    unfinished: str = ''  # why the run has no final test to report ('' when it has one)
    train_data: str = ''  # its training annotation file, as its config names it
    test_data: str = ''  # the one its final test read
    recipe: Dict[str, Any] = field(default_factory=dict)  # its config (tools/lib/recipe.py)
    #: How its final test ran: the model's type (a TTA wrapper) and test_cfg, the test
    #: pipeline; from the test's config.
    test_settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> Tuple[Any, ...]:
        """What the runs of one loss setting share (seeds aside)."""
        return self.loss_type, self.epsilon, self.alpha_weighted, self.other

    @property
    def dataset(self) -> str:
        """``train <annotation file>, test <annotation file>``, those the configs name."""
        return ', '.join(f'{split} {file}' for split, file in (
            ('train', self.train_data), ('test', self.test_data)) if file)

    @property
    def is_baseline(self) -> bool:
        """mmdet's own loss, or a Poly-1 loss at epsilon 0 (the same loss)."""
        return self.loss_type in BASELINE_LOSSES or (
            self.loss_type is not None and self.epsilon == 0.0)

    @property
    def loss_label(self) -> str:
        if self.loss_type is None or self.loss_type in BASELINE_LOSSES:
            return BASELINE_LOSSES.get(self.loss_type, '?')
        poly = poly_losses().get(self.loss_type)
        epsilons = dict(self.other).get('epsilons')
        if poly is not None and poly.is_poly_n and epsilons is not None:
            return f'poly-N eps={epsilons}'
        if self.epsilon is None:
            return self.loss_type
        kind = ' CE' if poly is not None and not poly.is_focal else ''
        label = f'poly-1{kind} eps={self.epsilon:+g}'
        return label if self.alpha_weighted is not False else label + ', no alpha_t'

    def matches(self, name: str) -> bool:
        """Whether ``name`` is the run's name or a path to its work dir."""
        return name == self.name or Path(name).resolve() == self.work_dir.resolve()

    def label_against(self, base: RunResult) -> str:
        """``loss_label`` plus what else differs from ``base`` (loss arguments, schedule)."""
        diffs = [f'{key}={value}' for key, value in self.other
                 if key != 'epsilons' and dict(base.other).get(key) != value]
        return self.loss_label + (f" ({', '.join(diffs)})" if diffs else '')


def parse_dumped_config(path: Path) -> Dict[str, Any]:
    """The ``name = value`` lines of a config mmengine dumped, parsed (never run)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepReportError(f'{path}: cannot read it: {err.strerror}') from None
    except ValueError as err:  # not UTF-8 text
        raise SweepReportError(f'{path}: not a config mmengine dumped: '
                               f'{type(err).__name__} {err}') from None
    try:
        return parse_config_text(text, str(path))
    except UserError as error:
        raise SweepReportError(str(error)) from None


def _refuse(name: str) -> Any:
    raise ValueError(f'{name} is not a number a metric can have')


def _read_json_lines(path: Path) -> List[Dict[str, Any]]:
    """The dict records of a JSON-lines file; a last line cut short by a kill is left out."""
    try:
        lines = path.read_bytes().decode('utf-8').split('\n')
    except OSError as error:
        raise SweepReportError(f'{path}: cannot read it: {error.strerror}') from None
    except UnicodeDecodeError as error:
        raise SweepReportError(f'{path}: not UTF-8 text (byte {error.object[error.start]:#04x} '
                               f'at offset {error.start})') from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line, parse_constant=_refuse) if line.strip() else None
        except RecursionError:
            raise SweepReportError(f'{path}:{number}: nested too deeply to be a metrics '
                                   'record') from None
        except ValueError as error:  # not JSON, a refused constant, an int too long
            not_json = isinstance(error, json.JSONDecodeError)
            if not_json and number == len(lines):
                continue  # the last line, cut short
            raise SweepReportError(f'{path}:{number}: not a JSON metrics record '
                                   f'({str(error).split(":")[0] if not_json else error})') from None
        records += [record] if isinstance(record, dict) else []
    return records


def _newest_first(work_dir: Path) -> List[Path]:
    """The ``<timestamp>`` folders of ``work_dir`` (one per train or test run), newest first."""
    try:
        entries = list(work_dir.iterdir())
    except OSError as error:
        raise SweepReportError(f'{work_dir}: cannot list it: {error.strerror}') from None
    return sorted((p for p in entries if p.is_dir() and _TIMESTAMP.match(p.name)), reverse=True)


def _tests(work_dir: Path) -> Iterator[Tuple[Path, Dict[str, Any]]]:
    """The ``tools/test.py`` runs in ``work_dir``, newest first: (metrics file, config)."""
    for run_dir in _newest_first(work_dir):
        result, config = run_dir / f'{run_dir.name}.json', run_dir / 'vis_data' / 'config.py'
        if result.is_file() and config.is_file():
            yield result, parse_dumped_config(config)


class Training(NamedTuple):
    """What a run's work dir says of its training (:func:`_training`)."""
    logged: bool  # some part logged a training loss
    config: Dict[str, Any]  # the newest such part's config (else the newest *.py)
    started_from: Any  # load_from of the part that started it (the newest not resumed)
    stamp: str  # the newest part's timestamp folder, when its config was read there; else ''


def _training(work_dir: Path) -> Training:
    """The run's training from its logs: the newest part that logged a loss gives the config
    (else the newest ``*.py`` in ``work_dir``, which every run overwrites); the newest part
    that did not resume, the weights the training started from (a resumed part names the
    run's own checkpoint there; none logged: the oldest part's, if it did not resume)."""
    logs = [d / 'vis_data' for d in _newest_first(work_dir)
            if (d / 'vis_data' / 'scalars.json').is_file()]
    trained = [log for log in logs
               if any('loss' in r for r in _read_json_lines(log / 'scalars.json'))]
    configs = [log / 'config.py' for log in trained if (log / 'config.py').is_file()]
    dumped = configs[:1] or sorted(work_dir.glob('*.py'), key=lambda p: p.stat().st_mtime)[-1:]
    config = parse_dumped_config(dumped[0]) if dumped else {}
    parts = (parse_dumped_config(path) for path in configs[1:])
    start = next((part for part in [config, *parts] if not part.get('resume')), {})
    return Training(bool(trained), config, start.get('load_from'),
                    configs[0].parent.parent.name if configs else '')


def _same_checkpoint(load_from: Any, final: str, work_dir: Path) -> bool:
    """Whether a test's ``load_from`` is ``final``: the same file, or the same name in
    a folder of the work dir's name (a work dir moved, or named from elsewhere)."""
    if not isinstance(load_from, str) or not final or Path(load_from).name != Path(final).name:
        return False
    with contextlib.suppress(OSError):
        if Path(load_from).resolve() == Path(final).resolve():
            return True
    return Path(load_from).parent.name == work_dir.resolve().name


def _final_checkpoint(work_dir: Path) -> Tuple[Optional[str], Path]:
    """The checkpoint training ended with, and its work dir: ``last_checkpoint`` names it,
    else (a work dir of tests only) the newest test's, if its own work dir names it."""
    if final := Run(work_dir.name, '', work_dir).last_checkpoint():
        return final, work_dir
    load_from = next(_tests(work_dir), (None, {}))[1].get('load_from')
    home = Path(load_from).parent if isinstance(load_from, str) and load_from else work_dir
    found = _same_checkpoint(load_from, Run(home.name, '', home).last_checkpoint(), home)
    return (load_from, home) if found else (None, work_dir)


def _unfinished_training(work_dir: Path, checkpoint: str, train_cfg: Any) -> str:
    """Why ``checkpoint`` is not where training ended ('' if it is), by the sweep's marker,
    else by the checkpoint's name and train_cfg."""
    state = Run(work_dir.name, '', work_dir).stage()
    if state:
        return '' if state in ('trained', 'tested') else (
            f'training has not finished (the sweep marks it {state!r})')
    name = Path(checkpoint).name
    match = _CHECKPOINT.match(name)
    key = {'epoch': 'max_epochs', 'iter': 'max_iters'}[match[1]] if match else None
    total = train_cfg.get(key) if key and isinstance(train_cfg, dict) else None
    if type(total) is not int:
        return (f'cannot tell that {name} is where training ended (no sweep marker, and '
                'its name and train_cfg do not say)')
    done = int(match[2])
    return '' if done >= total else f'training stopped at {match[1]} {done} of {total}'


#: mmdet3d's KittiMetric keys (``Kitti metric/pred_instances_3d/KITTI/<name>``), in AP
#: points: read as ``kitti/<name>`` fractions, as CocoMetric writes its own.
_KITTI_PREFIX = 'Kitti metric/pred_instances_3d/KITTI/'
_KITTI_NAME = re.compile(r'^\w+?_(3D|BEV|2D|AOS)_AP(11|40)_(easy|moderate|hard)(_strict|_loose)?$')
#: A test's main figure: COCO's box mAP, or KITTI's overall 3D AP40 at moderate difficulty.
MAIN_METRICS = ('bbox_mAP', 'kitti/Overall_3D_AP40_moderate')


def _metric(key: str, value: Any, result: Path, number: int) -> Optional[Tuple[str, float]]:
    """(name, fraction) of a COCO box metric or a KITTI AP; None for any other key."""
    if key.startswith(_KITTI_PREFIX):
        name, scale, kind = key[len(_KITTI_PREFIX):], 100.0, 'KITTI AP (from 0 to 100)'
        if not _KITTI_NAME.match(name):
            return None
        name = 'kitti/' + name
    else:
        name, scale, kind = key.rsplit('/', 1)[-1], 1.0, 'COCO metric (a number from 0 to 1, or -1)'
        if not name.startswith('bbox_'):  # 'coco/bbox_mAP' -> 'bbox_mAP'
            return None
    if type(value) not in (int, float) or not (value == -1 or 0 <= value <= scale):
        shown = repr(value) if isinstance(value, float) else json.dumps(value)[:40]
        raise SweepReportError(f'{result}:{number}: {key} = {shown} is not a {kind}')
    return name, (float(value) if value == -1 else value / scale)


def _final_test(work_dir: Path,
                final: str) -> Optional[Tuple[Dict[str, float], Path, Dict[str, Any]]]:
    """The newest test of ``final`` that logged a main metric: (its metrics, metrics file,
    config)."""
    for result, config in _tests(work_dir):
        if not _same_checkpoint(config.get('load_from'), final, work_dir):
            continue
        metrics: Dict[str, float] = {}
        for number, record in enumerate(_read_json_lines(result), 1):
            found = dict(filter(None, (_metric(key, value, result, number)
                                       for key, value in record.items())))
            metrics = found if any(main in found for main in MAIN_METRICS) else metrics
        if metrics:
            return metrics, result, config
    return None


def _dict_entry(node: Dict[str, Any], key: str, where: Path) -> Dict[str, Any]:
    """``node[key]`` of a dumped config, ``{}`` when unset; an error when not a dict."""
    value = node.get(key)
    if value is not None and not isinstance(value, dict):
        raise SweepReportError(f'{where}: the dumped config sets {key} to {value!r}, '
                               'where a dict belongs')
    return value or {}


def _as_floats(value: Any) -> Any:
    """Numbers as floats, sequences as tuples: ``gamma=2`` is ``gamma=2.0``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return tuple(map(_as_floats, value)) if isinstance(value, (list, tuple)) else value


def _data_of(config: Dict[str, Any], loader: str) -> str:
    """The data ``loader`` reads: its datasets' annotation files; '' when none is named."""
    return ', '.join(dict.fromkeys(path for key, path in annotation_files(config, loader)
                                   if key.startswith(f'{loader}.')))


def not_a_run(path: Path) -> str:
    """Why ``path`` is not a run's folder (a file; a folder with no ``last_checkpoint``,
    sweep marker or lock, dumped config or timestamped log folder); '' when it may be one
    (a path that does not exist is left to :func:`load_run` to name)."""
    if not path.exists():
        return ''
    if not path.is_dir():
        return 'a file'
    with contextlib.suppress(OSError):
        names = [entry.name for entry in path.iterdir()]
        if not any(name in ('last_checkpoint', MARKER, LOCK_NAME) or name.endswith('.py')
                   or _TIMESTAMP.match(name) for name in names):
            return 'no last_checkpoint, config or log folder in it'
    return ''


def load_run(work_dir: str) -> RunResult:
    """One run; without a test of the checkpoint its training ended with, ``unfinished``."""
    path = Path(work_dir)
    if not path.is_dir():
        raise SweepReportError(f'work_dir {work_dir!r} does not exist or is not a directory')
    name = path.resolve().name
    final, home = _final_checkpoint(path)  # home: the training's work dir
    trained, train_config, started_from, trained_at = _training(home)
    why = ('no checkpoint yet (no last_checkpoint file)' if final is None else
           _unfinished_training(home, final, train_config.get('train_cfg')))
    test = None if why else _final_test(path, final)
    if test is None:
        return RunResult(name, path, None, None, None, unfinished=why or (
            f'no tools/test.py run of {Path(final).name}, the checkpoint its training '
            'ended with'))
    metrics, source, config = test
    other_loss = loss_difference(config, train_config) if trained_at else None
    if other_loss is not None and trained_at < source.parent.name:
        return RunResult(name, path, None, None, None, unfinished=(
            f'its final test ({source.parent.name}) ran a config of another loss than its '
            f'training ({other_loss.describe("the test", "the training")}); test it with the '
            'config it was trained with'))
    # The box classifier's loss (the RoI head's, a cascade's first stage; else the dense
    # head's, mmdet3d's pts_bbox_head included) from the test that logged the metrics;
    # else an unknown loss. mmdet3d configs name it in mmdet's scope: 'mmdet.FocalLoss'.
    model = _dict_entry(config, 'model', path)
    roi_head = _dict_entry(model, 'roi_head', path).get('bbox_head')
    roi_head = (roi_head or [None])[0] if isinstance(roi_head, (list, tuple)) else roi_head
    loss = next((head['loss_cls'] for head in (roi_head, model.get('bbox_head'),
                                               model.get('pts_bbox_head'))
                 if isinstance(head, dict) and isinstance(head.get('loss_cls'), dict)), {})
    loss_type = loss.get('type')
    if loss_type is not None and not isinstance(loss_type, str):
        raise SweepReportError(f"{path}: the dumped config's loss_cls type is "
                               f'{loss_type!r}, where a loss name belongs')
    loss_type = loss_type and loss_type.removeprefix('mmdet.')
    # The seed from the training (tools/test.py dumps seed 0 unless told otherwise).
    seed = _dict_entry(train_config, 'randomness', path).get('seed') if trained else None
    if not isinstance(seed, int):
        seed = _dict_entry(config, 'randomness', path).get('seed')
    train_cfg = _dict_entry(config, 'train_cfg', path)
    schedule = train_cfg.get('max_epochs', train_cfg.get('max_iters'))
    other = tuple(sorted((key, repr(_as_floats(value))) for key, value in loss.items()
                         if key not in ('type', 'epsilon', 'alpha_weighted_poly')))
    # Baselines: epsilon 0; Poly-1 losses: the config's values, else the class's defaults.
    epsilon, alpha_weighted = (0.0 if loss_type in BASELINE_LOSSES else None), None
    poly = poly_losses().get(loss_type) if epsilon is None and loss_type else None
    if poly is not None and poly.is_poly1:
        given = {**poly.defaults, **loss}
        epsilon = float(given['epsilon'])
        if 'alpha_weighted_poly' in poly.defaults:
            alpha_weighted = bool(given['alpha_weighted_poly'])
    # The recipe: the training's config (a work dir of tests only: the test's), with the
    # weights the training started from (a resumed part's or a test's load_from is a
    # checkpoint of the run itself; a work dir of tests only: not known, None).
    recipe_config = {**(train_config if trained and train_config else config),
                     'load_from': started_from if trained else None}
    return RunResult(name, path, loss_type, epsilon, alpha_weighted, metrics=metrics,
                     source=str(source), seed=seed if isinstance(seed, int) else None,
                     other=other + (('schedule', repr(schedule)),),
                     train_data=_data_of(recipe_config, 'train_dataloader'),
                     test_data=_data_of(config, 'test_dataloader'),
                     recipe=recipe_config, test_settings=_test_settings(config))


def _test_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """What decides a test's numbers besides the weights and the data: the model's type
    (``--tta`` wraps it) and ``test_cfg`` (score threshold, NMS, boxes per image), and the
    test pipeline."""
    model = config.get('model') if isinstance(config.get('model'), dict) else {}
    loader = config.get('test_dataloader') if isinstance(config.get('test_dataloader'),
                                                         dict) else {}
    dataset = loader.get('dataset') if isinstance(loader.get('dataset'), dict) else {}
    return {'model': {'type': model.get('type'), 'test_cfg': model.get('test_cfg')},
            'test_dataloader': {'dataset': {'pipeline': dataset.get('pipeline')}}}
