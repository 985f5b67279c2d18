"""The fused analytic-gradient path equals the composed-ops reference."""
import itertools

import pytest
import torch

from mmdet_polyloss.functional import fused, polyn_focal_loss
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

from loss_inputs import make_labels, make_logits

N, C = 61, 6
N_LARGE = 401  # x C = 2406 elements: on CUDA more than two Triton blocks of 1024
PARAMS = list(itertools.product(
    [(-1.0,), (0.0,), (1.0,), (-1.0, 0.4), (0.3, -0.2, 0.1)],  # epsilons
    [0.0, 0.5, 1.0, 2.0, 3.5],  # gamma
    [0.25, -1.0],  # alpha
    [True, False],  # alpha_weighted_poly
))


def _both(pred, labels, weight=None, **kwargs):
    """(fused, reference) loss and gradient for the same inputs."""
    results = []
    for path in ('fused', 'reference'):
        x = pred.detach().clone().requires_grad_()
        loss = _polyn_focal_loss_on_path(path, x, labels, weight, allow_negative_loss=True,
                                         **kwargs)
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
@pytest.mark.parametrize('block_elements', [None, 50])
def test_fused_equals_reference_over_weights_and_reductions(weight_kind, reduction, avg_factor,
                                                            block_elements, device,
                                                            monkeypatch):
    """block_elements=50: the CPU path's blocks of rows are 8 rows, the last one
    partial (401 rows), as a 100k x 80 input is cut into blocks (on CUDA: one
    block whatever the setting)."""
    if block_elements is not None:
        monkeypatch.setattr(fused, 'BLOCK_ELEMENTS', block_elements)
    pred = make_logits(N_LARGE, C, device=device)
    labels = make_labels(N_LARGE, C, device=device)
    gen = torch.Generator().manual_seed(5)
    weight = {'none': None,
              'per_sample': torch.rand(N_LARGE, generator=gen),
              'per_sample_2d': torch.rand(N_LARGE, 1, generator=gen),
              'elementwise': torch.rand(N_LARGE, C, generator=gen),
              'flat': torch.rand(N_LARGE * C, generator=gen)}[weight_kind]
    weight = None if weight is None else weight.to(device)
    (loss, grad), (want_loss, want_grad) = _both(pred, labels, weight, epsilons=(-1.0,),
                                                 reduction=reduction, avg_factor=avg_factor)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32])
def test_fused_half_precision_matches_reference(dtype, device):
    pred = make_logits(N_LARGE, C, device=device, dtype=dtype)
    labels = make_labels(N_LARGE, C, device=device)
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


def test_fused_saves_its_inputs_and_at_most_one_new_tensor_the_size_of_pred(device):
    """No one-hot, alpha_t or p_t is kept: besides its inputs (pred itself, the
    labels, a per-sample weight) CPU keeps the precomputed gradient and
    CUDA/Triton nothing."""
    pred = make_logits(N, C, device=device).requires_grad_()
    labels, weight = make_labels(N, C, device=device), torch.rand(N, device=device)
    loss = polyn_focal_loss(pred, labels, weight, epsilons=(-1.0,))
    node = loss.grad_fn
    while type(node).__name__ != 'PolyFocalFusedFunctionBackward':
        node = node.next_functions[0][0]
    saved = [t for t in node.saved_tensors if t is not None]
    assert saved[0].data_ptr() == pred.data_ptr() and torch.equal(saved[1], labels)
    new_big = [t for t in saved[2:] if t.numel() > N]
    assert len(new_big) == (1 if device == 'cpu' else 0)
    assert all(t.shape == pred.shape for t in new_big)


def test_fused_path_is_taken_and_reference_is_not():
    pred = make_logits(N, C).requires_grad_()
    labels = make_labels(N, C)
    fused = polyn_focal_loss(pred, labels, reduction='sum')
    reference = _polyn_focal_loss_on_path('reference', pred, labels, reduction='sum')
    assert type(fused.grad_fn).__name__ == 'PolyFocalFusedFunctionBackward'
    assert type(reference.grad_fn).__name__ != 'PolyFocalFusedFunctionBackward'


@pytest.mark.parametrize('epsilon', [0.0, 1.0])
def test_confident_positives_keep_their_small_loss_and_gradient(epsilon, device):
    """The loss of a confidently right positive (logit 2 to 7) is tiny next to
    the background's; in float32 it must still come out to 1e-4 relative,
    against the formula in float64. (At epsilon -1 the loss there is
    alpha * (1 - p_t)^gamma * (CE - (1 - p_t)), a difference of two nearly equal
    numbers that float32 cannot resolve, in any implementation.)"""
    logits = torch.tensor([[2.0, 0.0], [3.0, 1.0], [5.0, -2.0], [7.0, 0.5]], device=device)
    labels = torch.zeros(4, dtype=torch.long, device=device)
    x = logits.clone().requires_grad_()
    loss = polyn_focal_loss(x, labels, epsilons=(epsilon,), reduction='none')
    loss.sum().backward()
    x64 = logits.double().requires_grad_()
    want = _polyn_focal_loss_on_path('reference', x64, labels, epsilons=(epsilon,),
                                     reduction='none')
    want.sum().backward()
    torch.testing.assert_close(loss[:, 0].double(), want[:, 0].detach(), rtol=1e-4, atol=0)
    torch.testing.assert_close(x.grad[:, 0].double(), x64.grad[:, 0], rtol=1e-4, atol=0)


def test_infinite_logits_of_right_answers_cost_nothing(device):
    """Certain and right: zero loss and gradient, no NaN (a background row's
    last column and a positive at +inf)."""
    inf = float('inf')
    x = torch.tensor([[-inf, -inf], [inf, -inf]], device=device, requires_grad=True)
    labels = torch.tensor([2, 0], device=device)
    loss = polyn_focal_loss(x, labels, epsilons=(-1.0,), reduction='none')
    loss.sum().backward()
    assert torch.equal(loss.detach(), torch.zeros_like(loss))
    assert torch.equal(x.grad, torch.zeros_like(x.grad))


def test_no_gradient_is_computed_under_no_grad(monkeypatch):
    """mmdet heads (PISA's isr_p) evaluate the loss under no_grad on scores
    that require grad: the CPU path must then skip the gradient work."""
    asked = []
    dense = fused.dense_loss_and_grad

    def spy(*args, need_grad):
        asked.append(need_grad)
        return dense(*args, need_grad=need_grad)
    monkeypatch.setattr(fused, 'dense_loss_and_grad', spy)
    pred = make_logits(N, C).requires_grad_()
    labels = make_labels(N, C)
    with torch.no_grad():
        polyn_focal_loss(pred, labels)
    polyn_focal_loss(pred, labels).backward()
    assert asked == [False, True]


def test_works_under_non_reentrant_activation_checkpointing():
    """torch.utils.checkpoint(use_reentrant=False) lets backward unpack each
    saved tensor only once."""
    from torch.utils.checkpoint import checkpoint
    pred, labels = make_logits(N, C).requires_grad_(), make_labels(N, C)
    checkpoint(lambda x: polyn_focal_loss(x, labels), pred, use_reentrant=False).backward()
    want = pred.detach().clone().requires_grad_()
    polyn_focal_loss(want, labels).backward()
    torch.testing.assert_close(pred.grad, want.grad)
