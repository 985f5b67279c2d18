"""Poly-1 cross-entropy with soft targets and label smoothing, against a float64
formula, optax's definition, and torch's own label-smoothed cross-entropy."""
import re

import pytest
import torch
import torch.nn.functional as F

from mmdet_polyloss.functional import poly1_cross_entropy

from loss_inputs import make_logits

N, C = 23, 5


def _labels(seed=1):
    return torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(seed))


def _soft(shape=(N, C), seed=2):
    """Distributions over dim 1, with exact zeros mixed in."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(shape, generator=gen, dtype=torch.float64)
    raw[torch.rand(shape, generator=gen) < 0.3] = 0.0
    raw.select(1, 0).add_(1e-3)  # no all-zero row
    return raw / raw.sum(dim=1, keepdim=True)


def reference(x, target, epsilon, class_weight=None):
    """sum_c w_c t_c (-log p_c + epsilon (1 - p_c)) row by row, in float64 with
    plain exp and log."""
    x = x.double()
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        p = torch.exp(x[i]) / torch.exp(x[i]).sum()
        for c in range(x.shape[1]):
            w = 1.0 if class_weight is None else class_weight[c]
            out[i] += w * target[i, c] * (-torch.log(p[c]) + epsilon * (1 - p[c]))
    return out


def optax_definition(x, labels, epsilon):
    """optax's poly_loss_cross_entropy: softmax CE plus epsilon * sum(labels * (1 - softmax))."""
    x = x.double()
    cross_entropy = -(labels * F.log_softmax(x, dim=-1)).sum(dim=-1)
    one_minus_pt = (labels * (1 - F.softmax(x, dim=-1))).sum(dim=-1)
    return cross_entropy + epsilon * one_minus_pt


def smoothed_one_hot(labels, smoothing):
    return F.one_hot(labels, C).double() * (1 - smoothing) + smoothing / C


@pytest.mark.parametrize('epsilon', [-1.0, 0.0, 0.5, 2.0])
@pytest.mark.parametrize('class_weight', [None, [0.5, 1.0, 2.0, 0.0, 1.5]])
def test_soft_targets_match_the_float64_formula(epsilon, class_weight):
    x, target = make_logits(N, C, dtype=torch.float64), _soft()
    got = poly1_cross_entropy(x, target, epsilon=epsilon, class_weight=class_weight,
                              reduction='none')
    torch.testing.assert_close(got, reference(x, target, epsilon, class_weight),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('epsilon', [-1.0, 1.0])
def test_soft_targets_match_optax_where_they_overlap(epsilon):
    """optax has no class weights and no ignore label: compare without them."""
    x, target = make_logits(N, C, dtype=torch.float64), _soft()
    got = poly1_cross_entropy(x, target, epsilon=epsilon, reduction='none')
    torch.testing.assert_close(got, optax_definition(x, target, epsilon),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('smoothing', [0.1, 0.3])
@pytest.mark.parametrize('class_weight', [None, [0.5, 1.0, 2.0, 0.0, 1.5]])
def test_label_smoothing_is_the_paper_listing(smoothing, class_weight):
    """Targets one_hot (1 - s) + s / C; pt = sum(targets * softmax)."""
    x, labels = make_logits(N, C, dtype=torch.float64), _labels()
    got = poly1_cross_entropy(x, labels, epsilon=-1.0, label_smoothing=smoothing,
                              class_weight=class_weight, reduction='none')
    want = reference(x, smoothed_one_hot(labels, smoothing), -1.0, class_weight)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if class_weight is None:
        torch.testing.assert_close(
            got, optax_definition(x, smoothed_one_hot(labels, smoothing), -1.0))


@pytest.mark.parametrize('class_weight', [None, [0.5, 1.0, 2.0, 0.0, 1.5]])
def test_epsilon_zero_with_smoothing_is_torch_cross_entropy(class_weight):
    x, labels = make_logits(N, C), _labels()
    weight = None if class_weight is None else torch.tensor(class_weight)
    got = poly1_cross_entropy(x, labels, epsilon=0.0, label_smoothing=0.2,
                              class_weight=class_weight, reduction='sum')
    want = F.cross_entropy(x, labels, weight=weight, label_smoothing=0.2, reduction='sum')
    torch.testing.assert_close(got, want)


def test_smoothing_keeps_ignore_and_avg_non_ignore():
    x, labels = make_logits(N, C, dtype=torch.float64), _labels()
    labels[:4] = 255
    kept = labels != 255
    loss = poly1_cross_entropy(x, labels, epsilon=-1.0, label_smoothing=0.1, ignore_index=255,
                               reduction='none')
    assert torch.all(loss[~kept] == 0)
    want = reference(x[kept], smoothed_one_hot(labels[kept], 0.1), -1.0)
    torch.testing.assert_close(loss[kept], want)
    mean = poly1_cross_entropy(x, labels, epsilon=-1.0, label_smoothing=0.1, ignore_index=255,
                               avg_non_ignore=True)
    torch.testing.assert_close(mean, want.mean())


def test_dense_soft_targets_and_their_gradient():
    """(N, C, H, W) soft targets, per-location weights; gradcheck in float64."""
    x = make_logits(2 * 3 * 4, C, dtype=torch.float64).reshape(2, 3, 4, C).permute(0, 3, 1, 2)
    target = _soft((2, C, 3, 4))
    weight = torch.rand(2, 3, 4, dtype=torch.float64)
    got = poly1_cross_entropy(x, target, weight, epsilon=-1.0, reduction='none')
    rows = reference(x.permute(0, 2, 3, 1).reshape(-1, C),
                     target.permute(0, 2, 3, 1).reshape(-1, C), -1.0)
    torch.testing.assert_close(got, rows.reshape(2, 3, 4) * weight, rtol=1e-12, atol=1e-12)
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: poly1_cross_entropy(p, target, epsilon=-0.7, label_smoothing=0.1,
                                      reduction='sum'), (x,))


def test_loss_stays_non_negative_at_epsilon_minus_one():
    """-sum t log p >= -log p_t >= 1 - p_t (Jensen), so epsilon -1 keeps it >= 0."""
    x = make_logits(200, C, scale=8.0, dtype=torch.float64)
    target = _soft((200, C), seed=5)
    assert torch.all(poly1_cross_entropy(x, target, epsilon=-1.0, reduction='none') >= 0)
    loss = poly1_cross_entropy(x, _labels().repeat(9)[:200], epsilon=-1.0,
                               label_smoothing=0.2, reduction='none')
    assert torch.all(loss >= 0)


@pytest.mark.parametrize('target,message', [
    (lambda t: t.neg(), 'soft targets must be probabilities in [0, 1], got -'),
    (lambda t: t * 0.5, 'soft targets must sum to 1 over the classes (dim 1) within 0.0001, '
                        'got a sum off by 0.5'),
    (lambda t: t[:, :4], 'label shape (23, 4) does not match pred shape (23, 5)'),
    (lambda t: F.one_hot(t.argmax(1), C), "soft targets must be a floating-point tensor of "
                                          "pred's shape (23, 5), got torch.int64 of shape (23, 5)"),
    (lambda t: (t * 0.98).half(), 'soft targets must sum to 1 over the classes (dim 1) within '
                                  '0.01, got a sum off by 0.02'),
])
def test_bad_soft_targets(target, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        poly1_cross_entropy(make_logits(N, C, dtype=torch.float64), target(_soft()))


def test_half_precision_targets_may_sum_to_one_within_their_rounding():
    """fp16 / bf16 distributions are off 1 by their rounding (up to 1e-2 is taken)."""
    x = make_logits(N, C, dtype=torch.float64)
    for dtype in (torch.float16, torch.bfloat16):
        target = (_soft() * 0.995).to(dtype)
        torch.testing.assert_close(poly1_cross_entropy(x, target, epsilon=-1.0),
                                   reference(x, target.double(), -1.0).mean(), rtol=0, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_loss_is_never_negative_in_low_precision(dtype):
    """epsilon -1 in the formats a mixed-precision run uses: hard, smoothed and soft
    targets, logits from confident (|x| up to 60) to uniform."""
    generator = torch.Generator().manual_seed(11)
    rows = 4000
    x = (torch.randn(rows, C, generator=generator)
         * torch.logspace(-3, 1.8, rows).unsqueeze(1)).to(dtype)
    labels = torch.randint(0, C, (rows,), generator=generator)
    soft = torch.softmax(3 * torch.randn(rows, C, generator=generator), 1)
    for target, smoothing in ((labels, 0.0), (labels, 0.1), (soft, 0.0),
                              (F.one_hot(x.float().argmax(1), C).float(), 0.0)):
        loss = poly1_cross_entropy(x, target, epsilon=-1.0, label_smoothing=smoothing,
                                   reduction='none')
        assert torch.all(loss >= 0), (smoothing, loss.min())


@pytest.mark.parametrize('smoothing,error,message', [
    (1.0, ValueError, 'label_smoothing must be in [0, 1), got 1.0'),
    (-0.1, ValueError, 'label_smoothing must be >= 0.0, got -0.1'),
    ('0.1', TypeError, "label_smoothing must be a real number, got '0.1' of type str"),
])
def test_bad_label_smoothing(smoothing, error, message):
    with pytest.raises(error, match=re.escape(message)):
        poly1_cross_entropy(make_logits(N, C), _labels(), label_smoothing=smoothing)
