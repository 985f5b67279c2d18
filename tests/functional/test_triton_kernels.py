"""The Triton kernels equal the eager fused path, run in Triton's CPU interpreter.

On a CUDA machine the same kernels are also exercised for real by the
``device``-parametrised tests in test_fused.py.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('triton')

SCRIPT = textwrap.dedent('''
    import itertools
    import torch
    from mmdet_polyloss.functional import triton_kernels as tk
    from mmdet_polyloss.functional.fused import PolyParams, dense_loss_and_grad

    torch.manual_seed(0)
    N, C = 97, 7
    x = torch.randn(N, C) * 4
    x[0, 0], x[1, 1] = 1e4, -1e4  # saturated logits
    labels = torch.randint(0, C + 1, (N,))  # C is background
    cases = itertools.product([(-1.0,), (0.5, -0.2, 0.1)], [0.0, 2.0, 1.5], [0.25, -1.0],
                              [True, False], ['none', 'row', 'elem'])
    for eps, gamma, alpha, weighted, weight_kind in cases:
        p = PolyParams(eps, gamma, alpha, weighted)
        w = {'none': None, 'row': torch.rand(N, 1), 'elem': torch.rand(N, C)}[weight_kind]
        want, want_grad = dense_loss_and_grad(x, labels, w, p, need_grad=True)
        torch.testing.assert_close(tk.triton_forward(x, labels, w, p, False), want,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tk.triton_forward(x, labels, w, p, True), want.sum(),
                                   rtol=1e-5, atol=1e-4)
        for gout in (torch.rand(N, C), torch.tensor(0.7)):
            torch.testing.assert_close(tk.triton_backward(x, labels, w, p, gout),
                                       want_grad * gout, rtol=1e-5, atol=1e-6)
        x16 = x.half()
        g16 = tk.triton_backward(x16, labels, w, p, torch.tensor(1.0))
        assert g16.dtype == torch.float16
        want16 = dense_loss_and_grad(x16.float(), labels, w, p, need_grad=True)[1]
        torch.testing.assert_close(g16.float(), want16, rtol=1e-2, atol=1e-3)
    print('ok')
''')


def test_triton_kernels_match_eager_path_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'
