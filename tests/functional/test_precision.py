"""Precision at the extremes: float64 is exact to 1e-12 relative against a
120-digit oracle (mpmath), and a loss that is >= 0 in exact arithmetic is never
negative in any dtype or path."""
import itertools
from typing import Sequence

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdet_polyloss.functional import polyn_focal_loss
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

#: Enough digits that the oracle's own cancellations (CE - q at |logit| 50, where
#: q ~ 1e-22, loses about 22 digits per cancelled term) leave 16 correct ones.
mpmath.mp.dps = 120

#: Logits over [-50, 50], the range the exactness promise covers.
LOGITS = torch.linspace(-50.0, 50.0, 201, dtype=torch.float64)
SETTINGS = [  # epsilons, gamma, alpha, alpha_weighted_poly
    ((-1.0,), 2.0, 0.25, True), ((-1.0,), 0.0, 0.25, True), ((-1.0,), 0.5, -1.0, True),
    ((-0.5,), 1.5, 0.6, True), ((0.0,), 2.0, 0.25, True), ((1.0,), 2.0, 0.25, True),
    ((-0.25,), 2.0, 0.25, False), ((-1.0, -0.5), 2.0, 0.25, True),
    ((0.5, -0.4, 0.2), 1.0, 0.25, True), ((-1.0, 0.3, -0.3, 0.1), 3.0, -1.0, True),
]


def oracle(x: float, t: float, epsilons: Sequence[float], gamma: float, alpha: float,
           alpha_weighted_poly: bool) -> mpmath.mpf:
    """The loss of one element from the formula, in 120-digit arithmetic."""
    x, t = mpmath.mpf(x), mpmath.mpf(t)
    p = 1 / (1 + mpmath.exp(-x))
    q = t * (1 - p) + (1 - t) * p
    ce = -(t * mpmath.log(p) + (1 - t) * mpmath.log(1 - p))
    alpha_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else mpmath.mpf(1)
    poly = sum(mpmath.mpf(e) * q ** j for j, e in enumerate(epsilons, start=1))
    return q ** gamma * (alpha_t * ce + (alpha_t if alpha_weighted_poly else 1) * poly)


def _relative_errors(got: torch.Tensor, x: torch.Tensor, t: torch.Tensor, setting) -> list:
    errors = []
    for value, xi, ti in zip(got.flatten().tolist(), x.flatten().tolist(),
                             t.flatten().tolist(), strict=True):
        want = oracle(xi, ti, *setting)
        errors.append(float(abs(mpmath.mpf(value) - want) / want) if want else abs(value))
    return errors


@pytest.mark.parametrize('setting', SETTINGS)
def test_float64_class_labels_are_exact_to_1e12(setting):
    """Each logit once as the target class (label 0) and once as background."""
    epsilons, gamma, alpha, weighted = setting
    x = LOGITS.reshape(-1, 1)
    for label in (0, 1):
        labels = torch.full((x.shape[0],), label)
        got = polyn_focal_loss(x, labels, epsilons=epsilons, gamma=gamma, alpha=alpha,
                               alpha_weighted_poly=weighted, reduction='none',
                               allow_negative_loss=not weighted)
        target = torch.full_like(x, 1.0 - label)
        errors = _relative_errors(got, x, target, setting)
        assert max(errors) < 1e-12, (label, max(errors), LOGITS[errors.index(max(errors))])


@pytest.mark.parametrize('setting', SETTINGS[:4])
def test_float64_soft_and_one_hot_targets_are_exact_to_1e12(setting):
    epsilons, gamma, alpha, weighted = setting
    x = LOGITS.reshape(-1, 1).expand(-1, 5).contiguous()
    t = torch.tensor([0.0, 1.0, 0.3, 0.999, 1e-6], dtype=torch.float64).expand_as(x)
    got = polyn_focal_loss(x, t, epsilons=epsilons, gamma=gamma, alpha=alpha,
                           alpha_weighted_poly=weighted, reduction='none',
                           allow_negative_loss=not weighted)
    assert max(_relative_errors(got, x, t, setting)) < 1e-12


def test_the_composed_formula_alone_would_not_be_exact_even_in_float64():
    """What the exact form is for: the composed formula loses the small losses
    (at logit 40 it returns 0; the loss is about 1e-71)."""
    x = torch.tensor([[40.0]], dtype=torch.float64)
    setting = ((-1.0,), 2.0, 0.25, True)
    plain = _polyn_focal_loss_on_path('reference', x, torch.tensor([0]), epsilons=(-1.0,),
                                      reduction='none')
    exact = polyn_focal_loss(x, torch.tensor([0]), epsilons=(-1.0,), reduction='none')
    want = oracle(40.0, 1.0, *setting)
    assert 0 < want < 1e-60
    assert abs(mpmath.mpf(plain.item()) - want) / want > 1e-3
    assert abs(mpmath.mpf(exact.item()) - want) / want < 1e-12


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@settings(max_examples=400, deadline=None)
@given(logits=st.lists(st.one_of(st.floats(-60, 60), st.floats(-1e4, 1e4)),
                       min_size=1, max_size=12),
       target_form=st.sampled_from(['soft', 'one-hot', 'index']),
       seed=st.integers(0, 2 ** 16),
       epsilons=st.lists(st.floats(-1.0, 3.0), min_size=1, max_size=3),
       gamma=st.floats(0.0, 4.0),
       alpha=st.one_of(st.floats(0.0, 1.0), st.just(-1.0)),
       alpha_weighted_poly=st.booleans(),
       dtype=st.sampled_from(DTYPES),
       path=st.sampled_from(['auto', 'fused', 'reference']))
def test_loss_is_never_negative_where_it_is_non_negative_exactly(
        logits, target_form, seed, epsilons, gamma, alpha, alpha_weighted_poly, dtype, path):
    """Every coefficient of the expansion >= 0 (epsilons[j-1] >= -1/j, or
    >= -min(alpha, 1 - alpha)/j without alpha_t on the epsilon terms): then the
    loss is >= 0 exactly, and no element may come out below 0, in any dtype."""
    scale = 1.0 if alpha_weighted_poly or alpha < 0 else min(alpha, 1 - alpha)
    epsilons = [max(e * scale, -scale) / j if e < 0 else e
                for j, e in enumerate(epsilons, start=1)]
    x = torch.tensor(logits, dtype=torch.float64).reshape(-1, 1).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    if target_form != 'soft':
        target = target.round()
    if target_form == 'index':  # class 0 or background (1)
        target = (1 - target[:, 0]).long()
    elif path == 'fused':
        path = 'auto'  # the fused path takes class indices only
    loss = _polyn_focal_loss_on_path(
        path, x, target if target_form == 'index' else target.to(dtype), epsilons=epsilons,
        gamma=gamma, alpha=alpha, alpha_weighted_poly=alpha_weighted_poly, reduction='none')
    assert torch.all(loss >= 0), (loss, target)


@pytest.mark.parametrize('dtype,path', list(itertools.product(
    [torch.float32, torch.float16, torch.bfloat16], ['fused', 'reference'])))
def test_confident_elements_at_epsilon_minus_one_are_not_negative(dtype, path):
    """The case that went below 0 before: gamma 0, epsilon -1, logits where
    CE - q is below float32's resolution of either."""
    x = torch.linspace(-30, 30, 6001).reshape(-1, 1).to(dtype)
    for label in (0, 1):
        loss = _polyn_focal_loss_on_path(path, x, torch.full((x.shape[0],), label),
                                         epsilons=(-1.0,), gamma=0.0, reduction='none')
        assert loss.min() >= 0
