"""Result tables, the markdown report and its JSON twin."""
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

ROOT = Path(__file__).resolve().parents[2]
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


@dataclass
class Results:
    """Everything a report shows."""
    env: Dict[str, str]
    args: argparse.Namespace
    bandwidth: Optional[float]
    notes: List[str]
    tables: List[Table] = field(default_factory=list)
    probe: Sequence[ProbeRow] = ()
    train: Optional[Dict[str, object]] = None


def pick_baseline(rows: Dict[str, Row]) -> Tuple[Optional[str], str]:
    """The first baseline for the ratios that was timed, and a note on those passed over."""
    skipped = []
    for row in (rows[name] for name in (MMDET, NAIVE) if name in rows):  # by preference
        if row.median_ms is not None:
            note = f'{"; ".join(skipped)}, so ratios are vs {row.method}' if skipped else ''
            return row.method, note
        skipped.append(f'{row.method} {row.note}')
    return None, 'no baseline ran'


def apply_memory(table: Table, peaks: Dict[str, Optional[float]]) -> None:
    """The peaks (MiB by method) into the timed rows, then every ratio."""
    timed = [row for row in table.rows if row.median_ms is not None]
    for row in timed:
        row.peak_extra_mib = peaks.get(row.method)
    base = next((row for row in timed if row.method == table.baseline), None)
    for row in timed:
        if base is not None and base.median_ms:
            row.time_ratio = row.median_ms / base.median_ms
        if base is not None and base.peak_extra_mib and row.peak_extra_mib is not None:
            row.memory_ratio = row.peak_extra_mib / base.peak_extra_mib
        if table.floor_ms:
            row.floor_ratio = row.median_ms / table.floor_ms


def portable_path(word: str) -> str:
    """An absolute path inside the checkout relative to it, any other as
    ``<last component>``: a report names no folder of its machine."""
    path = Path(word)
    if not path.is_absolute():
        return word
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else f'<{path.name}>'


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
        cpu = None
        with contextlib.suppress(OSError), open('/proc/cpuinfo') as info:
            cpu = next((line.split(':', 1)[1].strip() for line in info
                        if line.startswith('model name')), None)
        device = (f'{cpu or platform.processor() or "CPU"} ({torch.get_num_threads()} '
                  f'torch threads, {os.cpu_count()} CPUs)')
    return dict(command='PYTHONPATH=. python ' + shlex.join(map(portable_path, sys.argv)),
                date_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
                    '%Y-%m-%d %H:%M UTC'),
                torch=torch.__version__, triton=triton_version,
                python=platform.python_version(), device=device)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return '—'
    return f'{value:.{digits}g}' if abs(value) < 10 ** digits else f'{value:.0f}'


def _header(results: Results) -> List[str]:
    env, args = results.env, results.args
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
    if results.bandwidth:
        lines += [f'Measured device copy bandwidth: {results.bandwidth / 1e9:.0f} GB/s '
                  '(read + write); floor = (logits read once + labels read once + gradient '
                  'written once) / bandwidth.', '']
    return lines + [f'- {note}' for note in results.notes] + ([''] if results.notes else [])


def _train_section(train: Dict[str, object], warmup: int) -> List[str]:
    lines = ['## RetinaNet R50-FPN training step', '']
    if 'error' in train:
        return lines + [f"Skipped: {train['error']}", '']
    lines += [f"{train['images']} image(s) of {train['size']}, demo_mm_inputs, 80 classes;"
              ' data_preprocessor + model.loss + backward + SGD step; median of '
              f"{train['repeats']} interleaved steps after {warmup} warm-up.", '',
              '| loss_cls | first step ms | median ms |', '|---|---:|---:|']
    lines += [f"| {name} | {train['first_ms'][name]:.0f} | {median:.0f} |"
              for name, median in train['median_ms'].items()]
    return lines + ['', f"Poly1FocalLoss / FocalLoss step time: {train['ratio']:.3f}", '']


def render(results: Results) -> str:
    """The markdown report."""
    lines = _header(results) + ['## Agreement', '']
    lines += [f'- {c.line()}' for t in results.tables for c in t.checks] + ['']
    if results.probe:
        names = list(results.probe[0].errors)
        lines += ['## Accuracy at large logits (fp32, focal loss = Poly-1 at epsilon 0)', '',
                  'One element at a time, relative error of the loss / of its gradient '
                  'against the float64 formula.', '',
                  '| target | logit | float64 loss | ' + ' | '.join(names) + ' |',
                  '|---|---:|---:|' + '---:|' * len(names)]
        for probe in results.probe:
            cells = [f'{probe.errors[n][0]:.1e} / {probe.errors[n][1]:.1e}' for n in names]
            lines.append(f'| {probe.target} | {probe.logit:g} | {probe.loss64:.6g} | '
                         + ' | '.join(cells) + ' |')
        lines.append('')
    for table in results.tables:
        note = f' ({table.baseline_note})' if table.baseline_note else ''
        floor = f'; floor {table.floor_ms:.3f} ms' if table.floor_ms else ''
        lines += [f'## {table.dtype}, {table.images} image(s): {table.rows_n} x '
                  f'{table.classes}, {table.positives} positives', '',
                  f'Baseline: {table.baseline or "none"}{note}{floor}', '',
                  '| method | first call ms | median ms | x baseline | peak extra MiB '
                  '| x baseline | x floor |', '|---|---:|---:|---:|---:|---:|---:|']
        for row in table.rows:
            if row.median_ms is None:
                lines.append(f'| {row.method} | {row.note or "—"} | | | | | |')
            else:
                lines.append(f'| {row.method} | {_fmt(row.first_ms, 4)} '
                             f'| {_fmt(row.median_ms, 4)} | {_fmt(row.time_ratio)} '
                             f'| {_fmt(row.peak_extra_mib, 4)} | {_fmt(row.memory_ratio)} '
                             f'| {_fmt(row.floor_ratio)} |')
        lines.append('')
    if results.train is not None:
        lines += _train_section(results.train, results.args.warmup)
    return '\n'.join(lines)


def write(path: Path, results: Results, partial: bool = False) -> None:
    """The markdown report at ``path`` (its folder made if needed) and, once the
    run is complete, its JSON next to it: everything the report shows, and every
    call's time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results) + (PARTIAL if partial else '') + '\n')
    if not partial:
        args = {k: portable_path(str(v)) if isinstance(v, (str, Path)) else v
                for k, v in vars(results.args).items()}
        data = dict(env=results.env, args=args, copy_bandwidth_bytes_per_s=results.bandwidth,
                    notes=results.notes, tables=[asdict(t) for t in results.tables],
                    train_step=results.train, accuracy_probe=[asdict(r) for r in results.probe])
        path.with_suffix('.json').write_text(json.dumps(data, indent=1) + '\n')
