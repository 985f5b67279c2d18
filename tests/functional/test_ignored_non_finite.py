"""A NaN or infinite logit at an ignored position (an ignored label, a weight of
0) reaches neither the loss nor the gradient, on every path: the result is
the one with a 0 there instead. Labels are read by value whatever their dtype."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdet_polyloss.functional import (
    poly1_binary_cross_entropy,
    poly1_cross_entropy,
    poly1_focal_loss,
)
from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path

NON_FINITE = (float('nan'), float('inf'), float('-inf'))
N, C = 6, 4


def _focal(path, **kw):
    def loss(x, labels, weight):
        return _polyn_focal_loss_on_path(path, x, labels, weight, epsilons=(-0.5,), **kw)
    return loss


def _ce(x, labels, weight):
    return poly1_cross_entropy(x, labels, weight, epsilon=0.5, ignore_index=-100)


def _bce(x, labels, weight):
    return poly1_binary_cross_entropy(x, labels, weight, epsilon=0.5, ignore_index=-100)


#: name -> (loss, ignore with the label (True) or with a zero weight (False)).
CASES = {
    'focal-ignore_index-fused': (_focal('fused', ignore_index=-100), True),
    'focal-ignore_index-reference': (_focal('reference', ignore_index=-100), True),
    'focal-ignore_index-auto': (_focal('auto', ignore_index=-100), True),
    'focal-zero-weight-fused': (_focal('fused'), False),
    'focal-zero-weight-reference': (_focal('reference'), False),
    'cross-entropy-ignore_index': (_ce, True),
    'cross-entropy-zero-weight': (_ce, False),
    'binary-cross-entropy-ignore_index': (_bce, True),
    'binary-cross-entropy-zero-weight': (_bce, False),
}


def _inputs(rows, dtype, by_label, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, generator=g, dtype=dtype) * 3
    labels = torch.randint(0, C, (N,), generator=g)
    weight = None if by_label else torch.rand(N, generator=g, dtype=dtype) + 0.5
    ignored = torch.zeros(N, dtype=torch.bool)
    ignored[list(rows)] = True
    if by_label:
        labels[ignored] = -100
    else:
        weight[ignored] = 0
    return x, labels, weight, ignored


def _assert_ignored_values_do_not_matter(loss, by_label, rows, values, dtype=torch.float32,
                                         reduction='mean'):
    x, labels, weight, ignored = _inputs(rows, dtype, by_label)
    poisoned = x.clone()
    for row, value in zip(rows, values[:len(rows)], strict=True):
        poisoned[row, row % C] = value
        poisoned[row, (row + 1) % C] = -value
    clean = x.masked_fill(ignored.unsqueeze(1), 0).requires_grad_()
    poisoned.requires_grad_()
    want, got = loss(clean, labels, weight), loss(poisoned, labels, weight)
    want.sum().backward()
    got.sum().backward()
    torch.testing.assert_close(got, want)
    assert torch.isfinite(poisoned.grad).all()
    torch.testing.assert_close(poisoned.grad, clean.grad)
    assert (poisoned.grad[ignored] == 0).all()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('name', list(CASES))
def test_non_finite_logits_at_ignored_positions_do_not_reach_the_result(name, dtype):
    loss, by_label = CASES[name]
    for value in NON_FINITE:
        _assert_ignored_values_do_not_matter(loss, by_label, [2], [value], dtype)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(CASES)),
       rows=st.sets(st.integers(0, N - 1), max_size=N),
       values=st.lists(st.sampled_from(NON_FINITE), min_size=N, max_size=N),
       reduction=st.sampled_from(['mean', 'sum', 'none']))
def test_property_non_finite_at_random_ignored_positions(name, rows, values, reduction):
    loss, by_label = CASES[name]

    def with_reduction(x, labels, weight):
        kwargs = dict(reduction=reduction)
        if name.startswith('focal'):
            path = name.rsplit('-', 1)[1]
            extra = dict(ignore_index=-100) if by_label else {}
            return _polyn_focal_loss_on_path(path, x, labels, weight, epsilons=(-0.5,),
                                             **extra, **kwargs)
        fn = poly1_cross_entropy if name.startswith('cross') else poly1_binary_cross_entropy
        return fn(x, labels, weight, epsilon=0.5, ignore_index=-100, **kwargs)

    _assert_ignored_values_do_not_matter(with_reduction, by_label, sorted(rows), values,
                                         reduction=reduction)


def test_dense_maps_and_soft_targets_ignore_non_finite_logits():
    x = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 1, 2] = labels[1, 3, 4] = 255
    poisoned = x.clone()
    poisoned[0, :, 1, 2], poisoned[1, :, 3, 4] = float('nan'), float('-inf')
    for fn, kw in ((poly1_focal_loss, dict(ignore_index=255)),
                   (poly1_cross_entropy, dict(ignore_index=255))):
        clean = x.clone()
        clean[0, :, 1, 2] = clean[1, :, 3, 4] = 0
        torch.testing.assert_close(fn(poisoned, labels, **kw), fn(clean, labels, **kw))
    # Soft targets: a sample of weight 0 is dropped, whatever its logits.
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    x, weight = torch.randn(4, 3), torch.tensor([1.0, 0.0, 2.0, 1.0])
    poisoned = x.clone()
    poisoned[1] = float('nan')
    poisoned.requires_grad_()
    got = poly1_cross_entropy(poisoned, soft, weight, epsilon=-1.0)
    got.backward()
    want = poly1_cross_entropy(x.masked_fill(weight.unsqueeze(1) == 0, 0), soft, weight,
                               epsilon=-1.0)
    torch.testing.assert_close(got, want)
    assert torch.isfinite(poisoned.grad).all()
    # Focal with soft targets (the reference path) and an element-wise zero weight.
    target, w = torch.rand(4, 3), torch.ones(4, 3)
    w[2, 1] = 0
    poisoned = x.clone()
    poisoned[2, 1] = float('inf')
    clean = x.clone()
    clean[2, 1] = 0
    torch.testing.assert_close(poly1_focal_loss(poisoned, target, w),
                               poly1_focal_loss(clean, target, w))


TRITON_SCRIPT = textwrap.dedent('''
    import torch
    from mmdet_polyloss.functional import triton_kernels as tk
    from mmdet_polyloss.functional.checks import check_poly_params
    from mmdet_polyloss.functional.fused import dense_loss_and_grad

    torch.manual_seed(0)
    x, labels = torch.randn(40, 5), torch.randint(0, 6, (40,))
    for weight in (torch.rand(40, 1) + 0.1, torch.rand(40, 5) + 0.1):
        weight[3] = weight[7] = 0
        poisoned = x.clone()
        poisoned[3], poisoned[7] = float('nan'), float('inf')
        p = check_poly_params((-1.0,), 2.0, 0.25, True, False)
        want, want_grad = dense_loss_and_grad(x.masked_fill(weight == 0, 0), labels, weight,
                                              p, need_grad=True)
        got = tk.triton_forward(poisoned, labels, weight, p, False)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(tk.triton_forward(poisoned, labels, weight, p, True),
                                   want.sum())
        grad = tk.triton_backward(poisoned, labels, weight, p, torch.tensor(1.0))
        torch.testing.assert_close(grad, want_grad)
    print('ok')
''')


def test_triton_kernels_ignore_non_finite_logits_of_weight_0_in_interpreter():
    pytest.importorskip('triton')
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop('POLYLOSS_DISABLE_TRITON', None)
    result = subprocess.run([sys.executable, '-c', TRITON_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'


# ------------------------------------------------------------- label dtypes


@pytest.mark.parametrize('fn', [poly1_focal_loss, poly1_cross_entropy])
def test_uint8_labels_are_read_by_value(fn):
    """uint8 255 is 255: out of range, not the ignore_index -1 it wraps to."""
    x = torch.randn(3, 250)
    labels = torch.tensor([0, 255, 3], dtype=torch.uint8)
    with pytest.raises(ValueError, match='got 255'):
        fn(x, labels, ignore_index=-1)
    ok = torch.tensor([0, 249, 3], dtype=torch.uint8)
    torch.testing.assert_close(fn(x, ok, ignore_index=-1), fn(x, ok.long(), ignore_index=-1))
    # A uint8 label equal to ignore_index by value is ignored.
    ignored = torch.tensor([0, 200, 3], dtype=torch.uint8)
    torch.testing.assert_close(fn(x, ignored, ignore_index=200),
                               fn(x, ignored.long(), ignore_index=200))


def test_binary_cross_entropy_uint8_labels_are_read_by_value():
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match='got 255'):
        poly1_binary_cross_entropy(x, torch.tensor([1, 255], dtype=torch.uint8),
                                   ignore_index=-1)


@pytest.mark.parametrize('dtype, ignore_index', [
    (torch.int32, 2**32), (torch.int32, 2**40), (torch.int16, 2**16 + 1), (torch.int8, 257),
    (torch.int8, -255)])
@pytest.mark.parametrize('fn', [poly1_focal_loss, poly1_cross_entropy,
                                poly1_binary_cross_entropy])
def test_an_ignore_index_beyond_the_label_dtype_ignores_nothing(fn, dtype, ignore_index):
    """Compared in the labels' own dtype the index wrapped around: int32 labels with
    ignore_index=2**32 dropped class 0, int8 with 257 dropped class 1."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 3, 2, 1, 0])
    reference = fn(x, labels, reduction='sum')
    torch.testing.assert_close(fn(x, labels.to(dtype), ignore_index=ignore_index,
                                  reduction='sum'), reference)
    # an index the dtype holds is still ignored by value
    torch.testing.assert_close(fn(x, labels.to(dtype), ignore_index=1, reduction='sum'),
                               fn(x, labels, ignore_index=1, reduction='sum'))
    if fn is poly1_binary_cross_entropy:  # per-element targets too (kept in their dtype)
        targets = torch.nn.functional.one_hot(labels.clamp(max=3), 4).to(dtype)
        torch.testing.assert_close(fn(x, targets, ignore_index=ignore_index, reduction='sum'),
                                   fn(x, targets.long(), reduction='sum'))


@pytest.mark.parametrize('dtype', [torch.uint16, torch.uint32, torch.uint64])
@pytest.mark.parametrize('fn', [poly1_focal_loss, poly1_cross_entropy,
                                poly1_binary_cross_entropy])
def test_unsupported_label_dtypes_are_a_type_error_naming_them(fn, dtype):
    labels = torch.tensor([0, 1], dtype=dtype)
    with pytest.raises(TypeError, match=f'has dtype {dtype}, which the losses do not take: '
                       'use a signed integer dtype or uint8'):
        fn(torch.randn(2, 3), labels)


# ----------------------------------------------- settings too large for float32


@pytest.mark.parametrize('kwargs, name', [
    (dict(epsilon=1e40), 'epsilon'),
    (dict(gamma=1e39), 'gamma'),
    (dict(ignore_index=10**30), 'ignore_index'),
])
def test_settings_that_would_overflow_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=rf'{name}.*{list(kwargs.values())[0]!r}'[:60]
                       .replace('+', r'\+')):
        poly1_focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), **kwargs)


def test_poly_n_coefficients_must_fit_with_their_derivative():
    from mmdet_polyloss.functional import polyn_focal_loss
    big = float(torch.finfo(torch.float32).max)
    with pytest.raises(ValueError, match=r'epsilons\[1\]'):
        polyn_focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), epsilons=(1.0, big),
                         allow_negative_loss=True)
    with pytest.raises(ValueError, match='class_weight'):
        poly1_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]),
                            class_weight=[1.0, 1e39, 1.0])
