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
``--mmcv-src`` was given.
"""
import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (Callable, ContextManager, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import torch
from torch import Tensor

LossFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]

MMDET = 'mmdet FocalLoss'
FUSED = 'Poly1FocalLoss (fused)'
EAGER = 'Poly1 fused, eager (no Triton)'
NAIVE = 'Poly-1 naive autograd'
#: Baselines for the ratios, in order of preference.
BASELINES = (MMDET, NAIVE)

GAMMA, ALPHA = 2.0, 0.25
#: RetinaNet initialises the classification bias to this logit (prior p = 0.01).
PRIOR_LOGIT = -math.log((1 - 0.01) / 0.01)
IGNORED_FRACTION = 0.01
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
#: This project's methods (and the naive formula) compute in float32 from the
#: rounded inputs: loss within LOSS_RTOL of float64, and every gradient element
#: within GRAD_RTOL of it plus an atol of a fraction of the largest |gradient|
#: (per output dtype: the fp16 one covers elements that underflow even under
#: the loss scale). Measured need (CPU, 100k x 80, epsilon -1): atol fraction
#: 1e-11 (fp32, bf16), 4e-10 (fp16); a gradient halved, doubled or zeroed
#: below 1e-5 of the largest fails.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-2
GRAD_ATOL_FRACTION = {torch.float32: 1e-10, torch.bfloat16: 1e-10, torch.float16: 2e-9}
#: mmdet's FocalLoss (the baseline, not ours) computes fp16/bf16 in half
#: precision on CPU (median gradient error 5 % / 66 % here) and in fp16 in
#: mmcv's kernel: per dtype (rtol, atol fraction), loss and gradient.
BASELINE_TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 1e-3),
                       torch.bfloat16: (5e-2, 1e-2)}
#: Backward of half inputs runs under this loss scale, as AMP's does (GradScaler
#: starts at 2^16); without it most fp16 gradient elements underflow to zero.
LOSS_SCALE = {torch.float32: 1.0, torch.bfloat16: 1.0, torch.float16: 2.0 ** 16}
#: Rows per float64 reference chunk (bounded memory on 8 images).
REFERENCE_ROWS = 50_000
MIB = 2.0 ** 20


# ----------------------------------------------------------------------------- CLI


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
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=None,
                        help='default: cuda when available, else cpu')
    parser.add_argument('--images', type=_positive_int, nargs='+', default=[1, 2, 8],
                        help='batch sizes (images), each one table')
    parser.add_argument('--anchors-per-image', type=_positive_int, default=100_000)
    parser.add_argument('--classes', type=_positive_int, default=80)
    parser.add_argument('--positives-per-image', type=_positive_int, default=200)
    parser.add_argument('--dtype', nargs='+', choices=tuple(DTYPES), default=['float32'])
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


# -------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """One benchmark case: logits (leaf, requires grad), labels, weights, avg_factor."""
    pred: Tensor
    labels: Tensor
    weight: Tensor
    avg_factor: float

    @property
    def rows(self) -> int:
        return self.pred.shape[0]


def make_base_inputs(images: int, anchors: int, classes: int, positives: int,
                     seed: int) -> Tuple[Tensor, Tensor, Tensor, float]:
    """float32 logits (CPU), labels (C = background), label weights, avg_factor.

    Logits are N(prior logit, 1) like a RetinaNet head early in training;
    ``positives`` anchors per image get a random class; ~1% of the negative
    anchors are ignored (weight 0).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = images * anchors
    logits = torch.randn(rows, classes, generator=gen).add_(PRIOR_LOGIT)
    labels = torch.full((rows,), classes, dtype=torch.long)
    for image in range(images):
        index = torch.randperm(anchors, generator=gen)[:positives] + image * anchors
        labels[index] = torch.randint(0, classes, (positives,), generator=gen)
    ignored = (torch.rand(rows, generator=gen) < IGNORED_FRACTION) & (labels == classes)
    weight = (~ignored).float()
    return logits, labels, weight, float(images * positives)


def to_case(base: Tuple[Tensor, Tensor, Tensor, float], dtype: torch.dtype,
            device: str) -> Inputs:
    logits, labels, weight, avg_factor = base
    pred = logits.to(device=device, dtype=dtype, copy=True).requires_grad_(True)
    return Inputs(pred, labels.to(device), weight.to(device), avg_factor)


# ------------------------------------------------------------------------- methods


@dataclass
class Method:
    """A loss ``fn(pred, labels, weight, avg_factor)``; ``context`` wraps fwd + bwd."""
    name: str
    fn: Optional[LossFn]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    unsupported: str = ''  # why fn is None


#: (images, dtype name, inputs, methods) of one benchmark case.
Case = Tuple[int, str, Inputs, List[Method]]


def poly1(epsilon: float, implementation: str = 'auto') -> LossFn:
    """Poly-1 at ``epsilon`` as a head calls it (mean over avg_factor): the
    ``Poly1FocalLoss`` module, timed like mmdet's ``FocalLoss`` module; where
    mmdet is missing (the module registers with it), ``poly1_focal_loss``,
    which the module calls. ``implementation='reference'``: the composed
    formula through autograd (the naive method)."""
    from mmdet_polyloss.functional import poly1_focal_loss
    settings = dict(epsilon=epsilon, gamma=GAMMA, alpha=ALPHA)
    if implementation == 'auto':
        try:
            from mmdet_polyloss.losses import Poly1FocalLoss
        except Exception:  # noqa: BLE001  (no mmdet, or mmdet refusing its mmcv version)
            pass
        else:
            module = Poly1FocalLoss(use_sigmoid=True, **settings)
            return lambda pred, labels, weight, avg_factor: module(
                pred, labels, weight, avg_factor=avg_factor)

    def loss(pred: Tensor, labels: Tensor, weight: Tensor, avg_factor: float) -> Tensor:
        return poly1_focal_loss(pred, labels, weight, avg_factor=avg_factor,
                                implementation=implementation, **settings)
    return loss


@contextlib.contextmanager
def triton_disabled():
    """Route the fused path to its eager ops, forward and backward."""
    from mmdet_polyloss.functional import triton_kernels
    saved = triton_kernels.AVAILABLE
    triton_kernels.AVAILABLE = False
    try:
        yield
    finally:
        triton_kernels.AVAILABLE = saved


def prepare_mmdet(device: str, mmcv_src: Optional[str]) -> None:
    """On CUDA, make mmcv's focal op importable before mmdet is imported: mmcv's
    compiled ops, or its kernel JIT-built from ``mmcv_src`` (``mmcv_cuda_focal``)."""
    if device == 'cuda':
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import mmcv_cuda_focal
        mmcv_cuda_focal.ensure_ops(mmcv_src)


def load_mmdet_focal(device: str, mmcv_src: Optional[str]) -> LossFn:
    """mmdet's FocalLoss as its heads call it (on CUDA: mmcv's kernel). Raises
    when it cannot be loaded."""
    prepare_mmdet(device, mmcv_src)
    from mmdet.models.losses import FocalLoss
    module = FocalLoss(use_sigmoid=True, gamma=GAMMA, alpha=ALPHA)

    def loss(pred: Tensor, labels: Tensor, weight: Tensor, avg_factor: float) -> Tensor:
        return module(pred, labels, weight, avg_factor=avg_factor)
    return loss


def build_methods(device: str, mmdet_fn: Optional[LossFn], mmdet_error: str,
                  dtype: torch.dtype, epsilon: float = -1.0) -> List[Method]:
    """The compared methods for one dtype, Poly-1 at ``epsilon`` (timed at -1)."""
    if mmdet_fn is None:
        mmdet = Method(MMDET, None, unsupported=f'not loaded: {mmdet_error}')
    elif device == 'cuda' and dtype == torch.bfloat16:
        mmdet = Method(MMDET, None, unsupported="unsupported (mmcv's kernel: fp32/fp16 only)")
    else:
        mmdet = Method(MMDET, mmdet_fn)
    methods = [mmdet, Method(FUSED, poly1(epsilon))]
    if device == 'cuda':
        methods.append(Method(EAGER, poly1(epsilon), context=triton_disabled))
    methods.append(Method(NAIVE, poly1(epsilon, 'reference')))
    return methods


# ------------------------------------------------------------------ measurement


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def fwd_bwd(method: Method, case: Inputs, loss_scale: float = 1.0) -> Tensor:
    """One loss + backward (of ``loss_scale`` times it, in float32, if not 1);
    returns the (detached) loss, leaves ``pred.grad``."""
    case.pred.grad = None
    with method.context():
        loss = method.fn(case.pred, case.labels, case.weight, case.avg_factor)
        (loss if loss_scale == 1.0 else loss.float() * loss_scale).backward()
    return loss.detach()


def time_call(method: Method, case: Inputs, device: str) -> float:
    """Milliseconds of one forward + backward."""
    case.pred.grad = None
    if device == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fwd_bwd(method, case)
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end)
    else:
        begin = time.perf_counter()
        fwd_bwd(method, case)
        elapsed = (time.perf_counter() - begin) * 1e3
    case.pred.grad = None
    return elapsed


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_peak_supported() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')
        _proc_status_kib('VmHWM')
        return True
    except OSError:
        return False


def _libc():
    with contextlib.suppress(OSError):
        return ctypes.CDLL('libc.so.6')
    return None


def mmap_large_allocations() -> None:
    """Make glibc serve every allocation >= 1 MiB with its own mmap (unmapped on
    free), so that the RSS follows the live tensors rather than malloc's heap.

    Irreversible for the process, and every large temporary then page-faults
    afresh (about 1.5x slower calls here), so only the memory worker process
    sets it. Without it, 32 MB tensors (100k x 80 float32) land in malloc's
    heap and the peak RSS came out up to ~2x the live bytes, order-dependent.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, 'mallopt'):
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (also stops glibc's dynamic threshold)


def return_freed_memory_to_os() -> None:
    """``malloc_trim(0)``: return free heap pages to the OS before a measurement."""
    libc = _libc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)


def peak_extra_bytes(method: Method, case: Inputs, device: str) -> Optional[float]:
    """Peak memory of one forward + backward above what was in use before it."""
    case.pred.grad = None
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(method, case)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        return_freed_memory_to_os()
        if not cpu_peak_supported():  # resets VmHWM to the current RSS
            return None
        before = _proc_status_kib('VmRSS')  # clear_refs reset VmHWM to this
        fwd_bwd(method, case)
        extra = (_proc_status_kib('VmHWM') - before) * 1024
    case.pred.grad = None
    return float(extra)


def copy_bandwidth(device: str, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device copy bandwidth (bytes read + written per second), median of ``repeats``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times[2:])


def floor_bytes(case: Inputs) -> int:
    """Logits read once + labels read once + gradient written once."""
    logits = case.pred.numel() * case.pred.element_size()
    return 2 * logits + case.labels.numel() * case.labels.element_size()


# -------------------------------------------------------------------- agreement


@dataclass
class Check:
    """One method against the float64 formula. ``grad_worst`` is the largest
    element's error over its tolerance (<= 1 passes)."""
    label: str
    ok: Optional[bool]  # None: skipped
    loss_rel: float = float('nan')
    loss_ref: float = float('nan')
    grad_worst: float = float('nan')
    grad_median_rel: float = float('nan')
    grad_max: float = float('nan')
    note: str = ''

    def line(self) -> str:
        if self.ok is None:
            return f'[SKIP] {self.label}: {self.note}'
        if math.isnan(self.loss_ref):
            return f'[MISMATCH !!!] {self.label}: {self.note}'
        tag = '[OK]' if self.ok else '[MISMATCH !!!]'
        return (f'{tag} {self.label}: loss rel. error {self.loss_rel:.2g} (loss {self.loss_ref:.6g});'
                f' gradient: worst element at {self.grad_worst:.2g} of its tolerance, median rel.'
                f' error {self.grad_median_rel:.2g} (max |grad| {self.grad_max:.3g})'
                + (f' {self.note}' if self.note else ''))


def loss_and_grad(method: Method, case: Inputs) -> Tuple[Tensor, Tensor]:
    """Loss and gradient in float64; half inputs backpropagate under LOSS_SCALE."""
    for scale in dict.fromkeys((LOSS_SCALE[case.pred.dtype], 1.0)):
        loss = fwd_bwd(method, case, scale)
        grad = case.pred.grad.double() / scale
        case.pred.grad = None
        if bool(torch.isfinite(grad).all()):  # else overflow: unscaled, as GradScaler backs off
            break
    return loss.double(), grad


def float64_reference(case: Inputs, epsilon: float) -> Tuple[Tensor, Tensor]:
    """Loss and gradient of the composed Poly-1 formula (autograd) in float64,
    on the case's rounded logits, in chunks of rows; divided by avg_factor +
    fp32 eps, as mmdet and this project divide."""
    from mmdet_polyloss.functional import poly1_focal_loss
    divisor = case.avg_factor + torch.finfo(torch.float32).eps
    grad = torch.empty(case.pred.shape, dtype=torch.float64, device=case.pred.device)
    total = torch.zeros((), dtype=torch.float64, device=case.pred.device)
    for start in range(0, case.rows, REFERENCE_ROWS):
        rows = slice(start, start + REFERENCE_ROWS)
        x = case.pred.detach()[rows].double().requires_grad_()
        loss = poly1_focal_loss(x, case.labels[rows], case.weight[rows].double(),
                                epsilon=epsilon, gamma=GAMMA, alpha=ALPHA, reduction='sum',
                                implementation='reference') / divisor
        grad[rows] = torch.autograd.grad(loss, x)[0]
        total += loss.detach()
    return total, grad


def compare(label: str, method: Method, reference: Tuple[Tensor, Tensor], case: Inputs,
            tolerances: Tuple[float, float, float]) -> Check:
    """``method`` against the float64 ``reference`` (loss, gradient); tolerances
    are (loss rtol, gradient rtol, gradient atol as a fraction of max |grad|)."""
    if method.fn is None:
        return Check(label, None, note=f'{method.name} {method.unsupported}')
    loss_rtol, grad_rtol, atol_fraction = tolerances
    ref_loss, ref_grad = reference
    try:
        loss, grad = loss_and_grad(method, case)
    except Exception as err:  # noqa: BLE001  (a crash is a failed check, not an abort)
        return Check(label, False, note=f'raised {type(err).__name__}: {err}'[:200])
    grad_max = ref_grad.abs().max().item()
    error = (grad - ref_grad).abs()
    tolerance = grad_rtol * ref_grad.abs() + atol_fraction * grad_max
    worst = (error / tolerance).max().item() if grad_max > 0 else error.max().item()
    nonzero = ref_grad != 0
    median_rel = (error[nonzero] / ref_grad[nonzero].abs()).median().item() \
        if nonzero.any() else 0.0
    loss_rel = _relative_error(loss.item(), ref_loss.item())
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    ok = finite and loss_rel <= loss_rtol and worst <= 1.0
    return Check(label, ok, loss_rel, ref_loss.item(), worst, median_rel, grad_max)


def element_weights(case: Inputs, seed: int) -> Inputs:
    """The case with per-element (N, C) weights: its label weights times U(0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    factors = 0.5 + torch.rand(case.pred.shape, generator=gen)
    return Inputs(case.pred, case.labels, case.weight[:, None] * factors.to(case.weight.device),
                  case.avg_factor)


def agreement_checks(methods: List[Method], case: Inputs, where: str,
                     seed: int = 0) -> List[Check]:
    """Each method against float64: mmdet FocalLoss and Poly-1 at epsilon=0, the
    fused (and eager) and naive Poly-1 at epsilon=-1; with the label weights,
    then with per-element weights."""
    by_name = {m.name: m for m in methods}
    dtype = case.pred.dtype
    ours = (LOSS_RTOL, GRAD_RTOL, GRAD_ATOL_FRACTION[dtype])
    rtol, atol_fraction = BASELINE_TOLERANCES[dtype]
    baseline = (rtol + atol_fraction, rtol, atol_fraction)
    checks = []
    for weights, weighted in (('label weights', case),
                              ('element weights', element_weights(case, seed))):
        at_zero = float64_reference(weighted, 0.0)
        checks.append(compare(f'{where}, {weights}: {MMDET} vs float64 (epsilon=0)',
                              by_name[MMDET], at_zero, weighted, baseline))
        checks.append(compare(f'{where}, {weights}: {FUSED} at epsilon=0 vs float64',
                              Method(FUSED, poly1(0.0)), at_zero, weighted, ours))
        del at_zero
        at_minus_one = float64_reference(weighted, -1.0)
        for name in (FUSED, EAGER, NAIVE):
            if name in by_name:
                checks.append(compare(f'{where}, {weights}: {name} at epsilon=-1 vs float64',
                                      by_name[name], at_minus_one, weighted, ours))
    return checks


#: |logit| of the accuracy probe: a background element at +logit (a confident
#: false positive) and a positive one at -logit (a confident miss).
PROBE_LOGITS = (4.0, 8.0, 12.0, 16.0, 20.0, 40.0)


@dataclass
class ProbeRow:
    """One element's focal loss (epsilon 0) in float64, and each method's
    relative error in fp32: {method: (loss error, gradient error)}."""
    target: str
    logit: float
    loss64: float
    grad64: float
    errors: Dict[str, Tuple[float, float]]


def _relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if reference else abs(value)


def accuracy_probe(mmdet_fn: Optional[LossFn], mmdet_error: str,
                   device: str) -> List[ProbeRow]:
    """Focal loss (Poly-1 at epsilon 0) of single fp32 elements at large |logit|,
    each method against the float64 formula."""
    from mmdet_polyloss.functional import poly1_focal_loss
    methods = build_methods(device, mmdet_fn, mmdet_error, torch.float32, epsilon=0.0)
    # The methods divide by avg_factor + fp32 eps, as mmdet does; so does the reference.
    divisor = 1.0 + torch.finfo(torch.float32).eps
    rows = []
    for target, sign, label in (('background', 1.0, 1), ('positive', -1.0, 0)):
        for logit in PROBE_LOGITS:
            x64 = torch.tensor([[sign * logit]], dtype=torch.float64, requires_grad=True)
            labels = torch.tensor([label])
            ref = poly1_focal_loss(x64, labels, epsilon=0.0, gamma=GAMMA, alpha=ALPHA,
                                   reduction='sum', implementation='reference') / divisor
            ref.backward()
            errors = {}
            for method in methods:
                if method.fn is None:
                    continue
                case = Inputs(x64.detach().float().to(device).requires_grad_(),
                              labels.to(device), torch.ones(1, device=device), 1.0)
                loss, grad = loss_and_grad(method, case)
                errors[method.name] = (_relative_error(loss.item(), ref.item()),
                                       _relative_error(grad.item(), x64.grad.item()))
            rows.append(ProbeRow(target, sign * logit, ref.item(), x64.grad.item(), errors))
    return rows


# ------------------------------------------------------------------- benchmark


@dataclass
class Row:
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


def _run_guarded(row: Row, action: Callable[[], None], device: str) -> None:
    """Run ``action``; a failure (e.g. out of memory) becomes the row's note."""
    if row.note:
        return
    try:
        action()
    except Exception as err:  # noqa: BLE001  (report and carry on)
        row.note = f'failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}'
        if device == 'cuda':
            torch.cuda.empty_cache()


def benchmark_case(methods: List[Method], case: Inputs, args: argparse.Namespace,
                   dtype_name: str, images: int, bandwidth: Optional[float]) -> Table:
    """First calls, agreement checks, then interleaved timing (memory comes later:
    :func:`measure_memory`)."""
    device = args.device
    rows = {m.name: Row(m.name, note=m.unsupported) for m in methods}
    runnable = [m for m in methods if m.fn is not None]

    for method in runnable:  # first call (Triton compile / caches), before anything else
        row = rows[method.name]
        _run_guarded(row, lambda: setattr(row, 'first_ms', time_call(method, case, device)),
                     device)

    where = f'{dtype_name}, {images} image(s)'
    checks = agreement_checks(methods, case, where, args.seed)
    for check in checks:
        print(check.line(), flush=True)
    gc.collect()
    if device == 'cuda':
        torch.cuda.empty_cache()

    runnable = [m for m in runnable if not rows[m.name].note]
    for _ in range(args.warmup - 1):
        for method in runnable:
            _run_guarded(rows[method.name], lambda: time_call(method, case, device), device)
    for _ in range(args.repeats):  # interleaved, so drift hits every method alike
        for method in runnable:
            row = rows[method.name]
            _run_guarded(row, lambda: row.times_ms.append(time_call(method, case, device)),
                         device)
    for method in runnable:
        row = rows[method.name]
        if row.times_ms and not row.note:
            row.median_ms = statistics.median(row.times_ms)

    baseline, baseline_note = _pick_baseline(rows)
    floor_ms = floor_bytes(case) / bandwidth * 1e3 if bandwidth else None
    return Table(dtype_name, images, case.rows, case.pred.shape[1],
                 int(case.avg_factor), baseline, baseline_note, floor_ms,
                 list(rows.values()), checks)


def measure_memory(methods: List[Method], case: Inputs,
                   device: str) -> Dict[str, Optional[float]]:
    """Peak extra MiB of each method (one call to warm up, one measured);
    None where it is unsupported, failed or cannot be measured."""
    peaks: Dict[str, Optional[float]] = {}
    for method in methods:
        peaks[method.name] = None
        if method.fn is None:
            continue
        try:
            time_call(method, case, device)
            peaks[method.name] = _mib(peak_extra_bytes(method, case, device))
        except Exception:  # noqa: BLE001  (the timing phase already reported it)
            if device == 'cuda':
                torch.cuda.empty_cache()
    return peaks


def apply_memory(table: Table, peaks: Dict[str, Optional[float]]) -> None:
    """Put the peaks into the timed rows and compute the table's ratios."""
    rows = {row.method: row for row in table.rows}
    for row in table.rows:
        if row.median_ms is not None:
            row.peak_extra_mib = peaks.get(row.method)
    _fill_ratios(table.rows, rows.get(table.baseline), table.floor_ms)


MEMORY_TAG = 'MEMORY_JSON '


def memory_worker(cases: Iterator[Case]) -> int:
    """``--memory-worker``: CPU peaks in a fresh process whose malloc mmaps every
    large buffer (see :func:`mmap_large_allocations`); prints one JSON line."""
    mmap_large_allocations()
    peaks = {_case_key(images, dtype_name): measure_memory(methods, case, 'cpu')
             for images, dtype_name, case, methods in cases}
    print(MEMORY_TAG + json.dumps(peaks), flush=True)
    return 0


def cpu_memory_in_subprocess(args: argparse.Namespace) -> Tuple[Dict[str, dict], str]:
    """Run :func:`memory_worker` on the same inputs; (peaks by case, error or '')."""
    command = [sys.executable, str(Path(__file__).resolve()), '--memory-worker',
               '--device', 'cpu', '--images', *map(str, args.images),
               '--anchors-per-image', str(args.anchors_per_image),
               '--classes', str(args.classes),
               '--positives-per-image', str(args.positives_per_image),
               '--dtype', *args.dtype, '--seed', str(args.seed)]
    if args.threads:
        command += ['--threads', str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(MEMORY_TAG):
            return json.loads(line[len(MEMORY_TAG):]), ''
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']
    return {}, f'memory worker exited {done.returncode}: {tail[0][:200]}'


def _case_key(images: int, dtype_name: str) -> str:
    return f'{images}/{dtype_name}'


def _mib(nbytes: Optional[float]) -> Optional[float]:
    return None if nbytes is None else nbytes / MIB


def _pick_baseline(rows: Dict[str, Row]) -> Tuple[Optional[str], str]:
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


# ------------------------------------------------------------------ train step


def train_step_benchmark(args: argparse.Namespace) -> Dict[str, object]:
    """Median wall time of a RetinaNet R50-FPN training step, FocalLoss vs
    Poly1FocalLoss(epsilon=-1) in ``bbox_head.loss_cls``, same weights."""
    prepare_mmdet(args.device, args.mmcv_src)
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules

    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'retinanet_bench.py'
        path.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                        "custom_imports = dict(imports=['mmdet_polyloss'], "
                        "allow_failed_imports=False)\n"
                        "model = dict(backbone=dict(init_cfg=None))\n")
        cfg = Config.fromfile(str(path))
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(args.device).train()
    common = dict(use_sigmoid=True, gamma=GAMMA, alpha=ALPHA, loss_weight=1.0)
    losses = {'FocalLoss': MODELS.build(dict(type='FocalLoss', **common)),
              'Poly1FocalLoss(epsilon=-1)': MODELS.build(
                  dict(type='Poly1FocalLoss', epsilon=-1.0, **common))}
    height, width = args.train_size
    batch = demo_mm_inputs(batch_size=args.train_images, image_shapes=(3, height, width),
                           num_items=[5] * args.train_images, num_classes=80)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(loss_module: torch.nn.Module) -> float:
        model.load_state_dict(initial)
        optimizer.state.clear()
        optimizer.zero_grad(set_to_none=True)
        model.bbox_head.loss_cls = loss_module
        synchronize(args.device)
        begin = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        parts = model.loss(data['inputs'], data['data_samples'])
        total, _ = model.parse_losses(parts)  # what a training loop backpropagates
        total.backward()
        optimizer.step()
        synchronize(args.device)
        return (time.perf_counter() - begin) * 1e3

    times: Dict[str, List[float]] = {name: [] for name in losses}
    first: Dict[str, float] = {}
    for repeat in range(args.warmup + args.train_repeats):
        for name, module in losses.items():
            elapsed = step(module)
            if repeat == 0:
                first[name] = elapsed
            elif repeat >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(t) for name, t in times.items()}
    focal, poly = medians['FocalLoss'], medians['Poly1FocalLoss(epsilon=-1)']
    return dict(images=args.train_images, size=f'{height}x{width}', repeats=args.train_repeats,
                first_ms=first, median_ms=medians, times_ms=times, ratio=poly / focal)


# ---------------------------------------------------------------------- report


def _fmt(value: Optional[float], digits: int = 3, suffix: str = '') -> str:
    if value is None:
        return '—'
    return f'{value:.{digits}g}{suffix}' if abs(value) < 10 ** digits else f'{value:.0f}{suffix}'


def environment(args: argparse.Namespace) -> Dict[str, str]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = 'not installed'
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
    else:
        device = f'{_cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)'
    prefix = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get('PYTHONPATH') else ''
    return dict(command=prefix + 'python ' + shlex.join(sys.argv),
                date_utc=datetime.datetime.now(datetime.timezone.utc).strftime(
                    '%Y-%m-%d %H:%M UTC'),
                torch=torch.__version__, triton=triton_version,
                python=platform.python_version(), device=device)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or 'CPU'


def render(env: Dict[str, str], args: argparse.Namespace, tables: List[Table],
           bandwidth: Optional[float], train: Optional[Dict[str, object]],
           notes: List[str], probe: Sequence[ProbeRow] = ()) -> str:
    """The markdown report."""
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
    lines += [f'- {note}' for note in notes] + ([''] if notes else [])
    lines += ['## Agreement', ''] + [f'- {c.line()}' for t in tables for c in t.checks] + ['']
    if probe:
        names = list(probe[0].errors)
        lines += ['## Accuracy at large logits (fp32, focal loss = Poly-1 at epsilon 0)', '',
                  'One element at a time, relative error of the loss / of its gradient '
                  'against the float64 formula.', '',
                  '| target | logit | float64 loss | ' + ' | '.join(names) + ' |',
                  '|---|---:|---:|' + '---:|' * len(names)]
        for row in probe:
            cells = [f'{row.errors[n][0]:.1e} / {row.errors[n][1]:.1e}' for n in names]
            lines.append(f'| {row.target} | {row.logit:g} | {row.loss64:.6g} | '
                         + ' | '.join(cells) + ' |')
        lines.append('')
    for table in tables:
        lines += [f'## {table.dtype}, {table.images} image(s): {table.rows_n} x {table.classes}, '
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
        lines.append('')
    if train is not None:
        lines += ['## RetinaNet R50-FPN training step', '']
        if 'error' in train:
            lines += [f"Skipped: {train['error']}", '']
        else:
            lines += [f"{train['images']} image(s) of {train['size']}, demo_mm_inputs, 80 classes;"
                      ' data_preprocessor + model.loss + backward + SGD step; median of '
                      f"{train['repeats']} interleaved steps after {args.warmup} warm-up.", '',
                      '| loss_cls | first step ms | median ms |', '|---|---:|---:|']
            for name, median in train['median_ms'].items():
                lines.append(f"| {name} | {train['first_ms'][name]:.0f} | {median:.0f} |")
            lines += ['', f"Poly1FocalLoss / FocalLoss step time: {train['ratio']:.3f}", '']
    return '\n'.join(lines)


# ------------------------------------------------------------------------ main


def write_report(path: Path, report: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report + '\n')


def busy_cpu_seconds() -> Optional[Tuple[float, float]]:
    """(CPU seconds all processes have used since boot, of which this process and
    its children), from /proc/stat; None where there is no /proc."""
    try:
        with open('/proc/stat') as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')
    own = sum(getattr(resource.getrusage(who), key)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for key in ('ru_utime', 'ru_stime'))
    return busy, own


def contention_note(before: Optional[Tuple[float, float]], wall_s: float,
                    device: str) -> str:
    """How much CPU other processes used during the run; on CPU a warning when
    it was more than a tenth of the machine (many small parallel ops then
    stall on descheduled threads, by 10x and more on 2 cores)."""
    after = busy_cpu_seconds()
    if before is None or after is None:
        return 'CPU use of other processes during the run: unknown (no /proc/stat).'
    cpus = os.cpu_count() or 1
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
    share = others / (wall_s * cpus) if wall_s > 0 else 0.0
    note = (f'Other processes used {others:.0f} CPU-seconds during the {wall_s:.0f} s run '
            f'({share:.0%} of {cpus} CPUs; {torch.get_num_threads()} torch threads).')
    if device == 'cpu' and share > 0.1:
        note += (' **CPU timings are not reliable: rerun on an idle machine (or with '
                 '--threads 1).**')
    return note


def iter_cases(args: argparse.Namespace, mmdet_fn: Optional[LossFn],
               mmdet_error: str) -> Iterator[Case]:
    """Every size x dtype, the same inputs each time it is called."""
    for images in args.images:
        base = make_base_inputs(images, args.anchors_per_image, args.classes,
                                args.positives_per_image, args.seed)
        for dtype_name in args.dtype:
            dtype = DTYPES[dtype_name]
            yield (images, dtype_name, to_case(base, dtype, args.device),
                   build_methods(args.device, mmdet_fn, mmdet_error, dtype))
            if args.device == 'cuda':
                torch.cuda.empty_cache()
        del base
        gc.collect()


def load_baseline(args: argparse.Namespace, quiet: bool) -> Tuple[Optional[LossFn], str]:
    """mmdet's FocalLoss for ``args.device``, or (None, why not)."""
    try:
        return load_mmdet_focal(args.device, args.mmcv_src), ''
    except Exception as err:  # noqa: BLE001  (no mmdet / mmcv, or a failed JIT build)
        error = f'{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}'
        if not quiet:
            print(f'!! {MMDET} could not be loaded ({error}); continuing without it',
                  flush=True)
        return None, error


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        return memory_worker(iter_cases(args, *load_baseline(args, quiet=True)))
    env = environment(args)
    notes: List[str] = []
    print(f"# {env['command']}\n# {env['date_utc']}, torch {env['torch']}, "
          f"triton {env['triton']}, {env['device']}", flush=True)
    mmdet_fn, mmdet_error = load_baseline(args, quiet=False)
    if mmdet_error:
        notes.append(f'{MMDET} not loaded: {mmdet_error}')
    if args.device == 'cuda':
        from mmdet_polyloss.functional import triton_kernels
        if not triton_kernels.AVAILABLE:
            notes.append('Triton kernels unavailable: the fused method runs its eager path')

    cpu_before, started = busy_cpu_seconds(), time.perf_counter()
    bandwidth = copy_bandwidth('cuda') if args.device == 'cuda' else None
    probe = accuracy_probe(mmdet_fn, mmdet_error, args.device)
    tables = []
    for images, dtype_name, case, methods in iter_cases(args, mmdet_fn, mmdet_error):
        tables.append(benchmark_case(methods, case, args, dtype_name, images, bandwidth))
        if args.out is not None:  # so far, in case the run is cut short
            write_report(args.out, render(env, args, tables, bandwidth, None, notes, probe)
                         + '\n\n(Partial: the run had not finished; memory columns come last.)')

    train = None
    if args.train_step:
        try:
            train = train_step_benchmark(args)
        except Exception as err:  # noqa: BLE001
            train = {'error': f'{type(err).__name__}: {str(err).strip()[:300]}'}

    # Memory after all timing. On CPU in a fresh process: see mmap_large_allocations.
    if args.device == 'cpu':
        peaks, error = cpu_memory_in_subprocess(args)
        if error:
            notes.append(f'no memory column: {error}')
        for table in tables:
            apply_memory(table, peaks.get(_case_key(table.images, table.dtype), {}))
    else:
        for table, (_, _, case, methods) in zip(tables, iter_cases(args, mmdet_fn,
                                                                   mmdet_error)):
            apply_memory(table, measure_memory(methods, case, args.device))

    notes.append(contention_note(cpu_before, time.perf_counter() - started, args.device))
    report = render(env, args, tables, bandwidth, train, notes, probe)
    print('\n' + report, flush=True)
    if args.out is not None:
        write_report(args.out, report)
        args.out.with_suffix('.json').write_text(json.dumps(
            dict(env=env, args={k: (str(v) if isinstance(v, Path) else v)
                                for k, v in vars(args).items()},
                 copy_bandwidth_bytes_per_s=bandwidth, notes=notes,
                 tables=[asdict(t) for t in tables], train_step=train,
                 accuracy_probe=[asdict(r) for r in probe]), indent=1) + '\n')

    failed_checks = [c for t in tables for c in t.checks if c.ok is False]
    failed_rows = [f'{t.dtype}/{t.images}: {r.method}: {r.note}' for t in tables for r in t.rows
                   if r.note.startswith('failed')]
    # What was asked for and did not run fails the run too: the training step,
    # and the mmdet baseline when its kernel source was given (a GPU check).
    if train is not None and 'error' in train:
        failed_rows.append(f"--train-step: {train['error']}")
    if args.mmcv_src and mmdet_error:
        failed_rows.append(f'{MMDET} (--mmcv-src {args.mmcv_src}): not loaded: {mmdet_error}')
    for check in failed_checks:
        print(f'!!! DISAGREEMENT: {check.line()}', file=sys.stderr)
    for failure in failed_rows:
        print(f'!!! METHOD FAILED: {failure}', file=sys.stderr)
    return 1 if failed_checks or failed_rows else 0


if __name__ == '__main__':
    sys.exit(main())
