"""Poly1CrossEntropyLoss at epsilon 0 equals mmdet's CrossEntropyLoss; registry; errors."""
import re
import warnings

import pytest
import torch
from mmdet.models.losses import CrossEntropyLoss
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope

import mmdet_polyloss  # noqa: F401
from mmdet_polyloss import Poly1CrossEntropyLoss

from loss_inputs import make_logits

N, C = 41, 5
CLASS_WEIGHT = [0.5, 2.0, 1.0, 0.0, 1.5]


def _compare(kwargs, pred, label, weight, avg_factor, reduction_override=None):
    ours_pred, theirs_pred = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # both warn about ignore_index without avg_non_ignore
        ours = Poly1CrossEntropyLoss(epsilon=0.0, **kwargs)
        theirs = CrossEntropyLoss(**kwargs)
    a = ours(ours_pred, label, weight, avg_factor=avg_factor,
             reduction_override=reduction_override)
    b = theirs(theirs_pred, label, weight, avg_factor=avg_factor,
               reduction_override=reduction_override)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    grad = torch.rand_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(ours_pred.grad, theirs_pred.grad, rtol=1e-5, atol=1e-6)


SETTINGS = [dict(), dict(class_weight=CLASS_WEIGHT), dict(ignore_index=255),
            dict(ignore_index=255, avg_non_ignore=True),
            dict(class_weight=CLASS_WEIGHT, ignore_index=255, avg_non_ignore=True,
                 loss_weight=2.0)]


@pytest.mark.parametrize('settings', SETTINGS)
@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('mean', 13.0),
                                                  ('sum', None), ('none', None)])
@pytest.mark.parametrize('with_weight', [False, True])
def test_softmax_epsilon_zero_equals_mmdet(settings, reduction, avg_factor, with_weight):
    pred = make_logits(N, C)
    label = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(0))
    if 'ignore_index' in settings:
        label[::6] = 255
    weight = torch.rand(N) if with_weight else None
    _compare(dict(settings, reduction=reduction), pred, label, weight, avg_factor)


@pytest.mark.parametrize('settings', SETTINGS)
@pytest.mark.parametrize('label_kind', ['index', 'rpn', 'soft'])
@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('mean', 13.0), ('sum', None)])
def test_sigmoid_epsilon_zero_equals_mmdet(settings, label_kind, reduction, avg_factor):
    gen = torch.Generator().manual_seed(1)
    channels = 1 if label_kind == 'rpn' else C
    if label_kind == 'rpn' and 'class_weight' in settings:
        settings = dict(settings, class_weight=[1.7])
    pred = make_logits(N, channels)
    if label_kind == 'soft':
        label = torch.rand(N, C, generator=gen)
        weight = torch.rand(N, C, generator=gen)
    else:  # class indices; channels (background) means all-zero targets
        label = torch.randint(0, channels + 1, (N,), generator=gen)
        weight = torch.rand(N, generator=gen)
    if 'ignore_index' in settings:
        label[::7] = 255
    _compare(dict(settings, use_sigmoid=True, reduction=reduction), pred, label, weight,
             avg_factor)


def test_reduction_override_and_ignore_index_override():
    pred = make_logits(N, C)
    label = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(4))
    label[:4] = 7
    for override in ('none', 'sum', 'mean'):
        ours = Poly1CrossEntropyLoss(epsilon=0.0)(pred, label, reduction_override=override,
                                                  ignore_index=7)
        theirs = CrossEntropyLoss()(pred, label, reduction_override=override, ignore_index=7)
        torch.testing.assert_close(ours, theirs)


def test_registry_and_epsilon_effect():
    with DefaultScope.overwrite_default_scope('mmdet'):  # as mmdet's runner builds
        loss = MODELS.build(dict(type='Poly1CrossEntropyLoss', epsilon=-1.0, loss_weight=1.0))
    assert type(loss) is Poly1CrossEntropyLoss and loss.use_sigmoid is False
    pred = make_logits(N, C)
    label = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(5))
    p_y = torch.softmax(pred, 1).gather(1, label[:, None]).squeeze(1)
    torch.testing.assert_close(loss(pred, label),
                               CrossEntropyLoss()(pred, label) - (1 - p_y).mean())


@pytest.mark.parametrize('kwargs,message', [
    (dict(epsilon=-3.0), 'epsilon=-3.0 is below -1'),
    (dict(class_weight=[1.0, -1.0]), 'class_weight must hold one per class finite '
                                     'non-negative weights, got [1.0, -1.0]'),
    (dict(reduction='avg'), "reduction must be one of ('none', 'mean', 'sum'), got 'avg'"),
    (dict(use_mask=True), 'Poly1CrossEntropyLoss has no mask form, got use_mask=True'),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Poly1CrossEntropyLoss(**kwargs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(ignore_index='255'), "ignore_index must be an int or None, got '255' of type str"),
    # Strings from YAML or --cfg-options: bool('False') would be True.
    (dict(use_sigmoid='False'), "use_sigmoid must be a bool, got 'False' of type str"),
    (dict(avg_non_ignore='False'), "avg_non_ignore must be a bool, got 'False' of type str"),
    (dict(class_weight=1234), 'class_weight must be a sequence of numbers, a file path or None, '
                              'got 1234 of type int'),
    (dict(loss_weight='2'), "loss_weight must be a real number, got '2' of type str"),
])
def test_constructor_arguments_of_the_wrong_type(kwargs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        Poly1CrossEntropyLoss(**kwargs)


def test_a_string_class_weight_is_a_file_not_its_digits():
    """'1234' from a YAML file used to become four weights (1, 2, 3, 4)."""
    with pytest.raises(ValueError, match="class_weight '1234' is a string but no such file"):
        Poly1CrossEntropyLoss(class_weight='1234')


def test_settings_are_read_only():
    loss = Poly1CrossEntropyLoss(epsilon=-1.0)
    with pytest.raises(AttributeError):
        loss.epsilon = -5.0  # would bypass the epsilon >= -1 check
    assert loss.epsilon == -1.0
    for name in ('use_sigmoid', 'reduction', 'loss_weight', 'ignore_index', 'class_weight',
                 'avg_non_ignore', 'label_smoothing', 'allow_negative_loss'):
        with pytest.raises(AttributeError, match=re.escape(
                f'Poly1CrossEntropyLoss.{name} is read-only')):
            setattr(loss, name, getattr(loss, name))
    assert (loss.use_sigmoid, loss.reduction, loss.ignore_index) == (False, 'mean', None)


def test_label_smoothing_and_soft_targets_through_the_module():
    """At epsilon 0 the smoothed loss is mmpretrain-style label smoothing, which
    torch's cross_entropy computes; soft targets take the same path."""
    logits = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    module = Poly1CrossEntropyLoss(epsilon=0.0, label_smoothing=0.1, loss_weight=2.0)
    assert 'label_smoothing=0.1' in repr(module) and module.label_smoothing == 0.1
    want = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(module(logits, labels), 2.0 * want)
    soft = torch.nn.functional.one_hot(labels, 4).float() * 0.9 + 0.1 / 4
    plain = Poly1CrossEntropyLoss(epsilon=0.0, loss_weight=2.0)
    torch.testing.assert_close(plain(logits, soft), 2.0 * want)
    with pytest.raises(ValueError, match=re.escape(
            'label_smoothing=0.1 is for the softmax form; use_sigmoid=True has none')):
        Poly1CrossEntropyLoss(use_sigmoid=True, label_smoothing=0.1)
