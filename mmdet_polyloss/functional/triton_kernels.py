"""Triton kernels for the fused Poly-N focal loss with class-index targets (CUDA).

Same math as :mod:`.fused` (see its docstring), one element per lane: the
forward reads the logits once (and each row's label), the backward reads them
again and writes the gradient once, in the logits' dtype (fp32, fp16, bf16;
arithmetic in fp32). ``_terms`` writes out the building blocks defined in
:mod:`.reference` (``horner``, ``softplus``); tests/functional/test_forms_agree.py
holds the kernels, the eager ops and the composed formula to one another.

When they run (:func:`applies_to`): CUDA tensors in fp32, fp16 or bf16, with
Triton installed and at most ``MAX_EPSILONS`` epsilons; float64 keeps its
precision in the eager ops of :mod:`.fused`. ``POLYLOSS_DISABLE_TRITON=1`` (or
``AVAILABLE = False`` at run time) sends everything to the eager path. Under
Triton's own ``TRITON_INTERPRET=1`` the kernels also take CPU tensors, in
Triton's interpreter: slow, for testing the kernels without a GPU.
"""
import os
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .common import PolyParams

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch builds ship without Triton
    triton = None

#: Most epsilons the kernels unroll; longer Poly-N falls back to eager ops.
MAX_EPSILONS = 4
AVAILABLE = (triton is not None and os.environ.get('POLYLOSS_DISABLE_TRITON', '0') != '1')
#: Triton's interpreter runs the kernels on CPU tensors (read at import).
INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
BLOCK = 1024

if triton is not None:

    @triton.jit
    def _terms(x_ptr, labels_ptr, w_ptr, offsets, mask, num_classes, a_pos, a_neg, wp_pos,
               wp_neg, e1, e2, e3, e4, NUM_EPS: tl.constexpr, WEIGHT_MODE: tl.constexpr):
        """Per-element q = 1 - p_t, p_t, CE, alpha_t, poly weight, P, P', sign, weight."""
        row = offsets // num_classes
        col = offsets - row * num_classes
        label = tl.load(labels_ptr + row, mask=mask, other=0)
        positive = col == label
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if WEIGHT_MODE == 1:
            weight = tl.load(w_ptr + row, mask=mask, other=0.0).to(tl.float32)
        elif WEIGHT_MODE == 2:
            weight = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        else:
            weight = tl.full(x.shape, 1.0, tl.float32)
        x = tl.where(weight != 0, x, 0.0)  # weight 0: ignored, its logit (NaN, inf) read as 0
        z = tl.where(positive, x, -x)
        e = tl.exp(-tl.abs(z))
        inv = 1.0 / (1.0 + e)
        q = tl.where(z >= 0, e * inv, inv)  # sigmoid(-z)
        p_t = tl.where(z >= 0, inv, e * inv)  # sigmoid(z)
        # CE = softplus(-z) = max(-z, 0) + log1p(e^-|z|) (reference.softplus), with
        # log1p(e) by Goldberg's trick: log(u) * e / (u - 1), u = 1 + e rounded.
        u = 1.0 + e
        log1p_e = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
        ce = tl.maximum(-z, 0.0) + log1p_e
        alpha_t = tl.where(positive, a_pos, a_neg)
        w_poly = tl.where(positive, wp_pos, wp_neg)
        # P(q) = sum_j e_j q^j and P'(q) by Horner's rule (reference.horner),
        # unrolled for NUM_EPS <= 4.
        poly = tl.zeros_like(q)
        dpoly = tl.zeros_like(q)
        if NUM_EPS >= 4:
            poly = poly * q + e4
            dpoly = dpoly * q + 4.0 * e4
        if NUM_EPS >= 3:
            poly = poly * q + e3
            dpoly = dpoly * q + 3.0 * e3
        if NUM_EPS >= 2:
            poly = poly * q + e2
            dpoly = dpoly * q + 2.0 * e2
        poly = (poly * q + e1) * q
        dpoly = dpoly * q + e1
        return q, p_t, ce, alpha_t, w_poly, poly, dpoly, positive, weight

    @triton.jit
    def _inner(alpha_t, ce, w_poly, poly, NON_NEGATIVE: tl.constexpr):
        """alpha_t * CE + w * P(q), clamped at 0 where the loss is >= 0 exactly."""
        inner = alpha_t * ce + w_poly * poly
        if NON_NEGATIVE:  # a value below 0 is rounding (as in the eager path)
            inner = tl.maximum(inner, 0.0)
        return inner

    @triton.jit
    def _pow_gamma(q, gamma, GAMMA_MODE: tl.constexpr):
        if GAMMA_MODE == 0:
            return tl.full(q.shape, 1.0, tl.float32)
        elif GAMMA_MODE == 1:
            return q
        elif GAMMA_MODE == 2:
            return q * q
        else:
            safe_q = tl.where(q > 0, q, 1.0)  # no log2(0); those lanes give 0 below
            return tl.where(q > 0, tl.exp2(gamma * tl.log2(safe_q)), 0.0)

    @triton.jit
    def _forward_kernel(x_ptr, labels_ptr, w_ptr, out_ptr, n_elements, num_classes, gamma,
                        a_pos, a_neg, wp_pos, wp_neg, e1, e2, e3, e4,
                        NUM_EPS: tl.constexpr, GAMMA_MODE: tl.constexpr,
                        WEIGHT_MODE: tl.constexpr, NON_NEGATIVE: tl.constexpr,
                        REDUCE: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offsets = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n_elements
        q, p_t, ce, alpha_t, w_poly, poly, dpoly, positive, weight = _terms(
            x_ptr, labels_ptr, w_ptr, offsets, mask, num_classes, a_pos, a_neg, wp_pos,
            wp_neg, e1, e2, e3, e4, NUM_EPS, WEIGHT_MODE)
        inner = _inner(alpha_t, ce, w_poly, poly, NON_NEGATIVE)
        loss = _pow_gamma(q, gamma, GAMMA_MODE) * inner * weight
        loss = tl.where(mask, loss, 0.0)
        if REDUCE:
            tl.store(out_ptr + pid, tl.sum(loss, axis=0))
        else:
            tl.store(out_ptr + offsets, loss, mask=mask)

    @triton.jit
    def _backward_kernel(x_ptr, labels_ptr, w_ptr, gout_ptr, grad_ptr, n_elements,
                         num_classes, gamma, a_pos, a_neg, wp_pos, wp_neg, e1, e2, e3, e4,
                         NUM_EPS: tl.constexpr, GAMMA_MODE: tl.constexpr,
                         WEIGHT_MODE: tl.constexpr, NON_NEGATIVE: tl.constexpr,
                         SCALAR_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offsets = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n_elements
        q, p_t, ce, alpha_t, w_poly, poly, dpoly, positive, weight = _terms(
            x_ptr, labels_ptr, w_ptr, offsets, mask, num_classes, a_pos, a_neg, wp_pos,
            wp_neg, e1, e2, e3, e4, NUM_EPS, WEIGHT_MODE)
        inner = _inner(alpha_t, ce, w_poly, poly, NON_NEGATIVE)
        g = _pow_gamma(q, gamma, GAMMA_MODE) * (
            gamma * p_t * inner + q * (alpha_t + w_poly * p_t * dpoly))
        if SCALAR_GRAD:
            gout = tl.load(gout_ptr).to(tl.float32)
        else:
            gout = tl.load(gout_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        grad = tl.where(positive, -g, g) * weight * gout
        tl.store(grad_ptr + offsets, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def supports(params: PolyParams) -> bool:
    """True when the kernels cover these hyper-parameters."""
    return len(params.epsilons) <= MAX_EPSILONS


def applies_to(pred: Tensor, params: PolyParams) -> bool:
    """True when the fused loss of ``pred`` runs on these kernels (see the module
    docstring); False sends it to the eager ops."""
    return (AVAILABLE and (pred.is_cuda or INTERPRET) and pred.dtype != torch.float64
            and supports(params))


def _scalars(params: PolyParams) -> Tuple[Dict[str, float], Dict[str, int]]:
    eps = list(params.epsilons) + [0.0] * (MAX_EPSILONS - len(params.epsilons))
    gamma_mode = {0.0: 0, 1.0: 1, 2.0: 2}.get(params.gamma, 3)
    return (dict(gamma=params.gamma, a_pos=params.alpha_t(True), a_neg=params.alpha_t(False),
                 wp_pos=params.poly_weight(True), wp_neg=params.poly_weight(False),
                 e1=eps[0], e2=eps[1], e3=eps[2], e4=eps[3]),
            dict(NUM_EPS=len(params.epsilons), GAMMA_MODE=gamma_mode,
                 NON_NEGATIVE=params.non_negative))


def _weight_mode(weight: Optional[Tensor], pred: Tensor) -> int:
    if weight is None:
        return 0
    return 2 if weight.numel() == pred.numel() and weight.shape == pred.shape else 1


def triton_forward(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                   params: PolyParams, reduce_sum: bool) -> Tensor:
    """Weighted loss, summed (float32 scalar) or element-wise (float32, pred's shape)."""
    pred, labels = pred.contiguous(), labels.contiguous()
    weight = None if weight is None else weight.contiguous()
    n = pred.numel()
    grid = (triton.cdiv(n, BLOCK),)
    out = torch.empty(grid[0] if reduce_sum else pred.shape, device=pred.device,
                      dtype=torch.float32)
    if n == 0:
        return out.sum() if reduce_sum else out
    scalars, modes = _scalars(params)
    _forward_kernel[grid](pred, labels, pred if weight is None else weight, out, n,
                          pred.shape[1], **scalars, **modes,
                          WEIGHT_MODE=_weight_mode(weight, pred), REDUCE=reduce_sum,
                          BLOCK=BLOCK)
    return out.sum() if reduce_sum else out


def triton_backward(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                    params: PolyParams, grad_output: Tensor) -> Tensor:
    """``dL/dx * weight * grad_output``, in ``pred``'s dtype."""
    pred, labels = pred.contiguous(), labels.contiguous()
    weight = None if weight is None else weight.contiguous()
    n = pred.numel()
    grad = torch.empty_like(pred)
    if n == 0:
        return grad
    scalar_grad = grad_output.numel() == 1
    grad_output = grad_output.contiguous() if scalar_grad else \
        grad_output.expand(pred.shape).contiguous()
    scalars, modes = _scalars(params)
    _backward_kernel[(triton.cdiv(n, BLOCK),)](
        pred, labels, pred if weight is None else weight, grad_output, grad, n, pred.shape[1],
        **scalars, **modes, WEIGHT_MODE=_weight_mode(weight, pred), SCALAR_GRAD=scalar_grad,
        BLOCK=BLOCK)
    return grad
