"""Values, gradients and numerics of the pure-torch Poly focal loss."""
import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from mmdet_polyloss.functional import poly1_focal_loss, polyn_focal_loss
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

from loss_inputs import make_labels, make_logits, make_soft_targets, one_hot, reference_poly_focal

N, C = 37, 5
GRID = list(itertools.product(
    [(-1.0,), (-0.5,), (0.0,), (0.5,), (1.0,), (2.0,), (-1.0, 0.3), (0.5, -0.4, 0.2)],  # epsilons
    [0.0, 0.5, 1.0, 2.0, 3.5],  # gamma
    [0.25, 0.75, -1.0],  # alpha
    [True, False],  # alpha_weighted_poly
))


@pytest.mark.parametrize('epsilons,gamma,alpha,alpha_weighted_poly', GRID)
def test_matches_float64_reference_on_class_labels(epsilons, gamma, alpha, alpha_weighted_poly):
    logits = make_logits(N, C, dtype=torch.float64)
    labels = make_labels(N, C)
    got = polyn_focal_loss(logits, labels, epsilons=epsilons, gamma=gamma, alpha=alpha,
                          alpha_weighted_poly=alpha_weighted_poly, reduction='none',
                          allow_negative_loss=not alpha_weighted_poly)
    want = reference_poly_focal(logits, one_hot(labels, C), epsilons, gamma, alpha,
                                alpha_weighted_poly)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('epsilon,gamma,alpha', [(-1.0, 2.0, 0.25), (0.5, 1.5, -1.0),
                                                 (2.0, 0.0, 0.6)])
def test_matches_reference_on_soft_targets_and_probabilities(epsilon, gamma, alpha):
    logits = make_logits(24, 4, dtype=torch.float64).reshape(2, 4, 3, 4)  # (B, C, H, W)
    target = make_soft_targets((2, 4, 3, 4)).double()
    kwargs = dict(epsilon=epsilon, gamma=gamma, alpha=alpha, reduction='none')
    want = reference_poly_focal(logits, target, (epsilon,), gamma, alpha)
    torch.testing.assert_close(poly1_focal_loss(logits, target, **kwargs), want)
    probs = torch.sigmoid(logits)
    got = poly1_focal_loss(probs, target, activated=True, **kwargs)
    torch.testing.assert_close(got, reference_poly_focal(probs, target, (epsilon,), gamma,
                                                         alpha, activated=True))


def test_poly1_on_class_labels_matches_float64_reference():
    """poly1_focal_loss (epsilon) on the fused path, against the independent formula."""
    logits, labels = make_logits(N, C, dtype=torch.float64), make_labels(N, C)
    got = poly1_focal_loss(logits, labels, epsilon=-0.7, gamma=1.5, reduction='none')
    want = reference_poly_focal(logits, one_hot(labels, C), (-0.7,), 1.5, 0.25, True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_epsilon_minus_one_removes_leading_term_of_the_expansion():
    """CE = sum_j q^j / j with q = 1 - p_t; alpha-weighted Poly-1 at epsilon -1
    must equal alpha_t * q^gamma * sum_{j>=2} q^j / j (the paper's claim)."""
    logits = torch.linspace(-3, 3, 41, dtype=torch.float64).reshape(41, 1)
    for target_value, alpha_t in [(1.0, 0.25), (0.0, 0.75)]:
        target = torch.full_like(logits, target_value)
        got = poly1_focal_loss(logits, target, epsilon=-1.0, gamma=2.0, alpha=0.25,
                               reduction='none')
        p_t = torch.sigmoid(logits if target_value else -logits)
        q = 1 - p_t
        series = sum(q ** j / j for j in range(2, 2000))
        torch.testing.assert_close(got, alpha_t * q ** 2 * series, rtol=1e-9, atol=1e-12)


def test_gamma0_no_alpha_epsilon0_is_binary_cross_entropy():
    logits, target = make_logits(N, C), make_soft_targets((N, C))
    got = poly1_focal_loss(logits, target, epsilon=0.0, gamma=0.0, alpha=-1.0, reduction='none')
    torch.testing.assert_close(
        got, F.binary_cross_entropy_with_logits(logits, target, reduction='none'))


def test_unweighted_form_goes_negative_where_alpha_weighted_does_not():
    """The public ports' form (no alpha_t on the epsilon term) at epsilon -1 gives
    a negative loss for a confident positive, so it needs the explicit opt-in;
    the paper's form does not."""
    logits, labels = torch.tensor([[3.0, -3.0]]), torch.tensor([0])
    kwargs = dict(epsilon=-1.0, gamma=2.0, alpha=0.25, reduction='none')
    assert poly1_focal_loss(logits, labels, **kwargs).min() >= 0
    with pytest.raises(ValueError, match=re.escape(
            'epsilon=-1.0 is below -0.25 (with alpha_weighted_poly=False')):
        poly1_focal_loss(logits, labels, alpha_weighted_poly=False, **kwargs)
    unweighted = poly1_focal_loss(logits, labels, alpha_weighted_poly=False,
                                  allow_negative_loss=True, **kwargs)
    assert unweighted[0, 0] < 0


@pytest.mark.parametrize('activated', [False, True])
@pytest.mark.parametrize('alpha_weighted_poly', [True, False])
def test_gradcheck_float64(activated, alpha_weighted_poly):
    logits = make_logits(6, 3, scale=2.0, dtype=torch.float64)
    pred = (torch.sigmoid(logits) if activated else logits).requires_grad_()
    labels = make_labels(6, 3)
    weight = torch.rand(6, dtype=torch.float64)

    def loss_fn(p, path='auto'):
        return _polyn_focal_loss_on_path(
            path, p, labels, weight, epsilons=(-0.8, 0.3), gamma=1.5, alpha=0.3,
            alpha_weighted_poly=alpha_weighted_poly, activated=activated, reduction='none',
            allow_negative_loss=True)

    # 'auto' is the exact form in float64; the fused path takes logits only.
    paths = ('auto', 'reference') if activated else ('fused', 'auto', 'reference')
    for path in paths:
        def loss_of(p, path=path):
            return loss_fn(p, path)
        assert torch.autograd.gradcheck(loss_of, (pred,))
        assert torch.autograd.gradgradcheck(loss_of, (pred,))


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('epsilon', [-1.0, 0.0, 1.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_logits_give_finite_loss_and_gradient(gamma, epsilon, dtype, device):
    big = 1e4
    logits = torch.tensor([[big, -big], [-big, big]], dtype=dtype, device=device,
                          requires_grad=True)
    labels = torch.tensor([0, 2], device=device)  # row 0 positive class 0; row 1 background
    loss = poly1_focal_loss(logits, labels, epsilon=epsilon, gamma=gamma, alpha=0.25,
                            reduction='none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # Correct and confident: no loss. Confidently wrong (row 1, class 1, target 0):
    # (1 - alpha) * (CE + epsilon) with CE = 1e4 (the half value of 1e4 for half dtypes).
    ce = float(torch.tensor(big, dtype=dtype))
    expected = torch.tensor([[0.0, 0.0], [0.0, 0.75 * (ce + epsilon)]], device=device)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    # There p = 1 exactly: d/dx of 0.75 * p^gamma * (CE + epsilon * p) is 0.75.
    expected_grad = torch.tensor([[0.0, 0.0], [0.0, 0.75]], device=device)
    torch.testing.assert_close(logits.grad.float(), expected_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype, device):
    logits = make_logits(N, C, device=device).to(dtype).requires_grad_()
    labels = make_labels(N, C, device=device)
    loss = poly1_focal_loss(logits, labels, epsilon=-1.0, reduction='none')
    assert loss.dtype == torch.float32
    want = poly1_focal_loss(logits.detach().float(), labels, epsilon=-1.0, reduction='none')
    # The CPU runs the same float32 ops for both; on CUDA Triton compiles a kernel per
    # input dtype, whose float32 rounding may differ by a few ulps (half precision
    # arithmetic would be ~1e-3 off).
    exact = device == 'cpu'
    torch.testing.assert_close(loss, want, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    loss.sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()


def test_under_autocast(device):
    dtype = torch.bfloat16 if device == 'cpu' else torch.float16
    layer = torch.nn.Linear(8, C).to(device)
    features = make_logits(N, 8, device=device)
    labels = make_labels(N, C, device=device)
    with torch.autocast(device_type=device, dtype=dtype):
        pred = layer(features)
        assert pred.dtype == dtype
        loss = poly1_focal_loss(pred, labels, epsilon=-1.0, avg_factor=10.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        want = poly1_focal_loss(layer(features).to(dtype).float(), labels, epsilon=-1.0,
                                avg_factor=10.0)
    torch.testing.assert_close(loss, want, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('mean', 0.0), ('sum', None),
                                                  ('none', None)])
def test_empty_input_gives_zero_with_gradient(reduction, avg_factor, device):
    pred = torch.zeros(0, C, device=device, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long, device=device)
    loss = poly1_focal_loss(pred, labels, epsilon=-1.0, reduction=reduction,
                            avg_factor=avg_factor)
    assert loss.numel() == 0 if reduction == 'none' else loss.item() == 0.0
    loss.sum().backward()
    assert pred.grad is not None and pred.grad.shape == (0, C)


def test_weights_and_reductions_follow_mmdet_rules():
    logits, labels = make_logits(N, C, dtype=torch.float64), make_labels(N, C)
    per_sample = torch.rand(N, dtype=torch.float64)
    elementwise = torch.rand(N, C, dtype=torch.float64)
    plain = poly1_focal_loss(logits, labels, epsilon=0.5, reduction='none')
    for weight, broadcast in [(per_sample, per_sample[:, None]), (elementwise, elementwise),
                              (per_sample[:, None], per_sample[:, None]),
                              (elementwise.flatten(), elementwise)]:
        weighted = poly1_focal_loss(logits, labels, weight, epsilon=0.5, reduction='none')
        torch.testing.assert_close(weighted, plain * broadcast)
        torch.testing.assert_close(
            poly1_focal_loss(logits, labels, weight, epsilon=0.5, reduction='sum'),
            (plain * broadcast).sum())
        torch.testing.assert_close(
            poly1_focal_loss(logits, labels, weight, epsilon=0.5, reduction='mean'),
            (plain * broadcast).mean())
        torch.testing.assert_close(
            poly1_focal_loss(logits, labels, weight, epsilon=0.5, avg_factor=3.0),
            (plain * broadcast).sum() / (3.0 + torch.finfo(torch.float32).eps))
    # 'none' ignores avg_factor, as mmdet does.
    torch.testing.assert_close(
        poly1_focal_loss(logits, labels, epsilon=0.5, reduction='none', avg_factor=3.0), plain)


def test_background_label_has_no_positive_target():
    """Label C (background) must act as an all-zero target row, not wrap or crash."""
    logits = make_logits(4, 3, dtype=torch.float64)
    background = torch.full((4,), 3)
    got = poly1_focal_loss(logits, background, epsilon=-1.0, reduction='none')
    want = reference_poly_focal(logits, torch.zeros(4, 3), (-1.0,), 2.0, 0.25)
    torch.testing.assert_close(got, want)
    assert math.isclose(got.sum().item(), want.sum().item(), rel_tol=1e-12)


def test_weight_that_requires_grad_gets_the_elementwise_loss_as_gradient():
    """A learned weight (e.g. a reweighting head) takes the composed path:
    d(sum weight * loss)/d(weight) is the unweighted element-wise loss."""
    logits, labels = make_logits(N, C), make_labels(N, C)
    weight = torch.rand(N, C).requires_grad_()
    poly1_focal_loss(logits, labels, weight, epsilon=-1.0, reduction='sum').backward()
    want = poly1_focal_loss(logits, labels, epsilon=-1.0, reduction='none')
    torch.testing.assert_close(weight.grad, want)
