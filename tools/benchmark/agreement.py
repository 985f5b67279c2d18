"""Every method against the float64 formula on the same rounded inputs, and the
accuracy of single fp32 elements at large |logit|."""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from tools.benchmark import cases
from tools.benchmark.cases import EAGER, FUSED, MMDET, NAIVE, UNCHECKED, Inputs, Method

#: This project's methods compute in float32 from the rounded inputs: loss within
#: LOSS_RTOL of float64, every gradient element within GRAD_RTOL plus a fraction
#: of the largest |gradient| (fp16: for elements that underflow even under the
#: loss scale). Measured need on CPU at 100k x 80: 1e-11 (fp32, bf16), 4e-10
#: (fp16); a gradient halved, doubled or zeroed below 1e-5 of the largest fails.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-2
GRAD_ATOL_FRACTION = {torch.float32: 1e-10, torch.bfloat16: 1e-10, torch.float16: 2e-9}
#: mmdet's FocalLoss computes half inputs in half precision (CPU) or fp16 (mmcv's
#: kernel): per dtype (rtol, atol fraction), for loss and gradient.
BASELINE_TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 1e-3),
                       torch.bfloat16: (5e-2, 1e-2)}
#: Half inputs backpropagate under AMP's initial loss scale, or most fp16
#: gradient elements underflow to zero.
LOSS_SCALE = {torch.float32: 1.0, torch.bfloat16: 1.0, torch.float16: 2.0 ** 16}
REFERENCE_ROWS = 50_000  # per float64 chunk
#: The probe's |logit|: background at +logit (confident false positive),
#: positive at -logit (confident miss).
PROBE_LOGITS = (4.0, 8.0, 12.0, 16.0, 20.0, 40.0)


@dataclass
class Check:
    """One method against float64; ``grad_worst``: the largest element error over
    its tolerance (<= 1 passes); ``ok`` None: skipped."""
    label: str
    ok: Optional[bool]
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
        return (f"{'[OK]' if self.ok else '[MISMATCH !!!]'} {self.label}: loss rel. error "
                f'{self.loss_rel:.2g} (loss {self.loss_ref:.6g}); gradient: worst element at'
                f' {self.grad_worst:.2g} of its tolerance, median rel.'
                f' error {self.grad_median_rel:.2g} (max |grad| {self.grad_max:.3g})'
                + (f' {self.note}' if self.note else ''))


@dataclass
class ProbeRow:
    """One element's float64 loss and gradient, each method's relative errors."""
    target: str
    logit: float
    loss64: float
    grad64: float
    errors: Dict[str, Tuple[float, float]]


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) if reference else abs(value)


def loss_and_grad(method: Method, case: Inputs) -> Tuple[Tensor, Tensor]:
    """Loss and gradient in float64; half inputs backpropagate under LOSS_SCALE."""
    for scale in dict.fromkeys((LOSS_SCALE[case.pred.dtype], 1.0)):
        loss = cases.fwd_bwd(method, case, scale)
        grad = case.pred.grad.double() / scale
        case.pred.grad = None
        if bool(torch.isfinite(grad).all()):  # else overflow: unscaled, as GradScaler backs off
            break
    return loss.double(), grad


def float64_reference(case: Inputs, epsilon: float) -> Tuple[Tensor, Tensor]:
    """Loss and gradient of the composed Poly-1 formula (autograd) in float64 on
    the case's rounded logits, divided by avg_factor + fp32 eps as the losses do."""
    from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path
    divisor = case.avg_factor + torch.finfo(torch.float32).eps
    grad = torch.empty(case.pred.shape, dtype=torch.float64, device=case.pred.device)
    total = torch.zeros((), dtype=torch.float64, device=case.pred.device)
    for start in range(0, case.pred.shape[0], REFERENCE_ROWS):
        rows = slice(start, start + REFERENCE_ROWS)
        x = case.pred.detach()[rows].double().requires_grad_()
        loss = _polyn_focal_loss_on_path(
            'reference', x, case.labels[rows], case.weight[rows].double(), epsilons=(epsilon,),
            gamma=cases.GAMMA, alpha=cases.ALPHA, reduction='sum') / divisor
        grad[rows] = torch.autograd.grad(loss, x)[0]
        total += loss.detach()
    return total, grad


def compare(label: str, method: Method, reference: Tuple[Tensor, Tensor], case: Inputs,
            tolerances: Tuple[float, float, float]) -> Check:
    """``method`` against the float64 (loss, gradient); ``tolerances``: loss rtol,
    gradient rtol, gradient atol as a fraction of the largest |gradient|."""
    if method.fn is None:
        return Check(label, None, note=f'{method.name} {method.unsupported}')
    loss_rtol, grad_rtol, atol_fraction = tolerances
    ref_loss, ref_grad = reference
    try:
        loss, grad = loss_and_grad(method, case)
    except Exception as err:  # any error: a crash is a failed check, not an abort
        return Check(label, False, note=f'raised {type(err).__name__}: {err}'[:200])
    grad_max = ref_grad.abs().max().item()
    error = (grad - ref_grad).abs()
    # The gradient is stored in the input dtype under LOSS_SCALE, so no method can
    # be closer than half the spacing of that dtype's subnormals, unscaled (fp16:
    # 2^-25 / 2^16; it decides once max |grad| is small, as at 8 images).
    info = torch.finfo(case.pred.dtype)
    rounding = info.smallest_normal * info.eps / 2 / LOSS_SCALE[case.pred.dtype]
    tolerance = grad_rtol * ref_grad.abs() + max(atol_fraction * grad_max, rounding)
    worst = (error / tolerance).max().item() if grad_max > 0 else error.max().item()
    nonzero = ref_grad != 0
    median_rel = (error[nonzero] / ref_grad[nonzero].abs()).median().item() \
        if nonzero.any() else 0.0
    loss_rel = relative_error(loss.item(), ref_loss.item())
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    ok = finite and loss_rel <= loss_rtol and worst <= 1.0
    return Check(label, ok, loss_rel, ref_loss.item(), worst, median_rel, grad_max)


def agreement_checks(methods: List[Method], case: Inputs, where: str,
                     seed: int = 0) -> List[Check]:
    """mmdet's FocalLoss and the fused Poly-1 at epsilon=0, then every Poly-1
    method at epsilon=-1; with the label weights, then with per-element weights
    (the label weights times U(0.5, 1.5))."""
    by_name = {m.name: m for m in methods}
    dtype = case.pred.dtype
    ours = (LOSS_RTOL, GRAD_RTOL, GRAD_ATOL_FRACTION[dtype])
    rtol, atol_fraction = BASELINE_TOLERANCES[dtype]
    baseline = (rtol + atol_fraction, rtol, atol_fraction)
    factors = 0.5 + torch.rand(case.pred.shape, generator=torch.Generator().manual_seed(seed))
    per_element = Inputs(case.pred, case.labels,
                         case.weight[:, None] * factors.to(case.weight.device), case.avg_factor)
    checks = []
    for weights, weighted in (('label weights', case), ('element weights', per_element)):
        at_zero = float64_reference(weighted, 0.0)
        checks.append(compare(f'{where}, {weights}: {MMDET} vs float64 (epsilon=0)',
                              by_name[MMDET], at_zero, weighted, baseline))
        checks.append(compare(f'{where}, {weights}: {FUSED} at epsilon=0 vs float64',
                              Method(FUSED, cases.poly1(0.0)), at_zero, weighted, ours))
        del at_zero
        at_minus_one = float64_reference(weighted, -1.0)
        for name in (FUSED, UNCHECKED, EAGER, NAIVE):
            if name in by_name:
                checks.append(compare(f'{where}, {weights}: {name} at epsilon=-1 vs float64',
                                      by_name[name], at_minus_one, weighted, ours))
    return checks


def accuracy_probe(mmdet_fn: Optional[cases.LossFn], mmdet_error: str,
                   device: str) -> List[ProbeRow]:
    """Focal loss (Poly-1 at epsilon 0) of single fp32 elements at large |logit|,
    each method against float64."""
    methods = cases.build_methods(device, mmdet_fn, mmdet_error, torch.float32, epsilon=0.0)
    rows = []
    for target, sign, label in (('background', 1.0, 1), ('positive', -1.0, 0)):
        for logit in PROBE_LOGITS:
            x, labels = torch.tensor([[sign * logit]]), torch.tensor([label])
            ref_loss, ref_grad = float64_reference(Inputs(x, labels, torch.ones(1), 1.0), 0.0)
            errors = {}
            for method in (m for m in methods if m.fn is not None):
                case = Inputs(x.to(device, copy=True).requires_grad_(), labels.to(device),
                              torch.ones(1, device=device), 1.0)
                loss, grad = loss_and_grad(method, case)
                errors[method.name] = (relative_error(loss.item(), ref_loss.item()),
                                       relative_error(grad.item(), ref_grad.item()))
            rows.append(ProbeRow(target, sign * logit, ref_loss.item(), ref_grad.item(), errors))
    return rows
