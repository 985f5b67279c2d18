"""Timing: one call, a whole case (first calls, checks, interleaved repeats),
device synchronisation, the memory-bandwidth floor and CPU contention."""
import argparse
import functools
import gc
import os
import resource
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from tools.benchmark.agreement import agreement_checks
from tools.benchmark.cases import Inputs, Method, fwd_bwd
from tools.benchmark.report import Row, Table, pick_baseline


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device == 'cuda':
        torch.cuda.synchronize()


def release_cuda_cache(device: str) -> None:
    """Give cached, unused CUDA blocks back (a no-op on the CPU)."""
    if device == 'cuda':
        torch.cuda.empty_cache()


def cuda_event_ms(action: Callable[[], object]) -> float:
    """Milliseconds of ``action`` on the current CUDA stream, between two events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    action()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_call(method: Method, case: Inputs, device: str) -> float:
    """Milliseconds of one forward + backward."""
    case.pred.grad = None
    if device == 'cuda':
        torch.cuda.synchronize()
        elapsed = cuda_event_ms(lambda: fwd_bwd(method, case))
    else:
        begin = time.perf_counter()
        fwd_bwd(method, case)
        elapsed = (time.perf_counter() - begin) * 1e3
    case.pred.grad = None
    return elapsed


def copy_bandwidth(device: str, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device copy bandwidth (bytes read + written per second), median of ``repeats``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = [cuda_event_ms(functools.partial(dst.copy_, src)) / 1e3 for _ in range(repeats + 2)]
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times[2:])


def floor_bytes(case: Inputs) -> int:
    """Logits read once + labels read once + gradient written once."""
    logits = case.pred.numel() * case.pred.element_size()
    return 2 * logits + case.labels.numel() * case.labels.element_size()


def guarded_time_call(row: Row, method: Method, case: Inputs, device: str) -> Optional[float]:
    """:func:`time_call`, unless the row already failed; a failure (e.g. out of
    memory) becomes the row's note, and the result None."""
    if row.note:
        return None
    try:
        return time_call(method, case, device)
    except Exception as err:  # any error: report and carry on
        row.note = f'failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}'
        release_cuda_cache(device)
        return None


def benchmark_case(methods: List[Method], case: Inputs, args: argparse.Namespace,
                   dtype_name: str, images: int, bandwidth: Optional[float]) -> Table:
    """First calls, agreement checks, then interleaved timing (memory comes later:
    :func:`tools.benchmark.memory.add_memory_columns`)."""
    device = args.device
    rows: Dict[str, Row] = {m.name: Row(m.name, note=m.unsupported) for m in methods}
    runnable = [m for m in methods if m.fn is not None]

    for method in runnable:  # first call (Triton compile / caches), before anything else
        rows[method.name].first_ms = guarded_time_call(rows[method.name], method, case, device)

    checks = agreement_checks(methods, case, f'{dtype_name}, {images} image(s)', args.seed)
    for check in checks:
        print(check.line(), flush=True)
    gc.collect()
    release_cuda_cache(device)

    runnable = [m for m in runnable if not rows[m.name].note]
    for _ in range(args.warmup - 1):
        for method in runnable:
            guarded_time_call(rows[method.name], method, case, device)
    for _ in range(args.repeats):  # interleaved, so drift hits every method alike
        for method in runnable:
            elapsed = guarded_time_call(rows[method.name], method, case, device)
            if elapsed is not None:
                rows[method.name].times_ms.append(elapsed)
    for method in runnable:
        row = rows[method.name]
        if row.times_ms and not row.note:
            row.median_ms = statistics.median(row.times_ms)

    baseline, baseline_note = pick_baseline(rows)
    floor_ms = floor_bytes(case) / bandwidth * 1e3 if bandwidth else None
    return Table(dtype_name, images, case.rows, case.pred.shape[1],
                 int(case.avg_factor), baseline, baseline_note, floor_ms,
                 list(rows.values()), checks)


def busy_cpu_seconds() -> Optional[Tuple[float, float]]:
    """(CPU seconds all processes have used since boot, of which this process and
    its children), from /proc/stat; None where there is no /proc."""
    try:
        with open('/proc/stat') as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')
    own = sum(getattr(resource.getrusage(who), key)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for key in ('ru_utime', 'ru_stime'))
    return busy, own


def contention_note(before: Optional[Tuple[float, float]], wall_s: float,
                    device: str) -> str:
    """How much CPU other processes used during the run; on CPU a warning when
    it was more than a tenth of the machine (many small parallel ops then
    stall on descheduled threads, by 10x and more on 2 cores)."""
    after = busy_cpu_seconds()
    if before is None or after is None:
        return 'CPU use of other processes during the run: unknown (no /proc/stat).'
    cpus = os.cpu_count() or 1
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
    share = others / (wall_s * cpus) if wall_s > 0 else 0.0
    note = (f'Other processes used {others:.0f} CPU-seconds during the {wall_s:.0f} s run '
            f'({share:.0%} of {cpus} CPUs; {torch.get_num_threads()} torch threads).')
    if device == 'cpu' and share > 0.1:
        note += (' **CPU timings are not reliable: rerun on an idle machine (or with '
                 '--threads 1).**')
    return note
