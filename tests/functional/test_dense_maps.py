"""Focal losses on dense class-index maps (N, C, *) with (N, *) labels, and
``ignore_index``: equal to the flattened (N * prod(*), C) call, on every path."""
import re

import pytest
import torch

from mmdet_polyloss.functional import poly1_focal_loss, polyn_focal_loss
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

from loss_inputs import make_logits, one_hot, reference_poly_focal

B, C, H, W = 2, 4, 3, 5
SETTINGS = dict(epsilons=(-1.0, 0.3), gamma=1.5, alpha=0.25)


def _map_inputs(device='cpu', seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = make_logits(B * H * W, C, seed=seed).reshape(B, H, W, C).permute(0, 3, 1, 2)
    labels = torch.randint(0, C + 1, (B, H, W), generator=gen)  # C is background
    return logits.contiguous().to(device), labels.to(device)


def _rows(x):
    """(N, C, *) -> (N * prod(*), C), the layout the flattened call takes."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _value_and_grad(pred, labels, weight=None, path='auto', **kwargs):
    pred = pred.detach().clone().requires_grad_()
    loss = _polyn_focal_loss_on_path(path, pred, labels, weight, **SETTINGS, **kwargs)
    (loss.sum() if loss.dim() else loss).backward()
    return loss.detach(), pred.grad


WEIGHTS = ['none', 'elementwise', 'per_location', 'per_sample']


def _weight(kind, logits, labels):
    gen = torch.Generator().manual_seed(9)
    full = torch.rand(logits.shape, generator=gen).to(logits.device)
    location = torch.rand(labels.shape, generator=gen).to(logits.device)
    sample = torch.rand(B, generator=gen).to(logits.device)
    as_map = {'none': None, 'elementwise': full, 'per_location': location,
              'per_sample': sample}[kind]
    as_rows = {'none': None, 'elementwise': _rows(full), 'per_location': location.reshape(-1),
               'per_sample': sample[:, None, None].expand(labels.shape).reshape(-1)}[kind]
    return as_map, as_rows


@pytest.mark.parametrize('weight_kind', WEIGHTS)
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('path', ['auto', 'fused', 'reference'])
def test_dense_map_equals_the_flattened_call(weight_kind, reduction, path, device):
    logits, labels = _map_inputs(device)
    weight, row_weight = _weight(weight_kind, logits, labels)
    loss, grad = _value_and_grad(logits, labels, weight, reduction=reduction, path=path)
    want, want_grad = _value_and_grad(_rows(logits), labels.reshape(-1), row_weight,
                                      reduction=reduction, path=path)
    if reduction == 'none':
        assert loss.shape == logits.shape
        loss = _rows(loss)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(_rows(grad), want_grad)


def test_dense_map_matches_the_float64_formula():
    logits, labels = _map_inputs()
    logits = logits.double()
    got = polyn_focal_loss(logits, labels, **SETTINGS, reduction='none')
    want = reference_poly_focal(_rows(logits), one_hot(labels.reshape(-1), C),
                                SETTINGS['epsilons'], SETTINGS['gamma'], SETTINGS['alpha'])
    torch.testing.assert_close(_rows(got), want, rtol=1e-10, atol=1e-12)


def test_background_label_in_a_map_is_an_all_negative_row():
    logits, _ = _map_inputs()
    background = torch.full((B, H, W), C)
    got = poly1_focal_loss(logits, background, epsilon=-1.0, reduction='none')
    want = poly1_focal_loss(logits, torch.zeros_like(logits), epsilon=-1.0, reduction='none')
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize('path', ['auto', 'fused', 'reference'])
@pytest.mark.parametrize('shape', ['rows', 'map'])
def test_ignored_labels_contribute_nothing(path, shape, device):
    """An ignored element: loss 0 and gradient 0 on every class; 'mean' averages
    over the others; the rest equals the call without the ignored elements."""
    logits, labels = _map_inputs(device)
    labels = labels.clone()
    labels[0, 0, :3] = 255
    labels[1, 2, 4] = 255
    if shape == 'rows':
        logits, labels = _rows(logits), labels.reshape(-1)
    kept = (labels != 255).reshape(-1)
    loss, grad = _value_and_grad(logits, labels, reduction='none', ignore_index=255, path=path)
    assert torch.all(_rows(loss)[~kept] == 0) and torch.all(_rows(grad)[~kept] == 0)
    rows, row_labels = _rows(logits), labels.reshape(-1)
    want, want_grad = _value_and_grad(rows[kept], row_labels[kept], reduction='none', path=path)
    torch.testing.assert_close(_rows(loss)[kept], want)
    torch.testing.assert_close(_rows(grad)[kept], want_grad)
    mean, _ = _value_and_grad(logits, labels, ignore_index=255, path=path)
    torch.testing.assert_close(mean, want.mean())
    with_avg, _ = _value_and_grad(logits, labels, ignore_index=255, avg_factor=3.0,
                                  path=path)
    torch.testing.assert_close(with_avg, want.sum() / (3.0 + torch.finfo(torch.float32).eps))


def test_all_ignored_gives_zero_with_a_gradient():
    logits, labels = _map_inputs()
    loss, grad = _value_and_grad(logits, torch.full_like(labels, -1), ignore_index=-1)
    assert loss.item() == 0.0 and torch.all(grad == 0)


@pytest.mark.parametrize('call,error,message', [
    (lambda x, y: poly1_focal_loss(x, y[:, :2]), ValueError,
     'target shape (2, 2, 5) does not match pred shape (2, 4, 3, 5)'),
    (lambda x, y: poly1_focal_loss(x, y.float()), TypeError,
     'must hold integer class indices, got dtype torch.float32'),
    (lambda x, y: poly1_focal_loss(x, y, torch.ones(2, 3)), ValueError,
     'weight shape (2, 3) does not fit pred shape (2, 4, 3, 5)'),
    (lambda x, y: poly1_focal_loss(x, y.masked_fill(y == 0, 7)), ValueError,
     'target labels must be in [0, 4] (num_classes=4 is background), got 7'),
    (lambda x, y: poly1_focal_loss(x, y.masked_fill(y == 0, 7), ignore_index=255), ValueError,
     'target labels must be in [0, 4] (num_classes=4 is background) or ignore_index=255, '
     'got 7'),
    (lambda x, y: poly1_focal_loss(x, torch.zeros_like(x), ignore_index=255), ValueError,
     'ignore_index=255 needs class-index targets'),
    (lambda x, y: poly1_focal_loss(x, y, ignore_index=2.0), TypeError,
     'ignore_index must be an int, got 2.0 of type float'),
])
def test_bad_dense_inputs(call, error, message):
    logits, labels = _map_inputs()
    with pytest.raises(error, match=re.escape(message)):
        call(logits, labels)
