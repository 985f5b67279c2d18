#!/usr/bin/env python
"""Where the fixed per-call time of the fused CUDA path goes (1 image, fp32).

The H200 benchmark (docs/benchmarks.md) shows the fused Poly-1 and mmcv's
kernel both far above the memory floor at 100k x 80, with a fixed cost of
about 1 ms per forward + backward. This splits that cost: host time of each
piece (input checks with their one sync, the Triton forward and backward
launches, the whole call, the call with its Triton launches stubbed out,
empty Triton kernels with 1 and with 17 arguments) against its stream time
per call back to back (GPU time plus any gaps where the stream waits for the
host; kernel-only times are in the profiler tables),
then a torch.profiler table for the fused call and for mmcv's. Needs CUDA and
Triton; mmcv's kernel is JIT-built from --mmcv-src as in
tools/benchmark/benchmark_loss.py.

    PYTHONPATH=. python tools/dev/profile_cuda_overhead.py --mmcv-src SRC
"""
import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # after the path set-up above, like every import below
import triton
import triton.language as tl
from torch.profiler import ProfilerActivity, profile

from mmdet_polyloss.functional import checks, poly1_focal_loss, triton_kernels
from mmdet_polyloss.functional.common import PolyParams
from tools.benchmark import cases


def _stubbed(fn: Callable[[], object]) -> None:
    with triton_launches_stubbed():
        fn()


def host_us(fn: Callable[[], object], repeats: int = 50) -> float:
    """Median host (Python + launch) microseconds of one call."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begin) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def device_us(fn: Callable[[], object], repeats: int = 50) -> float:
    """Mean stream microseconds per call, calls back to back (kernels and the
    idle gaps while the stream waits for the host)."""
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / repeats


@triton.jit
def _empty_kernel_1(x_ptr):
    pass


@triton.jit
def _empty_kernel_17(x_ptr, labels_ptr, w_ptr, out_ptr, n, c, g, a1, a2, w1, w2, e1, e2, e3, e4,
                     MODE_A: tl.constexpr, MODE_B: tl.constexpr):
    pass


@contextlib.contextmanager
def triton_launches_stubbed():
    """The fused path with each Triton launch replaced by one allocation: the
    host cost of everything around the kernels."""
    saved = triton_kernels.triton_forward, triton_kernels.triton_backward

    def forward(pred, labels, weight, params, reduce_sum):
        out = torch.empty(8, device=pred.device)
        return out.sum() if reduce_sum else torch.empty_like(pred, dtype=torch.float32)

    def backward(pred, labels, weight, params, grad_output):
        return torch.empty_like(pred)
    triton_kernels.triton_forward, triton_kernels.triton_backward = forward, backward
    try:
        yield
    finally:
        triton_kernels.triton_forward, triton_kernels.triton_backward = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mmcv-src', default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error(f'needs CUDA, and torch {torch.__version__} sees no GPU here')
    base = cases.make_base_inputs(1, 100_000, 80, 200, seed=0)
    case = cases.to_case(base, torch.float32, 'cuda')
    pred, labels, weight = case.pred, case.labels, case.weight
    logits, row_weight = pred.detach(), weight.view(-1, 1)
    params = PolyParams((-1.0,), 2.0, 0.25, True)
    grad_out = torch.ones((), device='cuda')
    addresses = [t.data_ptr() for t in (logits, labels, row_weight, logits)]

    def fused() -> None:
        pred.grad = None
        poly1_focal_loss(pred, labels, weight, epsilon=-1.0,
                         avg_factor=case.avg_factor).backward()

    pieces = {
        'one torch op (launch cost)': lambda: logits.add(1.0),
        'check_focal_inputs (one sync)': lambda: checks.check_focal_inputs(
            logits, labels, weight, False),
        'triton forward': lambda: triton_kernels.triton_forward(
            logits, labels, row_weight, params, True),
        'triton backward': lambda: triton_kernels.triton_backward(
            logits, labels, row_weight, params, grad_out),
        'Poly1 fused forward + backward': fused,
        'same, Triton launches stubbed': lambda: _stubbed(fused),
        'sync round trip (one .item())': lambda: grad_out.item(),
        'empty Triton kernel, 1 argument': lambda: _empty_kernel_1[(1,)](logits),
        'empty Triton kernel, 17 arguments': lambda: _empty_kernel_17[(1,)](
            logits, labels, row_weight, logits, logits.numel(), 80, 2.0, 0.25, 0.75, 0.25,
            0.75, -1.0, 0.0, 0.0, 0.0, MODE_A=1, MODE_B=2),
        # The same with the 4 tensors passed as plain ints: no data_ptr() call and
        # no cuPointerGetAttribute per pointer in Triton's launcher.
        'empty Triton kernel, 17 arguments, no tensors': lambda: _empty_kernel_17[(1,)](
            *addresses, logits.numel(), 80, 2.0, 0.25, 0.75, 0.25,
            0.75, -1.0, 0.0, 0.0, 0.0, MODE_A=1, MODE_B=2),
    }
    try:
        mmcv_focal = cases.load_mmdet_focal('cuda', args.mmcv_src)

        def mmcv() -> None:
            pred.grad = None
            mmcv_focal(pred, labels, weight, case.avg_factor).backward()
        pieces['mmcv FocalLoss forward + backward'] = mmcv
    except Exception as err:  # any error: the profile runs without mmcv's kernel
        print(f'mmcv kernel not loaded: {err}')
    print('| piece | host us | stream us per call, back to back |\n|---|---:|---:|')
    for name, fn in pieces.items():
        print(f'| {name} | {host_us(fn):.0f} | {device_us(fn):.0f} |')
    for name in ('Poly1 fused forward + backward', 'mmcv FocalLoss forward + backward'):
        if name not in pieces:
            continue
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                pieces[name]()
            torch.cuda.synchronize()
        print(f'\n== {name} (10 calls)')
        print(prof.key_averages().table(sort_by='cpu_time_total', row_limit=25))
    return 0


if __name__ == '__main__':
    sys.exit(main())
