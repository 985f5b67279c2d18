#!/usr/bin/env python
"""Benchmark Poly-1 focal loss against mmdet's FocalLoss on RetinaNet-like inputs.

Checks every method against float64, then times forward + backward and peak extra
memory (``--train-step``: also a RetinaNet training step); docs/benchmarks.md explains
the report. Exit status 1, after the report, when a check disagrees, a method or the
training step fails, or mmdet's FocalLoss cannot be loaded despite ``--mmcv-src``.

    PYTHONPATH=. python tools/benchmark/benchmark_loss.py --device cpu --images 1 2
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

# The repository root on the path in place of this folder (its modules are no top-level ones).
_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or '.').resolve() == _HERE:
    del sys.path[0]
sys.path.insert(0, str(_HERE.parents[1]))

import torch  # after the path set-up above, like every import below

from tools.benchmark import cases, measure
from tools.lib import errors
from tools.lib.cli import check_writable
from tools.lib.errors import number

positive = number(int, low=1)


def _image_size(text: str) -> Tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f'{text!r} is not HEIGHTxWIDTH, e.g. 512x512')
    return int(parts[0]), int(parts[1])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, with the device-dependent defaults filled in."""
    parser = errors.ArgumentParser(prog='benchmark_loss.py', description=__doc__.split('\n\n')[0])
    add = parser.add_argument
    add('--device', choices=('cpu', 'cuda'), help='default: cuda when available, else cpu')
    add('--images', type=positive, nargs='+', default=[1, 2, 8],
        help='batch sizes (images), each one table')
    add('--anchors-per-image', type=positive, default=100_000)
    add('--classes', type=positive, default=80)
    add('--positives-per-image', type=positive, default=200)
    add('--dtype', nargs='+', choices=tuple(cases.DTYPES), default=['float32'])
    add('--repeats', type=positive,
        help='timed calls per method (default 20 on cuda, 5 on cpu)')
    add('--warmup', type=positive, default=2,
        help='untimed-for-the-median calls per method; the first is reported as "first call"')
    add('--seed', type=number(int, 0, 2**63 - 1), default=0)
    add('--threads', type=positive, help="torch CPU threads (default: torch's); on a "
        'small, shared machine 1 avoids OpenMP barrier stalls under contention')
    add('--mmcv-src', help='mmcv source tree to JIT-build its CUDA focal kernel from when '
        'mmcv CUDA ops are not importable')
    add('--out', type=Path, help='write the markdown report here')
    add('--train-step', action='store_true', help='also time a RetinaNet training step')
    add('--train-images', type=positive, default=2)
    add('--train-size', type=_image_size, help='HxW (default 512x512 on cpu, 800x1333 on cuda)')
    add('--train-repeats', type=positive,
        help='timed steps per loss (default 10 on cuda, 3 on cpu)')
    add('--memory-worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error("argument --device: 'cuda' requested but torch.cuda.is_available() "
                     f'is False (torch {torch.__version__})')
    if args.positives_per_image > args.anchors_per_image:
        parser.error(f'argument --positives-per-image: {args.positives_per_image} exceeds '
                     f'--anchors-per-image {args.anchors_per_image}')
    cuda = args.device == 'cuda'
    args.repeats = args.repeats or (20 if cuda else 5)
    args.train_repeats = args.train_repeats or (10 if cuda else 3)
    args.train_size = args.train_size or ((800, 1333) if cuda else (512, 512))
    args.dtype = list(dict.fromkeys(args.dtype))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; 1 when anything failed (see above)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None and not args.memory_worker:  # fail now, not after the whole run
        check_writable(str(args.out), '--out')
    mmdet_fn, mmdet_error = cases.load_baseline(args.device, args.mmcv_src)
    if args.memory_worker:
        return measure.memory_worker(args, mmdet_fn, mmdet_error)
    notes, failures = [], []
    if mmdet_error:
        print(f'!! {cases.MMDET} could not be loaded ({mmdet_error}); continuing without it')
        notes.append(f'{cases.MMDET} not loaded: {mmdet_error}')
        if args.mmcv_src:  # asked for, so its absence fails the run
            failures.append(f'{cases.MMDET} (--mmcv-src {args.mmcv_src}): not loaded: '
                            f'{mmdet_error}')
    bandwidth = measure.copy_bandwidth() if args.device == 'cuda' else None
    peaks, memory_error = measure.cpu_peaks(argv) if args.device == 'cpu' else (None, '')
    if memory_error:
        notes.append(f'no memory column: {memory_error}')

    report = measure.header(args, bandwidth, notes)
    probe = cases.accuracy_probe(mmdet_fn, mmdet_error, args.device)
    checks, tables = [], []
    for where, case, methods in cases.iter_cases(args, mmdet_fn, mmdet_error):
        case_checks, table, failed = measure.benchmark_case(
            where, case, methods, args, bandwidth, None if peaks is None else peaks.get(where, {}))
        checks, tables, failures = checks + case_checks, tables + table, failures + failed
    report += ['## Agreement', ''] + [f'- {c.line}' for c in checks] + [''] + probe + tables
    if args.train_step:
        try:
            train = measure.train_step(args)
        except Exception as err:  # any error: reported, and fails the run below
            error = f'{type(err).__name__}: {str(err).strip()[:300]}'
            train, failures = [f'Skipped: {error}'], failures + [f'--train-step: {error}']
        report += ['## RetinaNet R50-FPN training step', ''] + train + ['']
    print('\n' + '\n'.join(report), flush=True)
    if args.out is not None:  # its folder made by check_writable above
        args.out.write_text('\n'.join(report) + '\n')

    for check in (c for c in checks if c.ok is False):
        print(f'!!! DISAGREEMENT: {check.line}', file=sys.stderr)
    for failure in failures:
        print(f'!!! METHOD FAILED: {failure}', file=sys.stderr)
    return 1 if failures or any(c.ok is False for c in checks) else 0


if __name__ == '__main__':
    errors.run(lambda argv: sys.exit(main(argv)), prog='benchmark_loss.py')
