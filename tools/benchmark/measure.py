"""Time and peak extra memory of forward + backward, a RetinaNet training step, report."""
import argparse
import contextlib
import copy
import ctypes
import datetime
import functools
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from tools.benchmark import cases
from tools.benchmark.cases import Check, Inputs, Method, fwd_bwd

MEMORY_TAG = 'MEMORY_JSON '  # starts the memory worker's line of results
SCRIPT = Path(__file__).resolve().with_name('benchmark_loss.py')
#: mmdet's RetinaNet with this project's losses registered, no pretrained backbone.
RETINANET = ("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
             "custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)\n"
             "model = dict(backbone=dict(init_cfg=None))\n")
Peaks = Dict[str, Optional[float]]  # peak extra MiB by method


def cuda_event_ms(action: Callable[[], object]) -> float:
    """Milliseconds of ``action`` on the current CUDA stream, between two events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    action()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_call(method: Method, case: Inputs, device: str) -> float:
    """Milliseconds of one forward + backward (the last gradient freed before)."""
    case.pred.grad = None
    if device == 'cuda':
        torch.cuda.synchronize()
        return cuda_event_ms(lambda: fwd_bwd(method, case))
    begin = time.perf_counter()
    fwd_bwd(method, case)
    return (time.perf_counter() - begin) * 1e3


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """CUDA copy bandwidth (bytes read + written per second), median of 10 copies."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device='cuda').uniform_()
    dst = torch.empty_like(src)
    times = [cuda_event_ms(functools.partial(dst.copy_, src)) / 1e3 for _ in range(12)]
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times[2:])


def call_libc(name: str, *args: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # no glibc, or no such function
        getattr(ctypes.CDLL('libc.so.6'), name)(*args)


def _proc_status_kib(key: str) -> int:
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ':'))


def peaks_mib(methods: List[Method], case: Inputs, device: str) -> Peaks:
    """Each runnable method's peak MiB in forward + backward (after a warm-up call) above
    that before it; none where it failed or there is no /proc/self/clear_refs."""
    peaks: Peaks = {}
    for method in (m for m in methods if m.fn is not None):
        try:
            fwd_bwd(method, case)
            case.pred.grad = None
            gc.collect()
            if device == 'cuda':
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                fwd_bwd(method, case)
                torch.cuda.synchronize()
                peaks[method.name] = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
            else:
                call_libc('malloc_trim', 0)  # free heap pages back to the OS first
                with open('/proc/self/clear_refs', 'w') as refs:
                    refs.write('5')  # resets the peak RSS (VmHWM) to the current RSS
                before = _proc_status_kib('VmRSS')
                fwd_bwd(method, case)
                peaks[method.name] = (_proc_status_kib('VmHWM') - before) / 2 ** 10
        except Exception:  # any error: the timing reports it
            torch.cuda.empty_cache()
        case.pred.grad = None
    return peaks


def memory_worker(args: argparse.Namespace, mmdet_fn: Optional[cases.LossFn],
                  mmdet_error: str) -> int:
    """``--memory-worker``: every case's CPU peaks as one JSON line. Each allocation >= 1 MiB
    gets its own mmap, so that the RSS follows the live tensors (in malloc's heap the peak
    came out up to 2x them); that slows every call for good, hence a process of its own."""
    call_libc('mallopt', -3, 1 << 20)  # M_MMAP_THRESHOLD, also ends the dynamic threshold
    peaks = {where: peaks_mib(methods, case, args.device)
             for where, case, methods in cases.iter_cases(args, mmdet_fn, mmdet_error)}
    print(MEMORY_TAG + json.dumps(peaks), flush=True)
    return 0


def cpu_peaks(argv: List[str]) -> Tuple[Dict[str, Peaks], str]:
    """Every case's peaks from a memory worker (this command line), and why none, or ''."""
    done = subprocess.run([sys.executable, str(SCRIPT), *argv, '--memory-worker'],
                          capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith(MEMORY_TAG)]
    if found:
        return json.loads(found[0][len(MEMORY_TAG):]), ''
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']
    return {}, f'memory worker exited {done.returncode}: {tail[0][:200]}'


def _cells(*values_and_digits: Tuple[Optional[float], int]) -> str:
    """``a | b |``, each value to its significant digits ('—' for None)."""
    return ' | '.join('—' if v is None else f'{v:.{d}g}' if abs(v) < 10 ** d else f'{v:.0f}'
                      for v, d in values_and_digits) + ' |'


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return value / base if value is not None and base else None


def benchmark_case(where: str, case: Inputs, methods: List[Method], args: argparse.Namespace,
                   bandwidth: Optional[float],
                   peaks: Optional[Peaks]) -> Tuple[List[Check], List[str], List[str]]:
    """Interleaved timing, the agreement checks after the first calls, then (``peaks``
    None) the peaks: the checks, the table's markdown and the methods that failed."""
    notes = {m.name: m.unsupported for m in methods}
    times: Dict[str, List[float]] = {m.name: [] for m in methods}
    for repeat in range(args.warmup + args.repeats):  # interleaved: drift hits all alike
        if repeat == 1:  # after the first calls (Triton compiles, caches)
            checks = cases.agreement_checks(methods, case, where, args.seed)
            print('\n'.join(check.line for check in checks), flush=True)
            gc.collect()
            torch.cuda.empty_cache()  # a no-op on a CPU run
        for method in (m for m in methods if not notes[m.name]):
            try:
                times[method.name].append(time_call(method, case, args.device))
            except Exception as err:  # any error (e.g. out of memory): noted, on with the rest
                notes[method.name] = f'failed: {type(err).__name__}: ' \
                    + str(err).splitlines()[0][:160]
                torch.cuda.empty_cache()
    medians = {name: statistics.median(t[args.warmup:]) for name, t in times.items()
               if not notes[name]}
    if peaks is None:
        peaks = peaks_mib([m for m in methods if m.name in medians], case, args.device)
    base = next((name for name in (cases.MMDET, cases.NAIVE) if name in medians), None)
    note = ' (no baseline ran)' if base is None else '' if base == cases.MMDET else \
        f' ({cases.MMDET} {notes[cases.MMDET]}, so ratios are vs {base})'
    # the floor: logits read once + labels read once + gradient written once
    floor_ms = (2 * case.pred.numel() * case.pred.element_size() + case.labels.numel()
                * case.labels.element_size()) / bandwidth * 1e3 if bandwidth else None
    lines = [f'## {where}: {case.pred.shape[0]} x {case.pred.shape[1]}, '
             f'{int(case.avg_factor)} positives', '', f'Baseline: {base or "none"}{note}'
             + (f'; floor {floor_ms:.3f} ms' if floor_ms else ''), '',
             '| method | first call ms | median ms | x baseline | peak extra MiB | x baseline '
             '| x floor |', '|---|---:|---:|---:|---:|---:|---:|']
    for name, why in notes.items():
        median, peak = medians.get(name), peaks.get(name)
        lines.append(f'| {name} | {why or "—"} | | | | | |' if median is None else
                     f'| {name} | ' + _cells(
                         (times[name][0], 4), (median, 4), (_ratio(median, medians.get(base)), 3),
                         (peak, 4), (_ratio(peak, peaks.get(base)), 3),
                         (_ratio(median, floor_ms), 3)))
    failed = [f'{where}: {name}: {why}' for name, why in notes.items() if why[:6] == 'failed']
    return checks, lines + [''], failed


def train_step(args: argparse.Namespace) -> List[str]:
    """The report's lines on a RetinaNet R50-FPN training step with FocalLoss and with
    Poly1FocalLoss(epsilon=-1) as loss_cls, from the same weights (after load_baseline)."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    torch.manual_seed(args.seed)
    model = MODELS.build(Config.fromstring(RETINANET, '.py').model)
    model.init_weights()
    model.to(args.device).train()
    common = dict(use_sigmoid=True, gamma=cases.GAMMA, alpha=cases.ALPHA, loss_weight=1.0)
    losses = {'FocalLoss': MODELS.build(dict(type='FocalLoss', **common)),
              'Poly1FocalLoss(epsilon=-1)': MODELS.build(
                  dict(type='Poly1FocalLoss', epsilon=-1.0, **common))}
    batch = demo_mm_inputs(batch_size=args.train_images, image_shapes=(3, *args.train_size),
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
        total, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
        total.backward()  # what a training loop backpropagates
        optimizer.step()
        sync()
        return (time.perf_counter() - begin) * 1e3

    runs: Dict[str, List[float]] = {name: [] for name in losses}
    for _ in range(args.warmup + args.train_repeats):  # interleaved
        for name, module in losses.items():
            runs[name].append(step(module))
    medians = {name: statistics.median(times[args.warmup:]) for name, times in runs.items()}
    return [f'{args.train_images} image(s) of {args.train_size[0]}x{args.train_size[1]}, '
            'demo_mm_inputs, 80 classes; data_preprocessor + model.loss + backward + SGD step; '
            f'median of {args.train_repeats} interleaved steps after {args.warmup} warm-up.', '',
            '| loss_cls | first step ms | median ms |', '|---|---:|---:|'] + [
        f'| {name} | {runs[name][0]:.0f} | {median:.0f} |' for name, median in medians.items()
    ] + ['', 'Poly1FocalLoss / FocalLoss step time: '
         f"{medians['Poly1FocalLoss(epsilon=-1)'] / medians['FocalLoss']:.3f}"]


def portable_path(word: str) -> str:
    """A path inside the checkout relative to it, any other absolute one as ``<its name>``."""
    path, root = Path(word), SCRIPT.parents[2]
    if path.is_absolute():
        return str(path.relative_to(root)) if path.is_relative_to(root) else f'<{path.name}>'
    return word


def header(args: argparse.Namespace, bandwidth: Optional[float], notes: List[str]) -> List[str]:
    """The report's title, command (naming no folder of this machine), date, versions,
    device, method and notes."""
    from mmdet_polyloss.functional.triton_kernels import AVAILABLE, triton
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
        memory = 'CUDA max_memory_allocated above memory_allocated before the call'
        if not AVAILABLE:
            notes = notes + ['Triton kernels unavailable: the fused method runs its eager path']
    else:
        cpu = None
        with contextlib.suppress(OSError), open('/proc/cpuinfo') as info:
            cpu = next((line.split(':', 1)[1].strip() for line in info
                        if line.startswith('model name')), None)
        device = (f'{cpu or platform.processor() or "CPU"} ({torch.get_num_threads()} '
                  f'torch threads, {os.cpu_count()} CPUs)')
        memory = ('peak RSS (VmHWM after clear_refs) above RSS before the call, in a process '
                  'whose malloc mmaps buffers >= 1 MiB')
    return ['# Loss benchmark: Poly-1 focal vs mmdet FocalLoss', '',
            f'Command: `PYTHONPATH=. python {shlex.join(map(portable_path, sys.argv))}`', '',
            f'Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; torch '
            f'{torch.__version__}, triton {triton.__version__ if triton else "not installed"}, '
            f'Python {platform.python_version()}; device: {device}', '',
            f'Inputs: {args.anchors_per_image} anchors/image x {args.classes} classes, '
            f'{args.positives_per_image} positives/image (random classes), the rest background,'
            f' ~{cases.IGNORED_FRACTION:.0%} of anchors ignored; avg_factor = positives; logits '
            f'~ N({cases.PRIOR_LOGIT:.2f}, 1); gamma {cases.GAMMA}, alpha {cases.ALPHA}; Poly-1 '
            f'at epsilon=-1; seed {args.seed}. Forward + backward: {args.warmup} warm-up calls '
            f'(the first is "first call"), then the median of {args.repeats} interleaved calls.'
            f' Peak extra memory: {memory}.', ''] + ([
                f'Measured device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write); floor'
                ' = (logits read once + labels read once + gradient written once) / bandwidth.',
                ''] if bandwidth else []) + [f'- {note}' for note in notes] + [''] * bool(notes)
