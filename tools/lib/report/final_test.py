"""A run's numbers: the test of the checkpoint its training ended with, and nothing else.

A work dir holds many evaluations: the validations during training
(``<timestamp>/vis_data/scalars.json``) and every ``tools/test.py`` run
(``<timestamp>/<timestamp>.json``), of any checkpoint. The report takes only

- the checkpoint training ended with: the one ``last_checkpoint`` names, if
  training finished (the sweep's marker, ``.sweep-run.json``, says ``trained`` or
  ``tested``; without a marker, the checkpoint's name says the schedule's last
  epoch or iteration, ``epoch_12.pth`` of ``max_epochs=12``), and
- the newest test of that checkpoint: a ``tools/test.py`` run whose dumped config
  (``<timestamp>/vis_data/config.py``) has it as ``load_from``.

A work dir of tests only (``tools/test.py --work-dir`` elsewhere than the
training's) has no ``last_checkpoint``: its newest test counts if the checkpoint
it tested is the one its own work dir's training ended with (:func:`tested_elsewhere`).

A later test of an older checkpoint, a validation at epoch 2 of 12, or a test of
a run that is still training is never a run's number: such a run is reported as
unfinished, with the reason. The JSON files are read strictly: a value that is
not a COCO metric (``true``, ``NaN``, ``1e999``, a huge integer, a string),
nesting too deep for the parser, a line that is not JSON, or bytes that are not
UTF-8 stop the report with :class:`SweepReportError` naming the file and line.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import SweepReportError

_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
_CHECKPOINT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
#: The sweep's marker in a run's work dir (tools/lib/sweep_plan.py).
MARKER = '.sweep-run.json'


def _refuse_constant(name: str) -> Any:
    raise SweepReportError(f'{name} is not a number a metric can have')


def read_json_lines(path: Path) -> List[Dict[str, Any]]:
    """The dict records of a JSON or JSON-lines file. A last line cut short
    (no newline after it: a write interrupted by a kill) is left out; any other
    line that is not JSON is an error naming the file and the line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SweepReportError(f'{path}: cannot read it: {error.strerror}') from None
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as error:
        raise SweepReportError(f'{path}: not UTF-8 text (byte {data[error.start]:#04x} at '
                               f'offset {error.start})') from None
    lines = text.split('\n')
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_refuse_constant)
        except RecursionError:
            raise SweepReportError(f'{path}:{number}: nested too deeply to be a metrics '
                                   'record') from None
        except ValueError as error:  # JSONDecodeError, a constant, an int too long
            if number == len(lines) and not isinstance(error, SweepReportError) \
                    and isinstance(error, json.JSONDecodeError):
                continue  # the last line, cut short
            reason = str(error).split(':')[0] if isinstance(error, json.JSONDecodeError) \
                else str(error)
            raise SweepReportError(f'{path}:{number}: not a JSON metrics record '
                                   f'({reason})') from None
        if isinstance(record, dict):
            records.append(record)
    return records


def metric_key(key: str) -> Optional[str]:
    """``'coco/bbox_mAP'`` -> ``'bbox_mAP'``; None if not a bbox metric."""
    suffix = key.rsplit('/', 1)[-1]
    return suffix if suffix.startswith('bbox_') else None


def bbox_metrics(record: Dict[str, Any], where: str) -> Dict[str, float]:
    """The COCO bbox metrics of one record; a value CocoMetric cannot log
    (a bool, a string, NaN, infinity, outside [0, 1] and not -1) is an error."""
    found = {}
    for key, value in record.items():
        name = metric_key(key)
        if name is None:
            continue
        valid = (isinstance(value, (int, float)) and not isinstance(value, bool)
                 and (value == -1 or 0 <= value <= 1) and math.isfinite(value))
        if not valid:
            shown = json.dumps(value)[:40] if not isinstance(value, float) else repr(value)
            raise SweepReportError(f'{where}: {key} = {shown} is not a COCO metric (a number '
                                   'from 0 to 1, or -1)')
        found[name] = float(value)
    return found


def timestamp_dirs(work_dir: Path) -> List[Path]:
    """The ``<timestamp>`` folders of ``work_dir``, oldest first."""
    return sorted(p for p in work_dir.iterdir() if p.is_dir() and _TIMESTAMP.match(p.name))


def last_checkpoint(work_dir: Path) -> Optional[str]:
    """The path ``work_dir/last_checkpoint`` names, or None."""
    try:
        text = (work_dir / 'last_checkpoint').read_text(errors='replace').strip()
    except OSError:
        return None
    return text or None


def same_checkpoint(load_from: Any, final: str, work_dir: Path) -> bool:
    """Whether a test's ``load_from`` is the run's final checkpoint: the same file,
    or (a work dir moved or named relative to another folder) the same name in a
    folder of the work dir's name."""
    if not isinstance(load_from, str) or not load_from:
        return False
    tested, ended = Path(load_from), Path(final)
    if tested.name != ended.name:
        return False
    try:
        if tested.resolve() == ended.resolve():
            return True
    except OSError:
        pass
    return tested.parent.name == work_dir.resolve().name


def marker_state(work_dir: Path) -> Optional[str]:
    """The state in the sweep's marker, or None without one."""
    try:
        data = json.loads((work_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    state = data.get('state') if isinstance(data, dict) else None
    return state if isinstance(state, str) else None


def training_unfinished(work_dir: Path, checkpoint: str, train_cfg: Any) -> str:
    """Why ``checkpoint`` is not where the run's training ended ('' if it is)."""
    state = marker_state(work_dir)
    if state in ('trained', 'tested'):
        return ''
    if state is not None:
        return f'training has not finished (the sweep marks it {state!r})'
    name = Path(checkpoint).name
    match = _CHECKPOINT.match(name)
    total = None
    if match and isinstance(train_cfg, dict):
        total = train_cfg.get('max_epochs' if match.group(1) == 'epoch' else 'max_iters')
    if not isinstance(total, int) or isinstance(total, bool):
        return (f'cannot tell that {name} is where training ended (no sweep marker, and '
                'its name and train_cfg do not say)')
    done = int(match.group(2))
    return '' if done >= total else f'training stopped at {match.group(1)} {done} of {total}'


def newest_test_of(work_dir: Path, final: str,
                   read_config) -> Optional[Tuple[Dict[str, float], Path, Path]]:
    """The newest ``tools/test.py`` run of ``final``: (its metrics, the metrics
    file, its ``<timestamp>`` folder), or None. ``read_config(run_dir)`` reads a
    run's dumped config as data."""
    for run_dir in reversed(timestamp_dirs(work_dir)):
        result = run_dir / f'{run_dir.name}.json'
        config = run_dir / 'vis_data' / 'config.py'
        if not (result.is_file() and config.is_file()):
            continue
        if not same_checkpoint(read_config(run_dir).get('load_from'), final, work_dir):
            continue
        metrics: Dict[str, float] = {}
        for number, record in enumerate(read_json_lines(result), 1):
            found = bbox_metrics(record, f'{result}:{number}')
            if 'bbox_mAP' in found:
                metrics = found
        if metrics:
            return metrics, result, run_dir
    return None


def tested_elsewhere(work_dir: Path, read_config) -> Optional[Tuple[str, Path]]:
    """For a work dir without ``last_checkpoint``: the checkpoint its newest test
    loaded and the work dir that checkpoint's ``last_checkpoint`` names it in
    (where its training ended), or None."""
    for run_dir in reversed(timestamp_dirs(work_dir)):
        if (run_dir / f'{run_dir.name}.json').is_file() and \
                (run_dir / 'vis_data' / 'config.py').is_file():
            load_from = read_config(run_dir).get('load_from')
            if not isinstance(load_from, str) or not load_from:
                return None
            home = Path(load_from).parent
            final = last_checkpoint(home) if home.is_dir() else None
            return (load_from, home) if final and same_checkpoint(load_from, final, home) \
                else None
    return None
