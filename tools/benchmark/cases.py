"""The benchmark's RetinaNet-like inputs, its methods, and their checks against float64.
mmdet and mmdet_polyloss are imported late: on CUDA mmcv's focal op must be prepared
before mmdet is first imported (:func:`load_baseline`)."""
import argparse
import contextlib
import functools
import gc
import math
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, List, Optional, Tuple
from unittest import mock

import torch
from torch import Tensor

from tools.lib.errors import UserError

LossFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]  # (pred, labels, weight, avg_factor)
MMDET = 'mmdet FocalLoss'
FUSED = 'Poly1FocalLoss (fused)'
UNCHECKED = 'Poly1FocalLoss (fused, value checks off)'  # no host sync per call
EAGER = 'Poly1 fused, eager (no Triton)'
NAIVE = 'Poly-1 naive autograd'
GAMMA, ALPHA = 2.0, 0.25
PRIOR_LOGIT = -math.log((1 - 0.01) / 0.01)  # RetinaNet's initial classification bias
IGNORED_FRACTION = 0.01
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
#: This project's methods (float32 math on the rounded inputs): loss within LOSS_RTOL, each
#: gradient element within GRAD_RTOL plus a fraction of the largest |gradient| (needed at
#: 100k x 80: 1e-11, fp16 4e-10; a gradient zeroed below 1e-5 of the largest fails).
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-2
GRAD_ATOL_FRACTION = {torch.float32: 1e-10, torch.bfloat16: 1e-10, torch.float16: 2e-9}
#: mmdet's FocalLoss computes half inputs in half precision: (rtol, atol fraction).
BASELINE_TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 1e-3),
                       torch.bfloat16: (5e-2, 1e-2)}
#: AMP's initial loss scale for half inputs, without which most fp16 gradients underflow.
LOSS_SCALE = {torch.float32: 1.0, torch.bfloat16: 1.0, torch.float16: 2.0 ** 16}
REFERENCE_ROWS = 50_000  # per float64 chunk
#: |logit| of the probe: background at +logit (false positive), positive at -logit (miss).
PROBE_LOGITS = (4.0, 8.0, 12.0, 16.0, 20.0, 40.0)


@dataclass
class Inputs:
    """One case: logits (a leaf that requires grad), labels, weights, avg_factor."""
    pred: Tensor
    labels: Tensor
    weight: Tensor
    avg_factor: float


@dataclass
class Method:
    """A loss ``fn`` (None: ``unsupported`` says why); ``context`` wraps fwd + bwd."""
    name: str
    fn: Optional[LossFn]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    unsupported: str = ''


@dataclass
class Check:
    """One method against float64 (``ok`` None: skipped) and its report line."""
    ok: Optional[bool]
    line: str


def make_case(images: int, anchors: int, classes: int, positives: int, seed: int,
              dtype: torch.dtype, device: str) -> Inputs:
    """Logits ~ N(prior, 1) drawn in float32 and rounded to ``dtype``, labels (``positives``
    random classes per image, else background: ``classes``), weights (~1% of the
    background 0) and avg_factor (the positives), the same for every dtype and device."""
    gen = torch.Generator().manual_seed(seed)
    rows = images * anchors
    try:
        logits = torch.randn(rows, classes, generator=gen).add_(PRIOR_LOGIT)
    except RuntimeError as error:  # "DefaultCPUAllocator: can't allocate memory: ..."
        raise UserError(f'{images} image(s) x --anchors-per-image {anchors} x --classes '
                        f'{classes}: {rows * classes * 4 / 1e9:.3g} GB of float32 logits '
                        f'cannot be allocated ({str(error).splitlines()[0][:200]})') from None
    labels = torch.full((rows,), classes, dtype=torch.long)
    for image in range(images):
        index = torch.randperm(anchors, generator=gen)[:positives] + image * anchors
        labels[index] = torch.randint(0, classes, (positives,), generator=gen)
    ignored = (torch.rand(rows, generator=gen) < IGNORED_FRACTION) & (labels == classes)
    return Inputs(logits.to(device, dtype).requires_grad_(), labels.to(device),
                  (~ignored).float().to(device), float(images * positives))


def fwd_bwd(method: Method, case: Inputs, loss_scale: float = 1.0) -> Tensor:
    """The detached loss, after backward of ``loss_scale`` times it (float32 unless 1)."""
    case.pred.grad = None
    with method.context():
        loss = method.fn(case.pred, case.labels, case.weight, case.avg_factor)
        (loss if loss_scale == 1.0 else loss.float() * loss_scale).backward()
    return loss.detach()


def module_loss(module: torch.nn.Module) -> LossFn:
    return lambda pred, labels, weight, avg_factor: module(
        pred, labels, weight, avg_factor=avg_factor)


def poly1(epsilon: float, naive: bool = False) -> LossFn:
    """``Poly1FocalLoss`` at ``epsilon``, or (``naive``) its formula through autograd."""
    if naive:
        from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path
        return lambda pred, labels, weight, avg_factor: _polyn_focal_loss_on_path(
            'reference', pred, labels, weight, epsilons=(epsilon,), avg_factor=avg_factor,
            gamma=GAMMA, alpha=ALPHA)
    from mmdet_polyloss.losses import Poly1FocalLoss
    return module_loss(Poly1FocalLoss(use_sigmoid=True, epsilon=epsilon, gamma=GAMMA,
                                      alpha=ALPHA))


def load_baseline(device: str, mmcv_src: Optional[str]) -> Tuple[Optional[LossFn], str]:
    """mmdet's FocalLoss as its heads call it, or (None, why it cannot be loaded). On
    CUDA mmcv's focal op first: compiled, or JIT-built from ``mmcv_src``."""
    try:
        if device == 'cuda':
            from tools.dev import mmcv_cuda_focal
            mmcv_cuda_focal.ensure_ops(mmcv_src)
        from mmdet.models.losses import FocalLoss
        module = FocalLoss(use_sigmoid=True, gamma=GAMMA, alpha=ALPHA)
    except Exception as err:  # any error: no mmdet / mmcv, or a failed JIT build
        return None, f'{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}'
    return module_loss(module), ''


@contextlib.contextmanager
def value_checks_off() -> Iterator[None]:
    """The package's public switch off for a call, then back as it was."""
    from mmdet_polyloss.functional import set_value_checks
    previous = set_value_checks(False)
    try:
        yield
    finally:
        set_value_checks(previous)


def build_methods(device: str, mmdet_fn: Optional[LossFn], mmdet_error: str,
                  dtype: torch.dtype, epsilon: float = -1.0) -> List[Method]:
    """The compared methods for one dtype, Poly-1 at ``epsilon``."""
    from mmdet_polyloss.functional import triton_kernels
    if mmdet_fn is None:
        mmdet = Method(MMDET, None, unsupported=f'not loaded: {mmdet_error}')
    elif device == 'cuda' and dtype == torch.bfloat16:
        mmdet = Method(MMDET, None, unsupported="unsupported (mmcv's kernel: fp32/fp16 only)")
    else:
        mmdet = Method(MMDET, mmdet_fn)
    methods = [mmdet, Method(FUSED, poly1(epsilon)),
               Method(UNCHECKED, poly1(epsilon), value_checks_off)]
    if device == 'cuda':  # the fused path on its eager ops, forward and backward
        no_triton = functools.partial(mock.patch.object, triton_kernels, 'AVAILABLE', False)
        methods.append(Method(EAGER, poly1(epsilon), no_triton))
    return methods + [Method(NAIVE, poly1(epsilon, naive=True))]


def iter_cases(args: argparse.Namespace, mmdet_fn: Optional[LossFn],
               mmdet_error: str) -> Iterator[Tuple[str, Inputs, List[Method]]]:
    """('dtype, N image(s)', inputs, methods) of every size x dtype, the same every time."""
    for images in args.images:
        for name in args.dtype:
            yield (f'{name}, {images} image(s)',
                   make_case(images, args.anchors_per_image, args.classes,
                             args.positives_per_image, args.seed, DTYPES[name], args.device),
                   build_methods(args.device, mmdet_fn, mmdet_error, DTYPES[name]))
            gc.collect()
            torch.cuda.empty_cache()  # a no-op on a CPU run


def relative_error(value: Tensor, reference: Tensor) -> float:
    value, reference = value.item(), reference.item()
    return abs(value - reference) / abs(reference) if reference else abs(value)


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
    """Loss and gradient of the formula in float64 on the case's rounded logits, divided
    by avg_factor + fp32 eps as the losses do."""
    from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path
    divisor = case.avg_factor + torch.finfo(torch.float32).eps
    grad = torch.empty(case.pred.shape, dtype=torch.float64, device=case.pred.device)
    total = torch.zeros((), dtype=torch.float64, device=case.pred.device)
    for start in range(0, case.pred.shape[0], REFERENCE_ROWS):
        rows = slice(start, start + REFERENCE_ROWS)
        x = case.pred.detach()[rows].double().requires_grad_()
        loss = _polyn_focal_loss_on_path(
            'reference', x, case.labels[rows], case.weight[rows].double(), epsilons=(epsilon,),
            gamma=GAMMA, alpha=ALPHA, reduction='sum') / divisor
        grad[rows] = torch.autograd.grad(loss, x)[0]
        total += loss.detach()
    return total, grad


def compare(label: str, method: Method, reference: Tuple[Tensor, Tensor], case: Inputs,
            tolerances: Tuple[float, float, float]) -> Check:
    """``method`` against float64 (loss, gradient) within (loss rtol, gradient rtol,
    gradient atol as a fraction of the largest |gradient|)."""
    if method.fn is None:
        return Check(None, f'[SKIP] {label}: {method.name} {method.unsupported}')
    loss_rtol, grad_rtol, atol_fraction = tolerances
    ref_loss, ref_grad = reference
    try:
        loss, grad = loss_and_grad(method, case)
    except Exception as err:  # any error: a crash is a failed check, not an abort
        return Check(False, f'[MISMATCH !!!] {label}: '
                     + f'raised {type(err).__name__}: {err}'[:200])
    grad_max = ref_grad.abs().max().item()
    error = (grad - ref_grad).abs()
    # Stored in the input dtype under LOSS_SCALE, no gradient can be closer than half
    # the spacing of that dtype's subnormals, unscaled (it decides for fp16 at 8 images).
    info = torch.finfo(case.pred.dtype)
    rounding = info.smallest_normal * info.eps / 2 / LOSS_SCALE[case.pred.dtype]
    tolerance = grad_rtol * ref_grad.abs() + max(atol_fraction * grad_max, rounding)
    worst = (error / tolerance).max().item() if grad_max > 0 else error.max().item()
    relative = (error / ref_grad.abs())[ref_grad != 0]
    median_rel = relative.median().item() if relative.numel() else 0.0
    loss_rel = relative_error(loss, ref_loss)
    ok = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all()) \
        and loss_rel <= loss_rtol and worst <= 1.0
    return Check(ok, f"{'[OK]' if ok else '[MISMATCH !!!]'} {label}: loss rel. error "
                 f'{loss_rel:.2g} (loss {ref_loss.item():.6g}); gradient: worst element at '
                 f'{worst:.2g} of its tolerance, median rel. error {median_rel:.2g} '
                 f'(max |grad| {grad_max:.3g})')


def agreement_checks(methods: List[Method], case: Inputs, where: str,
                     seed: int = 0) -> List[Check]:
    """mmdet's FocalLoss and the fused Poly-1 at epsilon=0, every Poly-1 method at -1;
    with the label weights, then per element (the label weights times U(0.5, 1.5))."""
    by_name = {m.name: m for m in methods}
    rtol, atol_fraction = BASELINE_TOLERANCES[case.pred.dtype]
    baseline = (rtol + atol_fraction, rtol, atol_fraction)
    ours = (LOSS_RTOL, GRAD_RTOL, GRAD_ATOL_FRACTION[case.pred.dtype])
    factors = 0.5 + torch.rand(case.pred.shape, generator=torch.Generator().manual_seed(seed))
    per_element = Inputs(case.pred, case.labels,
                         case.weight[:, None] * factors.to(case.weight.device), case.avg_factor)
    checks = []
    for weights, weighted in (('label weights', case), ('element weights', per_element)):
        label = f'{where}, {weights}: '
        at_zero = float64_reference(weighted, 0.0)
        checks += [compare(f'{label}{MMDET} vs float64 (epsilon=0)', by_name[MMDET], at_zero,
                           weighted, baseline),
                   compare(f'{label}{FUSED} at epsilon=0 vs float64', Method(FUSED, poly1(0.0)),
                           at_zero, weighted, ours)]
        del at_zero
        at_minus_one = float64_reference(weighted, -1.0)
        checks += [compare(f'{label}{name} at epsilon=-1 vs float64', by_name[name],
                           at_minus_one, weighted, ours)
                   for name in (FUSED, UNCHECKED, EAGER, NAIVE) if name in by_name]
    return checks


def accuracy_probe(mmdet_fn: Optional[LossFn], mmdet_error: str, device: str) -> List[str]:
    """The report's table of each method's relative error of the loss / of its gradient,
    focal loss (Poly-1 at epsilon 0) of single fp32 elements at large |logit|."""
    methods = [m for m in build_methods(device, mmdet_fn, mmdet_error, torch.float32, 0.0)
               if m.fn is not None]
    lines = ['## Accuracy at large logits (fp32, focal loss = Poly-1 at epsilon 0)', '',
             'One element at a time, relative error of the loss / of its gradient against the '
             'float64 formula.', '',
             '| target | logit | float64 loss | ' + ' | '.join(m.name for m in methods) + ' |',
             '|---|---:|---:|' + '---:|' * len(methods)]
    for target, sign, label in (('background', 1.0, 1), ('positive', -1.0, 0)):
        for logit in PROBE_LOGITS:
            x, labels = torch.tensor([[sign * logit]]), torch.tensor([label])
            ref_loss, ref_grad = float64_reference(Inputs(x, labels, torch.ones(1), 1.0), 0.0)
            cells = [f'| {target} | {sign * logit:g} | {ref_loss.item():.6g} |']
            for method in methods:
                loss, grad = loss_and_grad(method, Inputs(
                    x.to(device, copy=True).requires_grad_(), labels.to(device),
                    torch.ones(1, device=device), 1.0))
                cells.append(f' {relative_error(loss, ref_loss):.1e} / '
                             f'{relative_error(grad, ref_grad):.1e} |')
            lines.append(''.join(cells))
    return lines + ['']
