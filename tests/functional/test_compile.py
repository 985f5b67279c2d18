"""The losses under torch.compile: same values and gradients as eager.

With the tensor value checks off (``set_value_checks(False)``) every loss
compiles as one graph (``fullgraph=True``), the fused autograd function
included. With them on (the default), the check reads the labels' range on
the host: a data-dependent graph break, so ``fullgraph=True`` refuses it and a
plain ``torch.compile`` splits the graph there (documented in
docs/architecture.md).
"""
import pytest
import torch

from mmdet_polyloss.functional import (
    poly1_binary_cross_entropy,
    poly1_cross_entropy,
    poly1_focal_loss,
    polyn_focal_loss,
    set_value_checks,
)
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

from loss_inputs import make_labels, make_logits

N, C = 37, 5


def _focal(x, labels, weight):
    return poly1_focal_loss(x, labels, weight, epsilon=-1.0, avg_factor=7.0)


def _focal_reference(x, labels, weight):
    return _polyn_focal_loss_on_path('reference', x, labels, weight, epsilons=(-1.0,),
                                     avg_factor=7.0)


def _polyn(x, labels, weight):
    return polyn_focal_loss(x, labels, weight, epsilons=(-1.0, 0.4), gamma=1.5)


def _softmax_ce(x, labels, weight):
    return poly1_cross_entropy(x, labels.clamp(max=C - 1), weight, epsilon=-1.0)


def _sigmoid_ce(x, labels, weight):
    return poly1_binary_cross_entropy(x, labels, None, epsilon=-1.0, reduction='sum')


LOSSES = {'poly1 fused': _focal, 'poly1 reference': _focal_reference,
          'polyN fused': _polyn, 'poly1 softmax CE': _softmax_ce,
          'poly1 sigmoid CE': _sigmoid_ce}


@pytest.fixture
def value_checks_off():
    previous = set_value_checks(False)
    yield
    set_value_checks(previous)


def _value_and_grad(fn, x, labels, weight):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, labels, weight)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize('name', LOSSES)
def test_one_graph_without_value_checks(name, value_checks_off):
    torch._dynamo.reset()
    fn = LOSSES[name]
    x, labels, weight = make_logits(N, C), make_labels(N, C), torch.rand(N)
    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    want = _value_and_grad(fn, x, labels, weight)
    got = _value_and_grad(compiled, x, labels, weight)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_value_checks_break_the_graph_but_compile_still_runs():
    torch._dynamo.reset()
    fn = LOSSES['poly1 fused']
    x, labels, weight = make_logits(N, C), make_labels(N, C), torch.rand(N)
    with pytest.raises(Exception, match='data-dependent'):
        torch.compile(fn, backend='aot_eager', fullgraph=True)(x, labels, weight)
    torch._dynamo.reset()
    got = _value_and_grad(torch.compile(fn, backend='aot_eager'), x, labels, weight)
    torch.testing.assert_close(got, _value_and_grad(fn, x, labels, weight))
    bad = labels.clone()
    bad[0] = C + 1
    with pytest.raises(ValueError, match='target labels must be in'):  # still checked
        torch.compile(fn, backend='aot_eager')(x, bad, weight)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['poly1 fused', 'poly1 reference'])
def test_inductor_code_matches_eager(name, value_checks_off):
    """Inductor's generated code (C++ on CPU), not just the captured graph."""
    torch._dynamo.reset()
    fn = LOSSES[name]
    x, labels, weight = make_logits(N, C), make_labels(N, C), torch.rand(N)
    got = _value_and_grad(torch.compile(fn, fullgraph=True), x, labels, weight)
    torch.testing.assert_close(got, _value_and_grad(fn, x, labels, weight),
                               rtol=1e-5, atol=1e-6)
