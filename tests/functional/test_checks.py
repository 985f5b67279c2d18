"""Every bad input raises a ValueError (bad value) or TypeError (bad type) that
names the argument and its value."""
import re

import pytest
import torch

from mmdet_polyloss.functional import (
    poly1_focal_loss,
    polyn_focal_loss,
    set_value_checks,
    value_checks_enabled,
)
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

from loss_inputs import make_labels, make_logits

LOGITS = make_logits(6, 3)
LABELS = make_labels(6, 3)


@pytest.mark.parametrize('kwargs,message', [
    (dict(gamma=-0.5), 'gamma must be >= 0.0, got -0.5'),
    (dict(gamma=float('nan')), 'gamma must be a finite number, got nan'),
    (dict(alpha=1.5), 'alpha must be in [0, 1] (or negative to disable alpha weighting), got 1.5'),
    (dict(epsilon=-1.5), 'epsilon=-1.5 is below -1'),
    (dict(reduction='avg'), "reduction must be one of ('none', 'mean', 'sum'), got 'avg'"),
    (dict(reduction='sum', avg_factor=4.0), "avg_factor=4.0 cannot be used with reduction='sum'"),
    (dict(avg_factor=-3.0), 'a one-element tensor, got -3.0'),
    (dict(avg_factor=float('nan')), 'a one-element tensor, got nan'),
    (dict(avg_factor=torch.tensor([1.0, 2.0])),
     'a one-element tensor, got a tensor of shape (2,) and dtype torch.float32'),
])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        poly1_focal_loss(LOGITS, LABELS, **kwargs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(epsilon='1'), "epsilon must be a real number, got '1' of type str"),
    (dict(gamma=None), 'gamma must be a real number, got None of type NoneType'),
    (dict(alpha=True), 'alpha must be a real number, got True of type bool'),
    # Strings from YAML or --cfg-options: bool('False') would be True.
    (dict(alpha_weighted_poly='False'),
     "alpha_weighted_poly must be a bool, got 'False' of type str"),
    (dict(allow_negative_loss='False', epsilon=-2.0),
     "allow_negative_loss must be a bool, got 'False' of type str"),
    (dict(activated=1), 'activated must be a bool, got 1 of type int'),
    (dict(reduction=None), "reduction must be one of ('none', 'mean', 'sum'), got None of "
                           'type NoneType'),
    (dict(avg_factor='3'), "avg_factor must be None, a finite number >= 0 or a one-element "
                           "tensor, got '3' of type str"),
    (dict(avg_factor=True), 'a one-element tensor, got True of type bool'),
])
def test_wrong_types_raise_type_error(kwargs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        poly1_focal_loss(LOGITS, LABELS, **kwargs)


def test_forcing_a_path_names_the_paths():
    """The tests' and benchmark's path switch (not public) refuses what it cannot run."""
    with pytest.raises(ValueError, match=re.escape(
            "path must be one of ('auto', 'fused', 'reference'), got 'fast'")):
        _polyn_focal_loss_on_path('fast', LOGITS, LABELS)
    with pytest.raises(ValueError, match=re.escape("path='fused' needs class-index targets")):
        _polyn_focal_loss_on_path('fused', LOGITS, torch.zeros(6, 3))


def test_numpy_bools_and_numbers_are_accepted():
    import numpy as np
    want = poly1_focal_loss(LOGITS, LABELS, epsilon=-0.5, alpha_weighted_poly=False,
                            allow_negative_loss=True)
    got = poly1_focal_loss(LOGITS, LABELS, epsilon=np.float32(-0.5),
                           alpha_weighted_poly=np.bool_(False), allow_negative_loss=np.True_)
    torch.testing.assert_close(got, want)


def test_epsilon_below_minus_one_needs_explicit_opt_in():
    loss = poly1_focal_loss(LOGITS, LABELS, epsilon=-1.5, allow_negative_loss=True,
                            reduction='none')
    assert loss.min() < 0  # the opt-in really gives the unbounded-below form


@pytest.mark.parametrize('epsilons,message', [
    ((), 'epsilons must be a non-empty sequence of numbers, got ()'),
    ((0.0, -0.6), 'epsilons[1]=-0.6 is below -1/2'),
    ((0.0, -0.2), None),  # -0.2 >= -1/2: accepted
    ((0.0, float('inf')), 'epsilons[1] must be a finite number, got inf'),
])
def test_bad_polyn_epsilons(epsilons, message):
    if message is None:
        assert polyn_focal_loss(LOGITS, LABELS, epsilons=epsilons) > 0
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        polyn_focal_loss(LOGITS, LABELS, epsilons=epsilons)


@pytest.mark.parametrize('alpha,epsilons,message', [
    (0.25, (-0.3,), 'epsilon=-0.3 is below -0.25 (with alpha_weighted_poly=False'),
    (0.25, (-0.25,), None),
    (0.9, (-0.11,), 'epsilon=-0.11 is below -0.1 (with alpha_weighted_poly=False'),
    (0.25, (0.0, -0.13), 'epsilons[1]=-0.13 is below -0.125 (with'),
    (-1.0, (-1.0,), None),  # no alpha weighting: the bound is -1 again
    (1.0, (-0.01,), 'epsilon=-0.01 is below 0 (with alpha_weighted_poly=False'),
])
def test_unweighted_epsilon_bound_follows_alpha(alpha, epsilons, message):
    kwargs = dict(epsilons=epsilons, alpha=alpha, alpha_weighted_poly=False)
    if message is None:
        assert polyn_focal_loss(LOGITS, LABELS, **kwargs) >= 0
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        polyn_focal_loss(LOGITS, LABELS, **kwargs)


@pytest.mark.parametrize('bad_label', [-1, 4, 100])
def test_labels_outside_zero_to_num_classes(bad_label):
    labels = LABELS.clone()
    labels[2] = bad_label
    with pytest.raises(ValueError, match=re.escape(
            f'target labels must be in [0, 3] (num_classes=3 is background), got {bad_label}')):
        poly1_focal_loss(LOGITS, labels)


@pytest.mark.parametrize('bad_value', [-0.1, 1.5, float('nan')])
def test_float_targets_outside_unit_interval(bad_value):
    target = torch.zeros(6, 3)
    target[1, 2] = bad_value
    message = f'target values must be in [0, 1], got {bad_value}'
    with pytest.raises(ValueError, match=re.escape(message)):
        poly1_focal_loss(LOGITS, target)


def test_probabilities_outside_unit_interval_when_activated():
    with pytest.raises(ValueError, match=r'pred must hold probabilities in \[0, 1\] when '
                                         r'activated=True, got'):
        poly1_focal_loss(LOGITS, LABELS, activated=True)


@pytest.mark.parametrize('bad_value', [float('nan'), 1.5])
def test_one_bad_probability_among_good_ones_is_caught(bad_value):
    """Both ranges (labels and probabilities) come back in one sync; a bad
    probability must not hide behind valid labels, nor NaN pass as in range."""
    probs = torch.full((6, 3), 0.5)
    probs[4, 1] = bad_value
    with pytest.raises(ValueError, match=f'activated=True, got {bad_value}'):
        poly1_focal_loss(probs, LABELS, activated=True)
    # The same probabilities with a soft (float) target of pred's shape.
    with pytest.raises(ValueError, match=f'activated=True, got {bad_value}'):
        poly1_focal_loss(probs, torch.zeros(6, 3), activated=True)


@pytest.mark.parametrize('pred,target,message', [
    (LOGITS, LABELS[:5], 'target shape (5,) does not match pred shape (6, 3)'),
    (LOGITS, torch.zeros(6, 4), 'target shape (6, 4) does not match pred shape (6, 3)'),
    (LOGITS.reshape(2, 3, 3), LABELS, 'target shape (6,) does not match pred shape (2, 3, 3)'),
])
def test_mismatched_pred_and_target(pred, target, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        poly1_focal_loss(pred, target)


@pytest.mark.parametrize('pred,target,weight,message', [
    (LOGITS, LABELS.float(), None, 'must hold integer class indices, got dtype torch.float32'),
    (LABELS, LABELS, None, 'pred must be a floating-point tensor, got tensor of dtype '
                           'torch.int64'),
    (LOGITS.tolist(), LABELS, None, 'pred must be a floating-point tensor, got list'),
    (LOGITS, [0, 1], None, 'target must be a tensor, got list'),
    (LOGITS, LABELS, [1.0] * 6, 'weight must be a tensor or None, got list'),
    (LOGITS, 0.5, None, 'target must be a tensor, got float'),
])
def test_inputs_of_the_wrong_type(pred, target, weight, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        poly1_focal_loss(pred, target, weight)


def test_polyn_epsilons_of_the_wrong_type():
    with pytest.raises(TypeError, match=re.escape(
            'epsilons must be a non-empty sequence of numbers, got 0.5 of type float')):
        polyn_focal_loss(LOGITS, LABELS, epsilons=0.5)
    with pytest.raises(TypeError, match=re.escape("epsilons[1] must be a real number, got '1'")):
        polyn_focal_loss(LOGITS, LABELS, epsilons=(0.5, '1'))


@pytest.mark.parametrize('weight', [torch.ones(5), torch.ones(6, 2), torch.ones(3, 6)])
def test_weight_shape_that_does_not_fit(weight):
    with pytest.raises(ValueError, match=re.escape(
            f'weight shape {tuple(weight.shape)} does not fit pred shape (6, 3)')):
        poly1_focal_loss(LOGITS, LABELS, weight)


def test_avg_factor_as_a_tensor_equals_the_number():
    """mmdet heads pass avg_factor as a number or a reduced tensor, 0-dim or (1,);
    the loss is a scalar either way, and 0 is allowed (mmdet's rule: sum / eps)."""
    want = poly1_focal_loss(LOGITS, LABELS, avg_factor=4.0)
    for avg_factor in (torch.tensor(4.0), torch.tensor([4.0]), torch.tensor([[4]])):
        got = poly1_focal_loss(LOGITS, LABELS, avg_factor=avg_factor)
        assert got.shape == ()
        torch.testing.assert_close(got, want)
    total = poly1_focal_loss(LOGITS, LABELS, reduction='sum')
    torch.testing.assert_close(poly1_focal_loss(LOGITS, LABELS, avg_factor=0),
                               total / torch.finfo(torch.float32).eps)


def test_pred_without_classes():
    with pytest.raises(ValueError, match=re.escape('pred of shape (6, 0) has no classes')):
        poly1_focal_loss(torch.zeros(6, 0), torch.zeros(6, dtype=torch.long))


@pytest.fixture
def value_checks_off():
    previous = set_value_checks(False)
    yield
    set_value_checks(previous)


def test_value_checks_can_be_switched_off(value_checks_off, device):
    """Off: no range check (no host sync); shapes, dtypes and hyper-parameters are
    still checked, since they cost nothing."""
    assert not value_checks_enabled()
    logits, labels = LOGITS.to(device), LABELS.to(device)
    bad = labels.clone()
    bad[0] = -1
    if device == 'cuda':  # no host sync at all on the fused path
        torch.cuda.set_sync_debug_mode('error')
        try:
            poly1_focal_loss(logits, bad)
        finally:
            torch.cuda.set_sync_debug_mode('default')
    assert torch.isfinite(poly1_focal_loss(logits, bad))
    target = torch.full((6, 3), 2.0, device=device)
    poly1_focal_loss(logits, target)  # outside [0, 1], not checked
    with pytest.raises(ValueError, match='target shape'):
        poly1_focal_loss(logits, labels[:5])
    with pytest.raises(ValueError, match='gamma must be >= 0.0'):
        poly1_focal_loss(logits, labels, gamma=-1.0)


def test_value_checks_switch_restores_and_validates():
    assert value_checks_enabled()  # on by default
    assert set_value_checks(False) is True
    assert set_value_checks(True) is False
    with pytest.raises(ValueError, match='target labels must be in'):
        poly1_focal_loss(LOGITS, torch.full((6,), 7))
    with pytest.raises(TypeError, match="enabled must be a bool, got 'no'"):
        set_value_checks('no')


def test_value_checks_default_comes_from_the_environment():
    import subprocess
    import sys
    code = ('from mmdet_polyloss.functional import value_checks_enabled; '
            'print(value_checks_enabled())')
    for value, want in (('0', 'False'), ('1', 'True')):
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                             env={**__import__('os').environ, 'POLYLOSS_VALUE_CHECKS': value})
        assert out.stdout.strip() == want, out.stderr


def test_unchecked_labels_outside_the_classes_are_background(value_checks_off):
    """With the checks off, every path treats a bad class label as background
    (mmcv's kernel does the same), rather than reading out of bounds."""
    bad = LABELS.clone()
    bad[:2] = torch.tensor([-1, 7])
    as_background = bad.clone()
    as_background[:2] = 3
    want = poly1_focal_loss(LOGITS, as_background, reduction='none')
    for path in ('auto', 'reference'):
        got = _polyn_focal_loss_on_path(path, LOGITS, bad, epsilons=(1.0,), reduction='none')
        torch.testing.assert_close(got, want)
