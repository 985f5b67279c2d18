"""Poly-1 cross-entropy against an independent float64 formula; its bad inputs."""
import re

import numpy as np
import pytest
import torch

from mmdet_polyloss.functional import poly1_binary_cross_entropy, poly1_cross_entropy

from loss_inputs import make_logits

N, C = 29, 6


def reference_softmax(x, label, epsilon, class_weight=None, ignore_index=-100):
    """w_y * (-log p_y + epsilon * (1 - p_y)) row by row, 0 for ignored rows."""
    x = x.double()
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for i, y in enumerate(label.tolist()):
        if y == ignore_index:
            continue
        p_y = torch.exp(x[i, y]) / torch.exp(x[i]).sum()
        w = 1.0 if class_weight is None else class_weight[y]
        out[i] = w * (-torch.log(p_y) + epsilon * (1 - p_y))
    return out


def reference_sigmoid(x, t, epsilon, pos_weight=None):
    x, t = x.double(), t.double()
    p = 1 / (1 + torch.exp(-x))
    c = 1.0 if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    return (-(c * t * torch.log(p) + (1 - t) * torch.log(1 - p))
            + epsilon * (c * t * (1 - p) + (1 - t) * p))


def _labels(seed=3, ignore=None):
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, C, (N,), generator=gen)
    if ignore is not None:
        label[::5] = ignore
    return label


@pytest.mark.parametrize('epsilon', [-1.0, 0.0, 0.5, 2.0])
@pytest.mark.parametrize('class_weight', [None, [0.5, 1.0, 2.0, 0.0, 3.0, 1.5]])
@pytest.mark.parametrize('ignore_index', [None, 255])
def test_softmax_matches_reference(epsilon, class_weight, ignore_index):
    x = make_logits(N, C, dtype=torch.float64)
    label = _labels(ignore=ignore_index)
    got = poly1_cross_entropy(x, label, epsilon=epsilon, class_weight=class_weight,
                              ignore_index=ignore_index, reduction='none')
    want = reference_softmax(x, label, epsilon, class_weight,
                             -100 if ignore_index is None else ignore_index)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_softmax_epsilon_minus_one_removes_leading_term_for_every_class_weight():
    """w_y (CE - (1 - p_y)) = w_y sum_{j>=2} (1 - p_y)^j / j, whatever w_y."""
    x = make_logits(N, C, scale=1.0, dtype=torch.float64)
    label, class_weight = _labels(), [0.5, 1.0, 2.0, 0.1, 3.0, 1.5]
    got = poly1_cross_entropy(x, label, epsilon=-1.0, class_weight=class_weight,
                              reduction='none')
    q = 1 - torch.softmax(x, 1).gather(1, label[:, None]).squeeze(1)
    w = torch.tensor(class_weight, dtype=torch.float64)[label]
    torch.testing.assert_close(got, w * sum(q ** j / j for j in range(2, 3000)))
    assert torch.all(got >= 0)


def test_softmax_spatial_logits_and_avg_non_ignore():
    x = make_logits(2 * 3 * 4, C, dtype=torch.float64).reshape(2, 3, 4, C).permute(0, 3, 1, 2)
    label = torch.randint(0, C, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    label[0, 0] = 255
    got = poly1_cross_entropy(x, label, epsilon=-1.0, ignore_index=255, avg_non_ignore=True)
    per_pixel = reference_softmax(x.permute(0, 2, 3, 1).reshape(-1, C), label.flatten(), -1.0,
                                  ignore_index=255)
    torch.testing.assert_close(got, per_pixel.sum() / (label != 255).sum())


@pytest.mark.parametrize('epsilon', [-1.0, 0.0, 1.0])
@pytest.mark.parametrize('pos_weight', [None, [2.0, 1.0, 0.5, 1.0, 3.0, 1.0]])
def test_sigmoid_matches_reference(epsilon, pos_weight):
    x = make_logits(N, C, dtype=torch.float64)
    label = _labels()
    label[::4] = C  # background rows: all-zero targets
    got = poly1_binary_cross_entropy(x, label, epsilon=epsilon, class_weight=pos_weight,
                                     reduction='none')
    target = torch.zeros(N, C, dtype=torch.float64)
    for i, y in enumerate(label.tolist()):
        if y < C:
            target[i, y] = 1
    torch.testing.assert_close(got, reference_sigmoid(x, target, epsilon, pos_weight))
    soft = torch.rand(N, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        poly1_binary_cross_entropy(x, soft, epsilon=epsilon, class_weight=pos_weight,
                                   reduction='none'),
        reference_sigmoid(x, soft, epsilon, pos_weight))


def test_sigmoid_epsilon_minus_one_is_nonnegative_and_ignores_ignored():
    x = make_logits(N, 1, scale=6.0)
    label = torch.randint(0, 2, (N,), generator=torch.Generator().manual_seed(2))  # RPN style
    label[:3] = -1
    loss = poly1_binary_cross_entropy(x, label, epsilon=-1.0, ignore_index=-1,
                                      reduction='none')
    assert torch.all(loss[:3] == 0) and torch.all(loss >= 0)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('form', ['softmax', 'smoothed', 'soft', 'sigmoid', 'sigmoid weighted'])
def test_no_element_is_negative_at_epsilon_minus_one_in_any_dtype(dtype, form):
    """-log p >= 1 - p, so CE + epsilon (1 - p) >= 0 exactly for epsilon >= -1: no computed
    element may be below 0, confident ones included (``1 - sigmoid(x)`` made the sigmoid
    form -5e-7 in float32), and the values stay those of the float64 computation."""
    gen = torch.Generator().manual_seed(0)
    rows = 20000
    x = (torch.randn(rows, 4, generator=gen) * torch.logspace(-3, 1.5, rows).unsqueeze(1))
    label = torch.randint(0, 4, (rows,), generator=gen)
    soft = torch.softmax(3 * torch.randn(rows, 4, generator=gen), dim=1)  # float32 for all

    def loss(logits):
        if form.startswith('sigmoid'):
            weight = [2.0, 1.0, 0.5, 1.0] if form == 'sigmoid weighted' else None
            return poly1_binary_cross_entropy(logits, label, epsilon=-1.0, class_weight=weight,
                                              reduction='none')
        if form == 'soft':
            return poly1_cross_entropy(logits, soft, epsilon=-1.0, reduction='none')
        return poly1_cross_entropy(logits, label, epsilon=-1.0, reduction='none',
                                   label_smoothing=0.1 if form == 'smoothed' else 0.0)

    x = x.to(dtype)
    got = loss(x)
    assert got.min() >= 0
    torch.testing.assert_close(got.double(), loss(x.double()), rtol=1e-5, atol=1e-6)


def test_gradcheck_both_forms():
    x = make_logits(7, 4, scale=2.0, dtype=torch.float64).requires_grad_()
    label = torch.tensor([0, 3, 1, 2, 4, 255, 1])
    assert torch.autograd.gradcheck(
        lambda p: poly1_cross_entropy(p, torch.where(label > 3, 255, label), epsilon=-1.0,
                                      ignore_index=255, class_weight=[1, 2, 0.5, 1]), (x,))
    assert torch.autograd.gradcheck(
        lambda p: poly1_binary_cross_entropy(p, label.clamp(max=4), epsilon=-1.0), (x,))


@pytest.mark.parametrize('call,message', [
    (lambda: poly1_cross_entropy(make_logits(N, C), torch.full((N,), C)),
     'label class indices must be in [0, 5] or ignore_index=-100, got 6'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels()[:-1]),
     'label shape (28,) does not match pred shape (29, 6)'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=[1.0] * 5),
     'class_weight must hold 6 finite non-negative weights, got (1.0, 1.0, 1.0, 1.0, 1.0)'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), epsilon=-1.2),
     'epsilon=-1.2 is below -1'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), reduction='sum', avg_factor=2),
     "avg_factor=2 cannot be used with reduction='sum'"),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), weight=torch.ones(N, C)),
     'weight shape (29, 6) does not match the samples (29,) of pred (29, 6)'),
    (lambda: poly1_binary_cross_entropy(make_logits(N, C), torch.full((N,), C + 1)),
     'label class indices must be in [0, 6] or ignore_index=-100, got 7'),
    (lambda: poly1_binary_cross_entropy(make_logits(N, C), torch.full((N, C), 2.0)),
     'label targets must be in [0, 1] or ignore_index=-100, got 2.0'),
    (lambda: poly1_binary_cross_entropy(make_logits(N, C), torch.zeros(N, C + 1)),
     'label shape (29, 7) does not match pred shape (29, 6)'),
    (lambda: poly1_cross_entropy(make_logits(N, 0), torch.zeros(N, dtype=torch.long)),
     'pred of shape (29, 0) has no classes (dim 1 is 0)'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), avg_factor=-2.0),
     'avg_factor must be None, a finite number >= 0 or a one-element tensor, got -2.0'),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize('call,message', [
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), ignore_index=1.5),
     'ignore_index must be an int or None, got 1.5 of type float'),
    # Float or bool class indices would be truncated silently by .long().
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels().float() + 0.7),
     'label of shape (29,) for pred of shape (29, 6) must hold integer class indices, '
     'got dtype torch.float32'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels() > 2),
     'must hold integer class indices, got dtype torch.bool'),
    (lambda: poly1_binary_cross_entropy(make_logits(N, C), _labels().double()),
     'must hold integer class indices, got dtype torch.float64'),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=b'1234'),
     "class_weight must be a sequence of numbers, a file path or None, got b'1234'"),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=[1, 'a']),
     "class_weight[1] must be a real number, got 'a' of type str"),
    (lambda: poly1_cross_entropy(make_logits(N, C), _labels(), avg_non_ignore='False'),
     "avg_non_ignore must be a bool, got 'False' of type str"),
    (lambda: poly1_cross_entropy(make_logits(N, C).tolist(), _labels()),
     'pred must be a floating-point tensor, got list'),
    (lambda: poly1_binary_cross_entropy(make_logits(N, C), [0] * N),
     'label must be a tensor, got list'),
])
def test_inputs_of_the_wrong_type(call, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        call()


@pytest.mark.parametrize('suffix,text', [('.txt', '1 2.5, 0\n3 1 0.5'),
                                         ('.json', '[1, 2.5, 0, 3, 1, 0.5]')])
def test_class_weight_from_a_file(tmp_path, suffix, text):
    """A YAML/CLI config can name a file of weights instead of listing them."""
    path = tmp_path / f'weights{suffix}'
    path.write_text(text)
    want = poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=[1, 2.5, 0, 3, 1, 0.5])
    for given in (str(path), path):
        got = poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=given)
        torch.testing.assert_close(got, want)
    npy = tmp_path / 'weights.npy'
    np.save(npy, np.array([1, 2.5, 0, 3, 1, 0.5]))
    torch.testing.assert_close(
        poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=str(npy)), want)


@pytest.mark.parametrize('content,message', [
    (None, "class_weight '{path}' is a string but no such file"),
    ('1 two 3', "class_weight file '{path}' does not hold a list of numbers"),
    ('1 2 3', 'class_weight must hold 6 finite non-negative weights, got (1.0, 2.0, 3.0)'),
])
def test_bad_class_weight_files(tmp_path, content, message):
    path = tmp_path / 'weights.txt'
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message.format(path=path))):
        poly1_cross_entropy(make_logits(N, C), _labels(), class_weight=str(path))
