"""Peak extra memory of one forward + backward: CUDA's allocator statistics in
this process, or on the CPU the peak RSS, measured in a fresh worker process
(``benchmark_loss.py --memory-worker``) whose malloc maps large buffers."""
import argparse
import contextlib
import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from tools.benchmark.cases import Case, Inputs, LossFn, Method, fwd_bwd, iter_cases
from tools.benchmark.measure import release_cuda_cache, time_call
from tools.benchmark.report import Table, apply_memory

MIB = 2.0 ** 20
#: The worker's line of results on its stdout starts with this.
MEMORY_TAG = 'MEMORY_JSON '
#: The entry point the worker process runs.
SCRIPT = Path(__file__).resolve().with_name('benchmark_loss.py')

#: {method: peak extra MiB or None}, per case key (:func:`case_key`).
Peaks = Dict[str, Dict[str, Optional[float]]]


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_peak_supported() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where Linux's
    /proc/self/clear_refs is not available."""
    try:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')
        _proc_status_kib('VmHWM')
        return True
    except OSError:
        return False


def _libc() -> Optional[ctypes.CDLL]:
    with contextlib.suppress(OSError):
        return ctypes.CDLL('libc.so.6')
    return None


def mmap_large_allocations() -> None:
    """Make glibc serve every allocation >= 1 MiB with its own mmap (unmapped on
    free), so that the RSS follows the live tensors rather than malloc's heap.

    Irreversible for the process, and every large temporary then page-faults
    afresh (about 1.5x slower calls here), so only the memory worker process
    sets it. Without it, 32 MB tensors (100k x 80 float32) land in malloc's
    heap and the peak RSS came out up to ~2x the live bytes, order-dependent.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, 'mallopt'):
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (also stops glibc's dynamic threshold)


def return_freed_memory_to_os() -> None:
    """``malloc_trim(0)``: return free heap pages to the OS before a measurement."""
    libc = _libc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)


def peak_extra_bytes(method: Method, case: Inputs, device: str) -> Optional[float]:
    """Peak memory of one forward + backward above what was in use before it."""
    case.pred.grad = None
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(method, case)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        return_freed_memory_to_os()
        if not cpu_peak_supported():  # resets VmHWM to the current RSS
            return None
        before = _proc_status_kib('VmRSS')  # clear_refs reset VmHWM to this
        fwd_bwd(method, case)
        extra = (_proc_status_kib('VmHWM') - before) * 1024
    case.pred.grad = None
    return float(extra)


def measure_memory(methods: List[Method], case: Inputs,
                   device: str) -> Dict[str, Optional[float]]:
    """Peak extra MiB of each method (one call to warm up, one measured);
    None where it is unsupported, failed or cannot be measured."""
    peaks: Dict[str, Optional[float]] = {}
    for method in methods:
        peaks[method.name] = None
        if method.fn is None:
            continue
        try:
            time_call(method, case, device)
            extra = peak_extra_bytes(method, case, device)
            peaks[method.name] = None if extra is None else extra / MIB
        except Exception:  # any error: the timing phase already reported it
            release_cuda_cache(device)
    return peaks


def case_key(images: int, dtype_name: str) -> str:
    """How the worker's JSON names a case."""
    return f'{images}/{dtype_name}'


def memory_worker(cases: Iterator[Case]) -> int:
    """``--memory-worker``: CPU peaks in a fresh process whose malloc mmaps every
    large buffer (see :func:`mmap_large_allocations`); prints one JSON line."""
    mmap_large_allocations()
    peaks = {case_key(images, dtype_name): measure_memory(methods, case, 'cpu')
             for images, dtype_name, case, methods in cases}
    print(MEMORY_TAG + json.dumps(peaks), flush=True)
    return 0


def cpu_memory_in_subprocess(args: argparse.Namespace) -> Tuple[Peaks, str]:
    """Run :func:`memory_worker` on the same inputs; (peaks by case, error or '')."""
    command = [sys.executable, str(SCRIPT), '--memory-worker',
               '--device', 'cpu', '--images', *map(str, args.images),
               '--anchors-per-image', str(args.anchors_per_image),
               '--classes', str(args.classes),
               '--positives-per-image', str(args.positives_per_image),
               '--dtype', *args.dtype, '--seed', str(args.seed)]
    if args.threads:
        command += ['--threads', str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(MEMORY_TAG):
            return json.loads(line[len(MEMORY_TAG):]), ''
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']
    return {}, f'memory worker exited {done.returncode}: {tail[0][:200]}'


def add_memory_columns(tables: List[Table], args: argparse.Namespace,
                       mmdet_fn: Optional[LossFn], mmdet_error: str) -> str:
    """Measure every case's peaks, after all timing, and put them into its table;
    returns why there is no memory column, or ''. On the CPU in a fresh
    process (see :func:`mmap_large_allocations`), on CUDA in this one."""
    if args.device == 'cpu':
        peaks, error = cpu_memory_in_subprocess(args)
        for table in tables:
            apply_memory(table, peaks.get(case_key(table.images, table.dtype), {}))
        return error
    for table, (_, _, case, methods) in zip(tables, iter_cases(args, mmdet_fn, mmdet_error),
                                            strict=True):
        apply_memory(table, measure_memory(methods, case, args.device))
    return ''
