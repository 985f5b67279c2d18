r"""Fused Poly-N focal loss for class-index targets: analytic gradient, one node.

For a hard target write ``z = x`` for the target class and ``z = -x``
elsewhere, ``q = 1 - p_t = sigmoid(-z)``, ``CE = softplus(-z)``,
``P(q) = sum_j eps_j q^j`` and ``w = alpha_t`` (alpha-weighted) or 1::

    L     = q^gamma * (alpha_t * CE + w * P(q))
    -dL/dz = q^gamma * (gamma * (1 - q) * (alpha_t * CE + w * P(q))
                        + q * (alpha_t + w * (1 - q) * P'(q)))

so ``dL/dx = +G`` on negatives and ``-G`` on the target class, with ``G`` the
right-hand side. No power of ``q`` below ``gamma`` appears, so the gradient is
finite for every ``gamma >= 0`` and every logit.

With ~99% background, every element is first treated as a negative (one
dense pass, no one-hot), then the one target element per row is corrected
through a gather/scatter of N elements. No host sync. In eager ops this
runs over blocks of rows small enough for the CPU caches
(``blockwise_loss_and_grad``); on CUDA with Triton the dense passes run as
one kernel each way (``triton_kernels``). The polynomials are
:func:`.reference.horner`'s, in place; ``_softplus`` is a faster form of
:func:`.reference.softplus`. tests/functional/test_forms_agree.py holds the
composed formula, these eager ops and the kernels to one another.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import triton_kernels
from .common import PolyParams, compute_dtype
from .reference import horner, poly_focal_from_labels, polynomial


def _polynomial_no_grad(q: Tensor, eps: Sequence[float]) -> Tensor:
    """``P(q) = sum_j eps_j q^j`` (:func:`.reference.polynomial`, in place)."""
    return polynomial(q, eps, in_place=True)


def _polynomial_derivative_no_grad(q: Tensor, eps: Sequence[float]) -> Tensor:
    """``P'(q) = sum_j j eps_j q^(j-1)`` (:func:`.reference.horner`, in place)."""
    return horner(q, [j * e for j, e in enumerate(eps, start=1)], in_place=True)


def hard_target_terms(q: Tensor, ce: Tensor, params: PolyParams, positive: bool,
                      need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """``L`` and ``G = -dL/dz`` from ``q = 1 - p_t`` and ``CE``; overwrites ``ce``.

    Written for few temporaries: besides ``q`` and ``ce`` at most two (N, C)
    buffers are alive at once.
    """
    alpha_t, w, gamma = params.alpha_t(positive), params.poly_weight(positive), params.gamma
    eps = params.epsilons
    inner = ce.mul_(alpha_t)  # alpha_t * CE + w * P(q)
    if len(eps) == 1:
        inner.add_(q, alpha=w * eps[0])
    else:
        inner.add_(_polynomial_no_grad(q, eps).mul_(w))
    if params.non_negative:  # the loss is >= 0: a value below is rounding
        inner.clamp_min_(0)
    q_pow = None if gamma in (0.0, 1.0, 2.0) else q.pow(gamma)

    def mul_pow_(out: Tensor) -> Tensor:  # out *= q^gamma
        if gamma == 0:
            return out
        if q_pow is not None:
            return out.mul_(q_pow)
        return out.mul_(q) if gamma == 1 else out.mul_(q).mul_(q)

    grad = None
    if need_grad:
        p_t = torch.sub(1.0, q)
        if gamma != 0:
            grad = torch.mul(inner, p_t).mul_(gamma)
        # slope = alpha_t + w * p_t * P'(q), then times q
        if len(eps) == 1:
            slope = p_t.mul_(w * eps[0]).add_(alpha_t)
        else:
            slope = _polynomial_derivative_no_grad(q, eps).mul_(p_t).mul_(w).add_(alpha_t)
        slope.mul_(q)
        grad = mul_pow_(slope if grad is None else grad.add_(slope))
    return mul_pow_(inner), grad


def _softplus(x: Tensor) -> Tensor:
    """``softplus(x)`` (defined by :func:`.reference.softplus`) written as
    ``max(x, 0) - log(sigmoid(|x|))``, ``log(sigmoid(|x|)) = -log1p(e^-|x|)``.

    About twice as fast on CPU as ``F.softplus`` (torch's ``log2`` and
    ``sigmoid`` are vectorised there, ``softplus`` and ``log1p`` are not).
    Its absolute error is within 6e-8 of ``F.softplus`` in float32; below
    x = -9 (values under 1.2e-4) that is no longer small relative to the value,
    and below x = -17 it returns 0. There the loss is below 1e-8 * (1 - p_t)^gamma.
    """
    out = torch.abs(x).sigmoid_().log2_().mul_(-_LN2)
    return out.add_(torch.relu(x))


_LN2 = 0.6931471805599453


def _negative_terms(x: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.sigmoid(x), _softplus(x)


def _positive_terms(x: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.sigmoid(-x), _softplus(-x)


def _target_elements(labels: Tensor, num_classes: int) -> Tuple[Tensor, Tensor]:
    """Flat index of each row's target element (class clamped) and its positive mask.

    A label outside [0, C) is background, as in the Triton kernels (only reachable
    with the value checks off)."""
    rows = torch.arange(labels.numel(), device=labels.device)
    flat = rows.mul_(num_classes).add_(labels.clamp(0, num_classes - 1))
    return flat, (labels >= 0) & (labels < num_classes)


def dense_loss_and_grad(x: Tensor, labels: Tensor, weight: Optional[Tensor],
                        params: PolyParams,
                        need_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Weighted element-wise loss (N, C) and ``weight * dL/dx`` for labels in [0, C].

    Every element is first a negative; the one target column per row is then
    corrected with N gathered elements. Elements of weight 0 are ignored: their
    logits are read as 0, so a NaN or infinity there reaches neither output.
    """
    if weight is not None:
        x = _zero_ignored(x, weight)
    loss, grad = hard_target_terms(*_negative_terms(x), params, False, need_grad)
    flat, is_positive = _target_elements(labels, x.shape[1])
    x_target = x.view(-1).take(flat)
    pos_loss, pos_g = hard_target_terms(*_positive_terms(x_target), params, True, need_grad)
    # Overwrite (not add a difference: that cancels the small loss of a
    # confident positive), one element per row; background rows keep theirs.
    loss.view(-1).index_copy_(0, flat, torch.where(is_positive, pos_loss,
                                                   loss.view(-1).take(flat)))
    if need_grad:  # dL/dx = G on negatives, -G on the target class
        grad.view(-1).index_copy_(0, flat, torch.where(is_positive, pos_g.neg_(),
                                                       grad.view(-1).take(flat)))
    if weight is not None:
        loss.mul_(weight)
        if need_grad:
            grad.mul_(weight)
    return loss, grad


def _zero_ignored(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` with +0 where ``weight`` (of ``x``'s dtype, broadcasting against it)
    is +-0: a bitwise and with 0 or all ones, made from the weight's bits without
    a boolean mask (``masked_fill``'s is not vectorised on CPU: 3 to 5 times slower)."""
    bits, shift = (torch.int32, 31) if x.dtype == torch.float32 else (torch.int64, 63)
    # The bits but the sign's, negated, shifted: 0 where the weight is +-0, else -1.
    keep = (weight.view(bits) & ((1 << shift) - 1)).neg_().bitwise_right_shift_(shift)
    return (x.view(bits) & keep).view(x.dtype)


#: Elements per block of the eager path on CPU (``blockwise_loss_and_grad``):
#: its ~25 element-wise passes then run in the caches, not main memory. (On a
#: GPU, blocks would only multiply kernel launches: there it is one block.)
BLOCK_ELEMENTS = 1 << 18


def blockwise_loss_and_grad(x: Tensor, labels: Tensor, weight: Optional[Tensor],
                            params: PolyParams, need_grad: bool,
                            reduce_sum: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`dense_loss_and_grad` over blocks of rows of about ``BLOCK_ELEMENTS``.

    Returns the loss summed (0-dim) if ``reduce_sum``, else element-wise, and
    the gradient. Main memory then sees one read of ``x`` and one write of the
    gradient (and of the loss for ``reduce_sum=False``).
    """
    num_rows = x.shape[0]
    rows = max(1, BLOCK_ELEMENTS // max(1, x.shape[1])) if x.device.type == 'cpu' else num_rows
    if num_rows <= rows:
        loss, grad = dense_loss_and_grad(x, labels, weight, params, need_grad=need_grad)
        return (loss.sum() if reduce_sum else loss), grad
    loss = x.new_zeros(()) if reduce_sum else torch.empty_like(x)
    grad = torch.empty_like(x) if need_grad else None
    for start in range(0, num_rows, rows):
        block = slice(start, start + rows)
        block_loss, block_grad = dense_loss_and_grad(
            x[block], labels[block], None if weight is None else weight[block], params,
            need_grad=need_grad)
        if reduce_sum:
            loss += block_loss.sum()
        else:
            loss[block] = block_loss
        if need_grad:
            grad[block] = block_grad
    return loss, grad


class PolyFocalFusedFunction(torch.autograd.Function):
    """Autograd function of the fused path: the Poly-N focal loss of (N, C)
    logits and labels (N,) in [0, C] as one node, with its analytic gradient.

    Returns the weighted element-wise loss (``reduce_sum=False``) or its sum,
    in float32 for half inputs. ``weight`` is None, (N, 1) or (N, C) and gets
    no gradient. ``track_grad`` is the caller's grad mode (forward runs with
    grad off): without it no gradient is computed. CUDA (Triton) recomputes
    in backward from the inputs, since a memory-bound kernel reads them again
    almost for free. Elsewhere (eager ops, some 25 passes over each element)
    the forward computes the gradient alongside the loss (they share sigmoid,
    CE and the polynomial), in cache-sized blocks of rows, and keeps that one
    (N, C) tensor.
    A backward that builds a graph (``create_graph=True``) differentiates the
    composed formula instead, so higher derivatives are right too; for that
    ``pred`` itself is kept until backward on every path (a head's reshaped
    copy of its scores then lives that long, and editing ``pred`` in place
    before backward is an error, as for most torch ops).
    """

    @staticmethod
    def forward(ctx, pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                params: PolyParams, reduce_sum: bool, track_grad: bool) -> Tensor:
        ctx.params, ctx.reduce_sum = params, reduce_sum
        ctx.recompute = triton_kernels.applies_to(pred, params)
        if ctx.recompute:
            ctx.save_for_backward(pred, labels, weight)
            return triton_kernels.triton_forward(pred, labels, weight, params, reduce_sum)
        loss, grad = blockwise_loss_and_grad(
            _compute_view(pred), labels, weight, params,
            need_grad=track_grad and ctx.needs_input_grad[0], reduce_sum=reduce_sum)
        ctx.save_for_backward(pred, labels, weight, grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        # Unpacked once: non-reentrant checkpointing allows no second unpack.
        pred, labels, weight, *saved_grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            grad = _composed_grad(pred, labels, weight, ctx.params, ctx.reduce_sum,
                                  grad_output)
        elif ctx.recompute:
            grad = triton_kernels.triton_backward(pred, labels, weight, ctx.params, grad_output)
        else:
            grad = saved_grad[0] * grad_output
        return grad.to(pred.dtype), None, None, None, None, None


def _composed_grad(pred: Tensor, labels: Tensor, weight: Optional[Tensor],
                   params: PolyParams, reduce_sum: bool, grad_output: Tensor) -> Tensor:
    """``d(loss)/d(pred) . grad_output`` through autograd of the composed formula,
    keeping the graph (for second derivatives)."""
    loss = poly_focal_from_labels(pred, labels, weight, params)
    if reduce_sum:
        loss = loss.sum()
    return torch.autograd.grad(loss, pred, grad_output, create_graph=True)[0]


def _compute_view(pred: Tensor) -> Tensor:
    """``pred`` in its compute dtype, contiguous."""
    return pred.to(compute_dtype(pred)).contiguous()
