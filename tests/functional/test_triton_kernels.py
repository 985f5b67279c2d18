"""The Triton kernels equal the composed formula (float64 autograd), run in
Triton's CPU interpreter.

On a CUDA machine the same kernels are also exercised for real by the
``device``-parametrised tests in test_fused.py.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip('triton')

SCRIPT = textwrap.dedent('''
    import itertools
    import torch
    from mmdet_polyloss.functional import triton_kernels as tk
    from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path
    from mmdet_polyloss.functional.checks import check_poly_params

    torch.manual_seed(0)
    N, C = 331, 7  # 2317 elements: three blocks of 1024, the last one partial
    assert 2 * tk.BLOCK < N * C < 3 * tk.BLOCK
    x = torch.randn(N, C) * 4
    x[0, 0], x[1, 1] = 1e4, -1e4  # saturated logits
    labels = torch.randint(0, C + 1, (N,))  # C is background
    weights = {'none': None, 'row': torch.rand(N, 1), 'elem': torch.rand(N, C)}
    others = itertools.cycle(itertools.product([0.25, -1.0], [True, False], weights))
    for eps, gamma in itertools.product([(-1.0,), (0.5, -0.2), (0.5, -0.2, 0.1, -0.05)],
                                        [0.0, 0.5, 1.0, 1.5, 2.0]):
        alpha, weighted, weight_kind = next(others)
        p = check_poly_params(eps, gamma, alpha, weighted, allow_negative_loss=True)
        w = weights[weight_kind]
        # Independent reference: the composed formula in float64, autograd gradient.
        x64 = x.double().requires_grad_()
        want = _polyn_focal_loss_on_path(
            'reference', x64, labels, None if w is None else w.double(), epsilons=eps,
            gamma=gamma, alpha=alpha, alpha_weighted_poly=weighted, reduction='none',
            allow_negative_loss=True)
        got = tk.triton_forward(x, labels, w, p, False)
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-6)
        got_sum = tk.triton_forward(x, labels, w, p, True)
        torch.testing.assert_close(got_sum.double(), want.detach().sum(), rtol=1e-5, atol=1e-4)
        for gout in (torch.rand(N, C), torch.tensor(0.7)):
            want_grad, = torch.autograd.grad(want, x64, gout.double().expand(N, C),
                                             retain_graph=True)
            torch.testing.assert_close(tk.triton_backward(x, labels, w, p, gout).double(),
                                       want_grad, rtol=1e-5, atol=1e-6)
        want_half, = torch.autograd.grad(want.sum(), x64)
        for half, tol in ((torch.float16, 1e-2), (torch.bfloat16, 2e-2)):
            g_half = tk.triton_backward(x.to(half), labels, w, p, torch.tensor(1.0))
            assert g_half.dtype == half
            torch.testing.assert_close(g_half.double(), want_half, rtol=tol, atol=tol / 10)
    print('ok')
''')


def test_triton_kernels_match_eager_path_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'


#: Tests about the CPU path's own design (what it saves, its no_grad shortcut).
CPU_PATH_ONLY = 'not saves_its_inputs and not no_gradient_is_computed'


@pytest.mark.slow
def test_loss_tests_pass_with_every_call_on_the_triton_kernels():
    """The value, gradient, mmdet-equality, dtype and edge-case tests of the
    focal loss, rerun with the fused path on the Triton kernels (interpreter):
    what CUDA runs, checked on every CI run."""
    tests = Path(__file__).resolve().parents[1]
    # Triton's interpreter switch: the fused path then runs the kernels on CPU.
    env = dict(os.environ, TRITON_INTERPRET='1')
    env.pop('POLYLOSS_DISABLE_TRITON', None)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-m', 'not slow',
         '-k', CPU_PATH_ONLY, '-p', 'no:cacheprovider',
         str(tests / 'functional/test_fused.py'), str(tests / 'functional/test_poly_focal.py'),
         str(tests / 'functional/test_checks.py'), str(tests / 'functional/test_precision.py'),
         str(tests / 'functional/test_dense_maps.py'),
         str(tests / 'losses/test_poly_focal_loss.py')],
        capture_output=True, text=True, env=env, timeout=900, cwd=tests.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ' passed' in result.stdout.splitlines()[-1]
