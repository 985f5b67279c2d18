"""The registered modules: mmdet's FocalLoss at epsilon 0, the registry, errors."""
import re

import pytest
import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope

import mmdet_polyloss  # noqa: F401  (registers the losses)
from mmdet_polyloss import Poly1FocalLoss, PolyNFocalLoss
from mmdet_polyloss.functional import poly1_focal_loss, polyn_focal_loss

from loss_inputs import make_labels, make_logits, make_soft_targets

N, C = 53, 7


def _inputs(label_format: str, weight_kind: str, device: str):
    """pred, target and weight for one of the label formats mmdet heads use."""
    if label_format == 'index':
        pred, target = make_logits(N, C), make_labels(N, C)
    elif label_format == 'one_hot':
        pred = make_logits(N, C)
        target = torch.nn.functional.one_hot(make_labels(N, C), C + 1)[:, :C].float()
    elif label_format == 'soft':
        pred, target = make_logits(N, C), make_soft_targets((N, C))
    else:  # dense map, as in some one-stage heads: (B, C, H, W)
        pred = make_logits(2 * 4 * 5, C).reshape(2, C, 4, 5)
        target = make_soft_targets((2, C, 4, 5))
    weight = {'none': None,
              'per_sample': torch.rand(pred.shape[0]),
              'elementwise': torch.rand(pred.shape)}[weight_kind]
    return tuple(None if t is None else t.to(device) for t in (pred, target, weight))


CASES = [(fmt, w) for fmt in ('index', 'one_hot', 'soft', 'dense_map')
         for w in ('none', 'per_sample', 'elementwise')
         if not (fmt == 'dense_map' and w == 'per_sample')]  # mmdet rejects that one


@pytest.mark.parametrize('label_format,weight_kind', CASES)
@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('mean', 11.0),
                                                  ('sum', None), ('none', None)])
@pytest.mark.parametrize('activated', [False, True])
def test_epsilon_zero_equals_mmdet_focal_loss(label_format, weight_kind, reduction, avg_factor,
                                              activated, device):
    if activated and label_format == 'index' and device == 'cuda':
        pytest.skip('mmdet one-hot encodes on the device; same path as the CPU case')
    pred, target, weight = _inputs(label_format, weight_kind, device)
    if activated:
        pred = torch.sigmoid(pred)
    kwargs = dict(use_sigmoid=True, gamma=1.7, alpha=0.3, reduction=reduction,
                  loss_weight=2.5, activated=activated)
    ours_pred = pred.clone().requires_grad_()
    theirs_pred = pred.clone().requires_grad_()
    ours = Poly1FocalLoss(epsilon=0.0, **kwargs)(ours_pred, target, weight, avg_factor=avg_factor)
    theirs = FocalLoss(**kwargs)(theirs_pred, target, weight, avg_factor=avg_factor)
    # On CUDA, mmdet sends class indices to mmcv's kernel, which takes log(1 - p)
    # of a float32 sigmoid: for a background logit x its relative error is about
    # 2^-25 / ((1 - p) |log(1 - p)|), up to ~4e-5 at the |x| < 9.5 drawn here
    # (ours uses a stable softplus). Everywhere else mmdet runs torch ops.
    mmcv_kernel = device == 'cuda' and label_format == 'index' and not activated
    torch.testing.assert_close(ours, theirs, rtol=1e-4 if mmcv_kernel else 1e-5, atol=1e-6)
    grad_out = torch.rand_like(ours)
    ours.backward(grad_out)
    theirs.backward(grad_out)
    torch.testing.assert_close(ours_pred.grad, theirs_pred.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('override', ['none', 'sum', 'mean'])
def test_reduction_override_equals_mmdet(override):
    pred, labels = make_logits(N, C), make_labels(N, C)
    ours = Poly1FocalLoss(epsilon=0.0, reduction='mean')(pred, labels, reduction_override=override)
    theirs = FocalLoss(reduction='mean')(pred, labels, reduction_override=override)
    torch.testing.assert_close(ours, theirs)


def test_module_applies_epsilon_and_loss_weight_last():
    pred, labels = make_logits(N, C), make_labels(N, C)
    weight = torch.rand(N)
    module = Poly1FocalLoss(epsilon=-1.0, gamma=2.0, alpha=0.25, loss_weight=3.0)
    want = 3.0 * polyn_focal_loss(pred, labels, weight, epsilons=(-1.0,), avg_factor=9.0)
    torch.testing.assert_close(module(pred, labels, weight, avg_factor=9.0), want)
    assert module.epsilon == -1.0 and module.use_sigmoid is True


def test_registry_builds_both_losses_with_their_arguments():
    with DefaultScope.overwrite_default_scope('mmdet'):  # as mmdet's runner builds
        poly1 = MODELS.build(dict(type='Poly1FocalLoss', use_sigmoid=True, gamma=1.0,
                                  alpha=0.5, epsilon=-1.0, alpha_weighted_poly=False,
                                  loss_weight=2.0, allow_negative_loss=True))
        polyn = MODELS.build(dict(type='PolyNFocalLoss', epsilons=[-1.0, 0.25]))
    assert type(poly1) is Poly1FocalLoss
    assert (poly1.gamma, poly1.alpha, poly1.epsilons, poly1.alpha_weighted_poly,
            poly1.loss_weight) == (1.0, 0.5, (-1.0,), False, 2.0)
    assert polyn.epsilons == (-1.0, 0.25)
    pred, labels = make_logits(N, C), make_labels(N, C)
    torch.testing.assert_close(
        polyn(pred, labels),
        polyn_focal_loss(pred, labels, epsilons=(-1.0, 0.25)))


def test_registration_needs_only_importing_the_plugin():
    """What ``custom_imports=dict(imports=['mmdet_polyloss'])`` does, in a fresh
    interpreter: the type resolves without importing mmdet.models first."""
    import subprocess
    import sys
    code = ('import mmdet_polyloss\n'
            'from mmdet.registry import MODELS\n'
            'print(type(MODELS.build(dict(type="Poly1FocalLoss", epsilon=-1.0))).__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'Poly1FocalLoss'


@pytest.mark.parametrize('kwargs,message', [
    (dict(use_sigmoid=False), 'Poly1FocalLoss is sigmoid-only, got use_sigmoid=False'),
    (dict(gamma=-1.0), 'gamma must be >= 0.0, got -1.0'),
    (dict(epsilon=-2.0), 'epsilon=-2.0 is below -1'),
    (dict(reduction='batchmean'), "reduction must be one of ('none', 'mean', 'sum'), "
                                  "got 'batchmean'"),
    (dict(loss_weight=float('inf')), 'loss_weight must be a finite number, got inf'),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Poly1FocalLoss(**kwargs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(loss_weight=None), 'loss_weight must be a real number, got None of type NoneType'),
    # Strings from YAML or --cfg-options: bool('False') would be True.
    (dict(use_sigmoid='False'), "use_sigmoid must be a bool, got 'False' of type str"),
    (dict(alpha_weighted_poly='False'),
     "alpha_weighted_poly must be a bool, got 'False' of type str"),
    (dict(allow_negative_loss='False', epsilon=-2.0),
     "allow_negative_loss must be a bool, got 'False' of type str"),
    (dict(activated='no'), "activated must be a bool, got 'no' of type str"),
    (dict(epsilon='-1'), "epsilon must be a real number, got '-1' of type str"),
    (dict(reduction=0), "reduction must be one of ('none', 'mean', 'sum'), got 0 of type int"),
])
def test_constructor_arguments_of_the_wrong_type(kwargs, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        Poly1FocalLoss(**kwargs)


def test_settings_are_checked_once_and_read_only():
    """The module validates in __init__; a later assignment cannot bypass that."""
    loss = Poly1FocalLoss(epsilon=-1.0)
    for name, value in (('epsilon', -3.0), ('gamma', -1.0), ('epsilons', (-3.0,)),
                        ('alpha_weighted_poly', False), ('use_sigmoid', False)):
        with pytest.raises(AttributeError):
            setattr(loss, name, value)
    assert (loss.epsilon, loss.gamma, loss.use_sigmoid) == (-1.0, 2.0, True)


def _record_checked_names(monkeypatch) -> list:
    """Patch the scalar checks (in checks.py and where the modules import them)
    to record the name of each argument they validate."""
    from mmdet_polyloss.functional import checks
    from mmdet_polyloss.losses import poly_cross_entropy_loss, poly_focal_loss
    names = []

    def recording(check):
        def spy(name, *args, **kwargs):
            names.append(name)
            return check(name, *args, **kwargs)
        return spy
    for check in ('check_real', 'check_bool', 'check_choice', 'check_int'):
        spy = recording(getattr(checks, check))
        for module in (checks, poly_focal_loss, poly_cross_entropy_loss):
            if hasattr(module, check):
                monkeypatch.setattr(module, check, spy)
    return names


@pytest.mark.parametrize('build', [
    lambda: Poly1FocalLoss(epsilon=-1.0, ignore_index=255, allow_negative_loss=True),
    lambda: PolyNFocalLoss(epsilons=(-1.0, 0.5), activated=True),
    lambda: mmdet_polyloss.Poly1CrossEntropyLoss(epsilon=-1.0, class_weight=[1.0, 2.0],
                                                 ignore_index=3, avg_non_ignore=True),
    lambda: poly1_focal_loss(make_logits(N, C), make_labels(N, C), epsilon=-1.0,
                             ignore_index=255),
], ids=['Poly1FocalLoss', 'PolyNFocalLoss', 'Poly1CrossEntropyLoss', 'poly1_focal_loss'])
def test_each_argument_is_validated_once(build, monkeypatch):
    names = _record_checked_names(monkeypatch)
    build()
    assert 'reduction' in names and any(name.startswith('epsilon') for name in names)
    assert sorted(names) == sorted(set(names))


def test_bad_forward_arguments():
    module = Poly1FocalLoss()
    pred, labels = make_logits(N, C), make_labels(N, C)
    with pytest.raises(ValueError, match=re.escape(
            "reduction_override must be one of ('none', 'mean', 'sum'), got 'avg'")):
        module(pred, labels, reduction_override='avg')
    with pytest.raises(ValueError, match=re.escape(
            "avg_factor=3.0 cannot be used with reduction_override='sum'")):
        module(pred, labels, avg_factor=3.0, reduction_override='sum')
    with pytest.raises(ValueError, match=re.escape(
            f'target labels must be in [0, {C}] (num_classes={C} is background), got -1')):
        module(pred, torch.full((N,), -1))


def test_printed_module_shows_its_arguments():
    """print(model) is how a user checks what a config built."""
    text = repr(Poly1FocalLoss(epsilon=-1.0, activated=True))
    assert 'epsilon=-1.0' in text and 'epsilons' not in text and 'activated=True' in text
    text = repr(PolyNFocalLoss(epsilons=(-1.0, 0.5), alpha_weighted_poly=False,
                               allow_negative_loss=True))
    assert 'epsilons=(-1.0, 0.5)' in text and 'allow_negative_loss=True' in text


def test_ignore_index_reaches_the_loss():
    """A dense head's map with an ignore label, through the registered module."""
    logits = make_logits(2 * 3 * 4, C).reshape(2, 3, 4, C).permute(0, 3, 1, 2)
    labels = torch.randint(0, C + 1, (2, 3, 4), generator=torch.Generator().manual_seed(3))
    labels[0, 0] = -1
    module = Poly1FocalLoss(epsilon=-1.0, ignore_index=-1, loss_weight=2.0)
    assert 'ignore_index=-1' in repr(module)
    kept = labels != -1
    want = poly1_focal_loss(logits.permute(0, 2, 3, 1)[kept], labels[kept], epsilon=-1.0,
                            reduction='sum')
    torch.testing.assert_close(module(logits, labels, reduction_override='sum'), 2.0 * want)
    with pytest.raises(TypeError, match="ignore_index must be an int, got '255'"):
        Poly1FocalLoss(ignore_index='255')
