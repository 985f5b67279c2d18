#!/usr/bin/env python
"""Benchmark Poly-1 focal loss against mmdet's FocalLoss on RetinaNet-like inputs.

In one run, on the same inputs, this script

1. checks every method against the float64 formula on the same (rounded)
   inputs, in loss value and element-wise gradient: Poly-1 at epsilon=0 and
   mmdet's ``FocalLoss``, the fused and the naive Poly-1 at epsilon=-1, with
   the benchmark's label weights and with random per-element weights;
2. times forward + backward of each method (interleaved, median) and measures
   its peak extra memory;
3. on CUDA, relates each time to a memory-bandwidth floor measured in the same
   run;
4. optionally (``--train-step``) times a full RetinaNet training step with
   ``FocalLoss`` against one with ``Poly1FocalLoss``.

Run from the repository root::

    PYTHONPATH=. python tools/benchmark/benchmark_loss.py --device cpu --images 1 2

mmdet is imported only for the mmdet methods (and ``--train-step``), so the
script runs where only torch (and Triton) are installed. The exit status is 1,
after the report is printed, when a check disagrees, a method fails, the
``--train-step`` fails, or mmdet's FocalLoss cannot be loaded although
``--mmcv-src`` was given. This file is the command line; the benchmark itself
is the package around it (see ``tools/benchmark/__init__.py``).
"""
import argparse
import os.path as osp
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

# Run from a checkout without installing: the repository root on the path, in
# place of this folder (its module names, such as memory or report, are not
# meant to be top-level ones).
_HERE = osp.dirname(osp.abspath(__file__))
if sys.path and osp.abspath(sys.path[0] or '.') == _HERE:
    del sys.path[0]
sys.path.insert(0, osp.dirname(osp.dirname(_HERE)))

import torch  # after the path set-up above, like every import below

from tools.benchmark import agreement, cases, measure, memory, report, train_step
from tools.lib import errors


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text!r} must be a positive integer')
    return value


def _image_size(text: str) -> Tuple[int, int]:
    """'HxW' -> (H, W), both positive."""
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f'{text!r} is not HEIGHTxWIDTH, e.g. 512x512')
    return int(parts[0]), int(parts[1])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and validate the command line (argparse errors name the argument)."""
    parser = errors.ArgumentParser(prog='benchmark_loss.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=None,
                        help='default: cuda when available, else cpu')
    parser.add_argument('--images', type=_positive_int, nargs='+', default=[1, 2, 8],
                        help='batch sizes (images), each one table')
    parser.add_argument('--anchors-per-image', type=_positive_int, default=100_000)
    parser.add_argument('--classes', type=_positive_int, default=80)
    parser.add_argument('--positives-per-image', type=_positive_int, default=200)
    parser.add_argument('--dtype', nargs='+', choices=tuple(cases.DTYPES), default=['float32'])
    parser.add_argument('--repeats', type=_positive_int, default=None,
                        help='timed calls per method (default 20 on cuda, 5 on cpu)')
    parser.add_argument('--warmup', type=_positive_int, default=2,
                        help='untimed-for-the-median calls per method; the first is '
                             'reported as "first call"')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=_positive_int, default=None,
                        help='torch CPU threads (default: torch\'s). On a small, shared '
                             'machine 1 avoids OpenMP barrier stalls under contention')
    parser.add_argument('--mmcv-src', default=None,
                        help='mmcv source tree to JIT-build its CUDA focal kernel from '
                             'when mmcv CUDA ops are not importable')
    parser.add_argument('--out', type=Path, default=None,
                        help='write the markdown report here and a .json next to it')
    parser.add_argument('--train-step', action='store_true',
                        help='also time a RetinaNet training step (needs mmdet)')
    parser.add_argument('--train-images', type=_positive_int, default=2)
    parser.add_argument('--train-size', type=_image_size, default=None,
                        help='HxW (default 512x512 on cpu, 800x1333 on cuda)')
    parser.add_argument('--train-repeats', type=_positive_int, default=None,
                        help='timed steps per loss (default 10 on cuda, 3 on cpu)')
    parser.add_argument('--memory-worker', action='store_true', help=argparse.SUPPRESS)
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
    """Run the benchmark of the command line; 1 when anything failed (see above)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        baseline = cases.load_baseline(args.device, args.mmcv_src, quiet=True)
        return memory.memory_worker(cases.iter_cases(args, *baseline))
    env = report.environment(args)
    notes: List[str] = []
    print(f"# {env['command']}\n# {env['date_utc']}, torch {env['torch']}, "
          f"triton {env['triton']}, {env['device']}", flush=True)
    mmdet_fn, mmdet_error = cases.load_baseline(args.device, args.mmcv_src, quiet=False)
    if mmdet_error:
        notes.append(f'{cases.MMDET} not loaded: {mmdet_error}')
    if args.device == 'cuda':
        from mmdet_polyloss.functional import triton_kernels
        if not triton_kernels.AVAILABLE:
            notes.append('Triton kernels unavailable: the fused method runs its eager path')

    cpu_before, started = measure.busy_cpu_seconds(), time.perf_counter()
    bandwidth = measure.copy_bandwidth('cuda') if args.device == 'cuda' else None
    probe = agreement.accuracy_probe(mmdet_fn, mmdet_error, args.device)
    tables = []
    for images, dtype_name, case, methods in cases.iter_cases(args, mmdet_fn, mmdet_error):
        tables.append(measure.benchmark_case(methods, case, args, dtype_name, images,
                                             bandwidth))
        if args.out is not None:  # so far, in case the run is cut short
            report.write_report(args.out, report.render(env, args, tables, bandwidth, None,
                                                        notes, probe) + report.PARTIAL)

    train = None
    if args.train_step:
        try:
            train = train_step.train_step_benchmark(args)
        except Exception as err:  # any error: reported, and fails the run below
            train = {'error': f'{type(err).__name__}: {str(err).strip()[:300]}'}

    memory_error = memory.add_memory_columns(tables, args, mmdet_fn, mmdet_error)
    if memory_error:
        notes.append(f'no memory column: {memory_error}')
    notes.append(measure.contention_note(cpu_before, time.perf_counter() - started,
                                         args.device))
    text = report.render(env, args, tables, bandwidth, train, notes, probe)
    print('\n' + text, flush=True)
    if args.out is not None:
        report.write_report(args.out, text)
        report.write_json(args.out.with_suffix('.json'), env, args, bandwidth, notes, tables,
                          train, probe)

    failed_checks, failed_rows = report.failures(tables, train, args.mmcv_src, mmdet_error)
    for check in failed_checks:
        print(f'!!! DISAGREEMENT: {check.line()}', file=sys.stderr)
    for failure in failed_rows:
        print(f'!!! METHOD FAILED: {failure}', file=sys.stderr)
    return 1 if failed_checks or failed_rows else 0


if __name__ == '__main__':
    errors.run(lambda argv: sys.exit(main(argv)), prog='benchmark_loss.py')
