"""The fused analytic-gradient path equals the composed-ops reference."""
import itertools

import pytest
import torch

from loss_inputs import make_labels, make_logits
from mmdet_polyloss.functional import poly_focal_loss

N, C = 61, 6
PARAMS = list(itertools.product(
    [(-1.0,), (0.0,), (1.0,), (-1.0, 0.4), (0.3, -0.2, 0.1)],  # epsilons
    [0.0, 0.5, 1.0, 2.0, 3.5],  # gamma
    [0.25, -1.0],  # alpha
    [True, False],  # alpha_weighted_poly
))


def _both(pred, labels, weight=None, **kwargs):
    """(fused, reference) loss and gradient for the same inputs."""
    results = []
    for implementation in ('auto', 'reference'):
        x = pred.detach().clone().requires_grad_()
        loss = poly_focal_loss(x, labels, weight, implementation=implementation,
                               allow_negative_loss=True, **kwargs)
        loss.backward(torch.linspace(0.5, 1.5, loss.numel(), device=loss.device,
                                     dtype=loss.dtype).reshape(loss.shape))
        results.append((loss.detach(), x.grad))
    return results


@pytest.mark.parametrize('epsilons,gamma,alpha,alpha_weighted_poly', PARAMS)
def test_fused_equals_reference_over_parameters(epsilons, gamma, alpha, alpha_weighted_poly):
    pred, labels = make_logits(N, C, dtype=torch.float64), make_labels(N, C)
    (loss, grad), (want_loss, want_grad) = _both(
        pred, labels, epsilons=epsilons, gamma=gamma, alpha=alpha,
        alpha_weighted_poly=alpha_weighted_poly, reduction='none')
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('weight_kind', ['none', 'per_sample', 'per_sample_2d', 'elementwise',
                                         'flat'])
@pytest.mark.parametrize('reduction,avg_factor', [('none', None), ('mean', None),
                                                  ('mean', 17.0), ('sum', None)])
def test_fused_equals_reference_over_weights_and_reductions(weight_kind, reduction, avg_factor,
                                                            device):
    pred = make_logits(N, C, device=device)
    labels = make_labels(N, C, device=device)
    gen = torch.Generator().manual_seed(5)
    weight = {'none': None,
              'per_sample': torch.rand(N, generator=gen),
              'per_sample_2d': torch.rand(N, 1, generator=gen),
              'elementwise': torch.rand(N, C, generator=gen),
              'flat': torch.rand(N * C, generator=gen)}[weight_kind]
    weight = None if weight is None else weight.to(device)
    (loss, grad), (want_loss, want_grad) = _both(pred, labels, weight, epsilons=(-1.0,),
                                                 reduction=reduction, avg_factor=avg_factor)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32])
def test_fused_half_precision_matches_reference(dtype, device):
    pred = make_logits(N, C, device=device, dtype=dtype)
    labels = make_labels(N, C, device=device)
    (loss, grad), (want_loss, want_grad) = _both(pred, labels, epsilons=(-1.0,),
                                                 avg_factor=9.0)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.float(), want_grad.float(), rtol=1e-2, atol=1e-3)


def test_fused_all_background_and_all_positive_rows(device):
    pred = make_logits(8, 3, device=device, dtype=torch.float64)
    for labels in (torch.full((8,), 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])):
        (loss, grad), (want_loss, want_grad) = _both(pred, labels.to(device), epsilons=(0.5,),
                                                     reduction='none')
        torch.testing.assert_close(loss, want_loss)
        torch.testing.assert_close(grad, want_grad)


def test_fused_saves_one_tensor_at_most_the_size_of_pred(device):
    """No one-hot, alpha_t or p_t is kept: CPU keeps the precomputed gradient,
    CUDA/Triton keeps only its inputs (the labels and a per-sample weight are N long)."""
    pred = make_logits(N, C, device=device).requires_grad_()
    labels, weight = make_labels(N, C, device=device), torch.rand(N, device=device)
    loss = poly_focal_loss(pred, labels, weight, epsilons=(-1.0,))
    node = loss.grad_fn
    while type(node).__name__ != 'FusedPolyFocalIndexBackward':
        node = node.next_functions[0][0]
    saved = node.saved_tensors
    big = [t for t in saved if t is not None and t.numel() > N]
    assert len(big) == 1 and big[0].shape == pred.shape
    if device == 'cpu':
        assert len(saved) == 1  # the gradient itself
    else:
        assert saved[0].data_ptr() == pred.data_ptr() and torch.equal(saved[1], labels)


def test_fused_path_is_taken_and_reference_is_not():
    pred = make_logits(N, C).requires_grad_()
    labels = make_labels(N, C)
    fused = poly_focal_loss(pred, labels, reduction='sum')
    reference = poly_focal_loss(pred, labels, reduction='sum', implementation='reference')
    assert type(fused.grad_fn).__name__ == 'FusedPolyFocalIndexBackward'
    assert type(reference.grad_fn).__name__ != 'FusedPolyFocalIndexBackward'
