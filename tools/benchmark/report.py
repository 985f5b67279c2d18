"""Result tables and their ratios, the environment, the markdown report and its
JSON twin, and the failures that decide the exit status."""
import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from tools.benchmark.agreement import Check, ProbeRow
from tools.benchmark.cases import ALPHA, GAMMA, IGNORED_FRACTION, MMDET, NAIVE, PRIOR_LOGIT

#: Baselines for the ratios, in order of preference.
BASELINES = (MMDET, NAIVE)
PARTIAL = '\n\n(Partial: the run had not finished; memory columns come last.)'


@dataclass
class Row:
    """One method's results in one table."""
    method: str
    first_ms: Optional[float] = None
    median_ms: Optional[float] = None
    times_ms: List[float] = field(default_factory=list)
    peak_extra_mib: Optional[float] = None
    note: str = ''
    time_ratio: Optional[float] = None
    memory_ratio: Optional[float] = None
    floor_ratio: Optional[float] = None


@dataclass
class Table:
    """One size x dtype: its rows, baseline, bandwidth floor and agreement checks."""
    dtype: str
    images: int
    rows_n: int
    classes: int
    positives: int
    baseline: Optional[str]
    baseline_note: str
    floor_ms: Optional[float]
    rows: List[Row]
    checks: List[Check]


def pick_baseline(rows: Dict[str, Row]) -> Tuple[Optional[str], str]:
    """The first of BASELINES that was timed, and a note on those passed over."""
    skipped = []
    for name in BASELINES:
        row = rows.get(name)
        if row is not None and row.median_ms is not None:
            note = '' if not skipped else f'{"; ".join(skipped)}, so ratios are vs {name}'
            return name, note
        if row is not None:
            skipped.append(f'{name} {row.note}')
    return None, 'no baseline ran'


def _fill_ratios(rows: List[Row], base: Optional[Row], floor_ms: Optional[float]) -> None:
    for row in rows:
        if row.median_ms is None:
            continue
        if base is not None and base.median_ms:
            row.time_ratio = row.median_ms / base.median_ms
        if base is not None and base.peak_extra_mib and row.peak_extra_mib is not None:
            row.memory_ratio = row.peak_extra_mib / base.peak_extra_mib
        if floor_ms:
            row.floor_ratio = row.median_ms / floor_ms


def apply_memory(table: Table, peaks: Dict[str, Optional[float]]) -> None:
    """Put the peaks (MiB by method) into the timed rows and compute the ratios."""
    rows = {row.method: row for row in table.rows}
    for row in table.rows:
        if row.median_ms is not None:
            row.peak_extra_mib = peaks.get(row.method)
    _fill_ratios(table.rows, rows.get(table.baseline), table.floor_ms)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or 'CPU'


def portable_argv(argv: Sequence[str]) -> List[str]:
    """``argv`` with paths inside the checkout relative to it and other absolute
    paths as their last component (a report names no folder of the machine it ran on)."""
    root = Path(__file__).resolve().parents[2]
    words = []
    for word in argv:
        path = Path(word)
        if path.is_absolute():
            word = (str(path.relative_to(root)) if path.is_relative_to(root)
                    else f'<{path.name}>')
        words.append(word)
    return words


def environment(args: argparse.Namespace) -> Dict[str, str]:
    """The command, the date and the versions and device of this run."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'not installed'
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
    else:
        device = f'{_cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)'
    return dict(command='PYTHONPATH=. python ' + shlex.join(portable_argv(sys.argv)),
                date_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
                    '%Y-%m-%d %H:%M UTC'),
                torch=torch.__version__, triton=triton_version,
                python=platform.python_version(), device=device)


def _fmt(value: Optional[float], digits: int = 3, suffix: str = '') -> str:
    if value is None:
        return '—'
    return f'{value:.{digits}g}{suffix}' if abs(value) < 10 ** digits else f'{value:.0f}{suffix}'


def _header(env: Dict[str, str], args: argparse.Namespace, bandwidth: Optional[float],
            notes: List[str]) -> List[str]:
    lines = ['# Loss benchmark: Poly-1 focal vs mmdet FocalLoss', '',
             f"Command: `{env['command']}`", '',
             f"Date: {env['date_utc']}; torch {env['torch']}, triton {env['triton']}, "
             f"Python {env['python']}; device: {env['device']}", '',
             f'Inputs: {args.anchors_per_image} anchors/image x {args.classes} classes, '
             f'{args.positives_per_image} positives/image (random classes), the rest background;'
             f' ~{IGNORED_FRACTION:.0%} of anchors ignored (weight 0); avg_factor = positives; '
             f'logits ~ N({PRIOR_LOGIT:.2f}, 1); gamma {GAMMA}, alpha {ALPHA}; Poly-1 timed at '
             f'epsilon=-1; seed {args.seed}. Forward + backward, {args.warmup} warm-up calls '
             f'(the first reported as "first call"), then median of {args.repeats} interleaved'
             f' calls. Peak extra memory: '
             + ('CUDA max_memory_allocated above memory_allocated before the call.'
                if args.device == 'cuda' else
                'process peak RSS (VmHWM after clear_refs) above RSS before the call, in a '
                'separate process on the same inputs whose malloc mmaps buffers >= 1 MiB.'),
             '']
    if bandwidth:
        lines += [f'Measured device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write); '
                  'floor = (logits read once + labels read once + gradient written once) / '
                  'bandwidth.', '']
    return lines + [f'- {note}' for note in notes] + ([''] if notes else [])


def _probe_section(probe: Sequence[ProbeRow]) -> List[str]:
    names = list(probe[0].errors)
    lines = ['## Accuracy at large logits (fp32, focal loss = Poly-1 at epsilon 0)', '',
             'One element at a time, relative error of the loss / of its gradient '
             'against the float64 formula.', '',
             '| target | logit | float64 loss | ' + ' | '.join(names) + ' |',
             '|---|---:|---:|' + '---:|' * len(names)]
    for row in probe:
        cells = [f'{row.errors[n][0]:.1e} / {row.errors[n][1]:.1e}' for n in names]
        lines.append(f'| {row.target} | {row.logit:g} | {row.loss64:.6g} | '
                     + ' | '.join(cells) + ' |')
    return lines + ['']


def _table_section(table: Table) -> List[str]:
    lines = [f'## {table.dtype}, {table.images} image(s): {table.rows_n} x {table.classes}, '
             f'{table.positives} positives', '']
    base = table.baseline or 'none'
    lines.append(f'Baseline: {base}' + (f' ({table.baseline_note})'
                                        if table.baseline_note else '')
                 + (f'; floor {table.floor_ms:.3f} ms' if table.floor_ms else ''))
    lines += ['', '| method | first call ms | median ms | x baseline | peak extra MiB '
              '| x baseline | x floor |', '|---|---:|---:|---:|---:|---:|---:|']
    for row in table.rows:
        if row.median_ms is None:
            lines.append(f'| {row.method} | {row.note or "—"} | | | | | |')
            continue
        lines.append(f'| {row.method} | {_fmt(row.first_ms, 4)} | {_fmt(row.median_ms, 4)} '
                     f'| {_fmt(row.time_ratio)} | {_fmt(row.peak_extra_mib, 4)} '
                     f'| {_fmt(row.memory_ratio)} | {_fmt(row.floor_ratio)} |')
    return lines + ['']


def _train_section(train: Dict[str, object], warmup: int) -> List[str]:
    lines = ['## RetinaNet R50-FPN training step', '']
    if 'error' in train:
        return lines + [f"Skipped: {train['error']}", '']
    lines += [f"{train['images']} image(s) of {train['size']}, demo_mm_inputs, 80 classes;"
              ' data_preprocessor + model.loss + backward + SGD step; median of '
              f"{train['repeats']} interleaved steps after {warmup} warm-up.", '',
              '| loss_cls | first step ms | median ms |', '|---|---:|---:|']
    for name, median in train['median_ms'].items():
        lines.append(f"| {name} | {train['first_ms'][name]:.0f} | {median:.0f} |")
    return lines + ['', f"Poly1FocalLoss / FocalLoss step time: {train['ratio']:.3f}", '']


def render(env: Dict[str, str], args: argparse.Namespace, tables: List[Table],
           bandwidth: Optional[float], train: Optional[Dict[str, object]],
           notes: List[str], probe: Sequence[ProbeRow] = ()) -> str:
    """The markdown report."""
    lines = _header(env, args, bandwidth, notes)
    lines += ['## Agreement', ''] + [f'- {c.line()}' for t in tables for c in t.checks] + ['']
    if probe:
        lines += _probe_section(probe)
    for table in tables:
        lines += _table_section(table)
    if train is not None:
        lines += _train_section(train, args.warmup)
    return '\n'.join(lines)


def write_report(path: Path, report: str) -> None:
    """The markdown report at ``path`` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report + '\n')


def write_json(path: Path, env: Dict[str, str], args: argparse.Namespace,
               bandwidth: Optional[float], notes: List[str], tables: List[Table],
               train: Optional[Dict[str, object]], probe: Sequence[ProbeRow]) -> None:
    """Everything the report shows, and every call's time, as JSON at ``path``."""
    path.write_text(json.dumps(
        dict(env=env, args={k: (portable_argv([str(v)])[0] if isinstance(v, (str, Path)) else v)
                            for k, v in vars(args).items()},
             copy_bandwidth_bytes_per_s=bandwidth, notes=notes,
             tables=[asdict(t) for t in tables], train_step=train,
             accuracy_probe=[asdict(r) for r in probe]), indent=1) + '\n')


def failures(tables: List[Table], train: Optional[Dict[str, object]],
             mmcv_src: Optional[str], mmdet_error: str) -> Tuple[List[Check], List[str]]:
    """The checks that disagreed, and what failed or did not run although asked
    for: a method, the training step, and the mmdet baseline when its kernel
    source was given (a GPU check)."""
    failed_checks = [c for t in tables for c in t.checks if c.ok is False]
    failed_rows = [f'{t.dtype}/{t.images}: {r.method}: {r.note}' for t in tables for r in t.rows
                   if r.note.startswith('failed')]
    if train is not None and 'error' in train:
        failed_rows.append(f"--train-step: {train['error']}")
    if mmcv_src and mmdet_error:
        failed_rows.append(f'{MMDET} (--mmcv-src {mmcv_src}): not loaded: {mmdet_error}')
    return failed_checks, failed_rows
