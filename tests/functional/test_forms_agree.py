"""The three forms of the hard-target focal terms agree: the composed formula
(``reference``: ``horner``, ``softplus``), the fused path's eager ops (``fused``:
the same ``horner`` in place, its own softplus) and the Triton kernels
(``triton_kernels._terms``: Horner unrolled, softplus through log1p), the
kernels in Triton's CPU interpreter (``TRITON_INTERPRET=1``, read at import,
hence the subprocess)."""
import importlib.util
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import itertools
    import torch
    from mmdet_polyloss.functional import fused, triton_kernels
    from mmdet_polyloss.functional.checks import check_poly_params
    from mmdet_polyloss.functional.reference import poly_focal_from_labels

    # Each logit once as the target class (label 0), once as a negative beside
    # it (column 1), and once in a background row (label 2); |x| up to 1e4.
    grid = torch.tensor([-1e4, -100.0, -40.0, -17.5, -9.0, -3.0, -1.0, -1e-3, 0.0,
                         1e-3, 1.0, 3.0, 9.0, 17.5, 40.0, 100.0, 1e4], dtype=torch.float64)
    x64 = torch.cat([torch.stack([grid, grid.flip(0)], dim=1)] * 3)
    labels = torch.tensor([0, 1, 2]).repeat_interleave(len(grid))
    x32 = x64.float()
    others = itertools.cycle([(0.25, True), (-1.0, True), (0.25, False)])
    forms = ['reference', 'fused eager']
    if triton_kernels.AVAILABLE and triton_kernels.INTERPRET:
        forms.append('triton')
    for epsilons, gamma in itertools.product(
            [(-1.0,), (0.0,), (1.0,), (0.5, -0.2), (-1.0, 0.3, -0.3, 0.1)],
            [0.0, 0.5, 1.0, 2.0, 3.5]):
        alpha, weighted = next(others)
        params = check_poly_params(epsilons, gamma, alpha, weighted, allow_negative_loss=True)
        x = x64.clone().requires_grad_()
        want = poly_focal_from_labels(x, labels, None, params)  # float64, autograd
        want_grad, = torch.autograd.grad(want.sum(), x)
        want = want.detach()
        got = {'fused eager float64': fused.blockwise_loss_and_grad(
                   x64, labels, None, params, need_grad=True, reduce_sum=False),
               'fused eager': fused.blockwise_loss_and_grad(
                   x32, labels, None, params, need_grad=True, reduce_sum=False)}
        if 'triton' in forms:
            got['triton'] = (
                triton_kernels.triton_forward(x32, labels, None, params, False),
                triton_kernels.triton_backward(x32, labels, None, params, torch.tensor(1.0)))
        for form, (loss, grad) in got.items():
            tight = form.endswith('float64')
            rtol, atol = (1e-10, 1e-12) if tight else (1e-5, 1e-6)
            where = f'{form}, epsilons={epsilons}, gamma={gamma}, alpha={alpha}'
            for name, value, expected in (('loss', loss, want), ('gradient', grad, want_grad)):
                torch.testing.assert_close(value.double(), expected, rtol=rtol, atol=atol,
                                           msg=lambda m: f'{name} of {where}: {m}')
    print(','.join(forms))
''')


def test_composed_eager_and_triton_forms_agree():
    """Loss and gradient on a grid of logits (|x| up to 1e4) for Poly-1 and
    Poly-N, gamma 0 to 3.5, with and without alpha_t: the fused eager ops
    (float32, and float64 to 1e-10) and the Triton kernels (float32, where
    Triton is installed) against the composed formula in float64."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop('POLYLOSS_DISABLE_TRITON', None)
    result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    forms = result.stdout.strip().splitlines()[-1].split(',')
    with_triton = importlib.util.find_spec('triton') is not None
    assert forms == ['reference', 'fused eager'] + (['triton'] if with_triton else [])
