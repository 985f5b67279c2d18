"""Time and peak extra memory of one forward + backward, the CUDA bandwidth
floor, CPU contention, and a RetinaNet training step."""
import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from tools.benchmark import cases
from tools.benchmark.agreement import agreement_checks
from tools.benchmark.cases import Inputs, Method, fwd_bwd
from tools.benchmark.report import Row, Table, apply_memory, pick_baseline

#: The memory worker's line of results on its stdout starts with this.
MEMORY_TAG = 'MEMORY_JSON '
SCRIPT = Path(__file__).resolve().with_name('benchmark_loss.py')


def release_cuda_cache(device: str) -> None:
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


def guarded_time_call(row: Row, method: Method, case: Inputs, device: str) -> Optional[float]:
    """:func:`time_call`, or None once the row failed; a failure (e.g. out of
    memory) becomes the row's note."""
    if row.note:
        return None
    try:
        return time_call(method, case, device)
    except Exception as err:  # any error: report and carry on
        row.note = f'failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}'
        release_cuda_cache(device)
        return None


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """CUDA copy bandwidth (bytes read + written per second), median of 10 copies."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device='cuda').uniform_()
    dst = torch.empty_like(src)
    times = [cuda_event_ms(functools.partial(dst.copy_, src)) / 1e3 for _ in range(12)]
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times[2:])


def benchmark_case(methods: List[Method], case: Inputs, args: argparse.Namespace,
                   dtype_name: str, images: int, bandwidth: Optional[float]) -> Table:
    """First calls, agreement checks, then interleaved timing (memory comes after
    all timing: :func:`add_memory_columns`)."""
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
    for repeat in range(args.warmup - 1 + args.repeats):  # interleaved: drift hits all alike
        for method in runnable:
            elapsed = guarded_time_call(rows[method.name], method, case, device)
            if elapsed is not None and repeat >= args.warmup - 1:
                rows[method.name].times_ms.append(elapsed)
    for row in rows.values():
        if row.times_ms and not row.note:
            row.median_ms = statistics.median(row.times_ms)

    baseline, baseline_note = pick_baseline(rows)
    # the floor: logits read once + labels read once + gradient written once
    floor_bytes = 2 * case.pred.numel() * case.pred.element_size() \
        + case.labels.numel() * case.labels.element_size()
    floor_ms = floor_bytes / bandwidth * 1e3 if bandwidth else None
    return Table(dtype_name, images, case.pred.shape[0], case.pred.shape[1],
                 int(case.avg_factor), baseline, baseline_note, floor_ms,
                 list(rows.values()), checks)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


def _call_libc(name: str, *args: int) -> None:
    """glibc's ``name(*args)``, where there is one."""
    with contextlib.suppress(OSError, AttributeError):  # no glibc, or no such function
        getattr(ctypes.CDLL('libc.so.6'), name)(*args)


def peak_extra_bytes(method: Method, case: Inputs, device: str) -> Optional[float]:
    """Peak memory of one forward + backward above what was in use before it;
    None where the CPU peak cannot be reset (no /proc/self/clear_refs)."""
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
        _call_libc('malloc_trim', 0)  # free heap pages back to the OS first
        try:
            with open('/proc/self/clear_refs', 'w') as refs:
                refs.write('5')  # resets the peak RSS (VmHWM) to the current RSS
            _proc_status_kib('VmHWM')
        except OSError:
            return None
        before = _proc_status_kib('VmRSS')
        fwd_bwd(method, case)
        extra = (_proc_status_kib('VmHWM') - before) * 1024
    case.pred.grad = None
    return float(extra)


def memory_peaks(args: argparse.Namespace, mmdet_fn: Optional[cases.LossFn],
                 mmdet_error: str) -> Dict[str, Dict[str, Optional[float]]]:
    """Peak extra MiB of each method in each case ('images/dtype') after one warm-up
    call; None where unsupported, failed or not measurable."""
    peaks: Dict[str, Dict[str, Optional[float]]] = {}
    for images, dtype_name, case, methods in cases.iter_cases(args, mmdet_fn, mmdet_error):
        in_case = peaks[f'{images}/{dtype_name}'] = {}
        for method in methods:
            in_case[method.name] = None
            if method.fn is None:
                continue
            try:
                time_call(method, case, args.device)
                extra = peak_extra_bytes(method, case, args.device)
                in_case[method.name] = None if extra is None else extra / 2.0 ** 20
            except Exception:  # any error: the timing phase already reported it
                release_cuda_cache(args.device)
    return peaks


def memory_worker(args: argparse.Namespace, mmdet_fn: Optional[cases.LossFn],
                  mmdet_error: str) -> int:
    """``--memory-worker``: the CPU peaks as one JSON line. Every allocation >= 1 MiB
    gets its own mmap here, so that the RSS follows the live tensors (in malloc's
    heap the peak came out up to 2x them); it slows every call and cannot be
    undone, hence a process of its own."""
    _call_libc('mallopt', -3, 1 << 20)  # M_MMAP_THRESHOLD, also ends the dynamic threshold
    print(MEMORY_TAG + json.dumps(memory_peaks(args, mmdet_fn, mmdet_error)), flush=True)
    return 0


def add_memory_columns(tables: List[Table], args: argparse.Namespace,
                       mmdet_fn: Optional[cases.LossFn], mmdet_error: str) -> str:
    """Every case's peaks into its table, after all timing (CUDA in this process,
    the CPU in a memory worker on the same inputs); why there are none, or ''."""
    error = ''
    if args.device == 'cuda':
        peaks = memory_peaks(args, mmdet_fn, mmdet_error)
    else:
        command = [sys.executable, str(SCRIPT), '--memory-worker', '--device', 'cpu',
                   '--images', *map(str, args.images), '--dtype', *args.dtype]
        for name in ('anchors_per_image', 'classes', 'positives_per_image', 'seed', 'threads'):
            if getattr(args, name) is not None:
                command += ['--' + name.replace('_', '-'), str(getattr(args, name))]
        done = subprocess.run(command, capture_output=True, text=True)
        found = [line for line in done.stdout.splitlines() if line.startswith(MEMORY_TAG)]
        peaks = json.loads(found[0][len(MEMORY_TAG):]) if found else {}
        if not found:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']
            error = f'memory worker exited {done.returncode}: {tail[0][:200]}'
    for table in tables:
        apply_memory(table, peaks.get(f'{table.images}/{table.dtype}', {}))
    return error


def busy_cpu_seconds() -> Optional[Tuple[float, float]]:
    """(CPU seconds used since boot by all processes, by this one and its
    children); None where there is no /proc/stat."""
    try:
        with open('/proc/stat') as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def contention_note(before: Optional[Tuple[float, float]], wall_s: float,
                    device: str) -> str:
    """CPU use of other processes during the run; on the CPU a warning above a
    tenth of the machine (small parallel ops then stall on descheduled threads,
    by 10x and more on 2 cores)."""
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


#: mmdet's RetinaNet with this project's losses registered, no pretrained backbone.
RETINANET = ("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
             "custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)\n"
             "model = dict(backbone=dict(init_cfg=None))\n")
FOCAL, POLY1 = 'FocalLoss', 'Poly1FocalLoss(epsilon=-1)'


def train_step(args: argparse.Namespace) -> Dict[str, object]:
    """Wall time of a RetinaNet R50-FPN training step with FocalLoss and with
    Poly1FocalLoss(epsilon=-1) as ``bbox_head.loss_cls``, from the same weights."""
    cases.prepare_mmdet(args.device, args.mmcv_src)
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    config = Config.fromstring(RETINANET, '.py')
    torch.manual_seed(args.seed)
    model = MODELS.build(config.model)
    model.init_weights()
    model.to(args.device).train()
    common = dict(use_sigmoid=True, gamma=cases.GAMMA, alpha=cases.ALPHA, loss_weight=1.0)
    losses = {FOCAL: MODELS.build(dict(type='FocalLoss', **common)),
              POLY1: MODELS.build(dict(type='Poly1FocalLoss', epsilon=-1.0, **common))}
    height, width = args.train_size
    batch = demo_mm_inputs(batch_size=args.train_images, image_shapes=(3, height, width),
                           num_items=[5] * args.train_images, num_classes=80)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sync = torch.cuda.synchronize if args.device == 'cuda' else lambda: None

    def step(loss_module: torch.nn.Module) -> float:
        model.load_state_dict(initial)
        optimizer.state.clear()
        optimizer.zero_grad(set_to_none=True)
        model.bbox_head.loss_cls = loss_module
        sync()
        begin = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        parts = model.loss(data['inputs'], data['data_samples'])
        total, _ = model.parse_losses(parts)  # what a training loop backpropagates
        total.backward()
        optimizer.step()
        sync()
        return (time.perf_counter() - begin) * 1e3

    runs: Dict[str, List[float]] = {name: [] for name in losses}
    for _ in range(args.warmup + args.train_repeats):  # interleaved
        for name, module in losses.items():
            runs[name].append(step(module))
    times = {name: t[args.warmup:] for name, t in runs.items()}
    medians = {name: statistics.median(t) for name, t in times.items()}
    return dict(images=args.train_images, size=f'{height}x{width}', repeats=args.train_repeats,
                first_ms={name: t[0] for name, t in runs.items()}, median_ms=medians,
                times_ms=times, ratio=medians[POLY1] / medians[FOCAL])
