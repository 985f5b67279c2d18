"""At epsilon 0 the losses equal mmdet's on inputs with NaN or infinite logits
at ignored positions; settings too large for the computation are refused at
construction, naming the argument and its value."""
import pytest
import torch
from mmdet.models.losses import CrossEntropyLoss, FocalLoss

import mmdet_polyloss  # noqa: F401  (registers the losses)
from mmdet_polyloss import Poly1CrossEntropyLoss, Poly1FocalLoss, PolyNFocalLoss

POISON = (float('nan'), float('inf'), float('-inf'))


@pytest.mark.parametrize('value', POISON)
def test_cross_entropy_equals_mmdets_with_non_finite_ignored_rows(value):
    """The issue's case: mmdet's CrossEntropyLoss skips the ignored row."""
    x = torch.randn(4, 3)
    x[2] = value
    labels = torch.tensor([0, 1, -100, 2])
    want = CrossEntropyLoss()(x, labels, ignore_index=-100)
    assert torch.isfinite(want)
    torch.testing.assert_close(Poly1CrossEntropyLoss(epsilon=0)(x, labels), want)


@pytest.mark.parametrize('value', POISON)
def test_sigmoid_cross_entropy_equals_mmdets_with_non_finite_ignored_rows(value):
    x = torch.randn(5, 3)
    labels = torch.tensor([0, 3, 7, 2, 1])
    clean = x.clone()
    clean[2] = 0
    x[2] = value
    want = CrossEntropyLoss(use_sigmoid=True)(clean, labels, ignore_index=7)
    got = Poly1CrossEntropyLoss(use_sigmoid=True, epsilon=0)(x, labels, ignore_index=7)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize('value', POISON)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_focal_loss_equals_mmdets_with_non_finite_ignored_elements(value, dtype):
    """mmdet's FocalLoss has no ignore_index: it ignores with label weight 0, and
    its result does not depend on the (finite) logits there. Ours equals it
    whatever the logits there are, by weight 0 or by ignore_index."""
    x = torch.randn(6, 4, dtype=dtype)
    labels = torch.tensor([0, 4, 2, 3, 1, 4])
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=dtype)
    want = FocalLoss()(x, labels, weight, avg_factor=3.0)
    poisoned = x.clone()
    poisoned[2], poisoned[4, 1] = value, -value
    poisoned.requires_grad_()
    got = Poly1FocalLoss(epsilon=0)(poisoned, labels, weight, avg_factor=3.0)
    torch.testing.assert_close(got, want)
    got.backward()
    assert torch.isfinite(poisoned.grad).all()
    by_index = labels.masked_fill(weight == 0, 7)
    torch.testing.assert_close(
        Poly1FocalLoss(epsilon=0, ignore_index=7)(poisoned, by_index, avg_factor=3.0), want)


def test_focal_loss_on_dense_maps_ignores_non_finite_logits():
    x = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 4, (2, 4, 4))
    labels[1, 2, 3] = 7
    poisoned = x.clone()
    poisoned[1, :, 2, 3] = float('inf')
    weight = (labels != 7).float()
    rows = x.movedim(1, -1).reshape(-1, 3)
    want = FocalLoss(reduction='sum')(rows, labels.reshape(-1).clamp_max(3), weight.reshape(-1))
    got = Poly1FocalLoss(epsilon=0, ignore_index=7, reduction='sum')(poisoned, labels)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize('loss, kwargs, message', [
    (Poly1FocalLoss, dict(epsilon=1e40), r'epsilon=1e\+40 is too large'),
    (Poly1FocalLoss, dict(gamma=1e39), r'gamma=1e\+39 is too large'),
    (Poly1FocalLoss, dict(loss_weight=1e39), r'loss_weight=1e\+39 is too large'),
    (Poly1FocalLoss, dict(ignore_index=10**30),
     'ignore_index must fit in int64 .*, got 1000000000000000000000000000000'),
    (PolyNFocalLoss, dict(epsilons=[1.0, 2e38]), r'epsilons\[1\]=2e\+38 is too large'),
    (Poly1CrossEntropyLoss, dict(epsilon=-1e40), 'epsilon=-1e\\+40 is too large'),
    (Poly1CrossEntropyLoss, dict(class_weight=[1.0, 1e39]),
     r'class_weight\[1\]=1e\+39 is too large'),
    (Poly1CrossEntropyLoss, dict(ignore_index=-2**63 - 1), 'ignore_index must fit in int64'),
    (Poly1CrossEntropyLoss, dict(loss_weight=-1e39), 'loss_weight=-1e\\+39'),
])
def test_settings_that_would_overflow_at_the_first_call_are_refused(loss, kwargs, message):
    with pytest.raises(ValueError, match=message):
        loss(**kwargs)


def test_largest_accepted_settings_give_finite_values_and_gradients():
    """What construction accepts, the first call computes: finite where the value fits
    float32. A product of two settings that each fit (epsilon and class weight at
    float32's largest) is beyond float32 and comes out +inf, as in mmdet's own losses."""
    big = float(torch.finfo(torch.float32).max)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels, each = torch.tensor([0, 4, 2]), {'reduction_override': 'none'}  # a sum overflows
    for loss, kwargs in [(Poly1FocalLoss(epsilon=big, ignore_index=2**63 - 1), each),
                         (PolyNFocalLoss(epsilons=[1.0, big / 2], loss_weight=1e-30), {}),
                         (Poly1FocalLoss(gamma=big), {}),
                         (Poly1CrossEntropyLoss(epsilon=big, ignore_index=-2**63,
                                                avg_non_ignore=True), each),
                         (Poly1CrossEntropyLoss(class_weight=[1e30] * 4), {})]:
        x.grad = None
        value = loss(x, labels.clamp_max(3) if isinstance(loss, Poly1CrossEntropyLoss)
                     else labels, **kwargs)
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(x.grad).all(), (loss, value)
    overflow = Poly1CrossEntropyLoss(epsilon=big, class_weight=[big] * 4, reduction='none')
    assert torch.all(overflow(x.detach(), labels.clamp_max(3)) == float('inf'))
