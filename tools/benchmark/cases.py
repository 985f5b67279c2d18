"""The benchmark's inputs (RetinaNet-like logits and labels) and compared methods.

mmdet and ``mmdet_polyloss`` are imported where needed, so that on CUDA mmcv's
focal op can be prepared before mmdet is first imported (:func:`prepare_mmdet`).
"""
import argparse
import contextlib
import functools
import gc
import math
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, List, Optional, Tuple
from unittest import mock

import torch
from torch import Tensor

#: ``loss(pred, labels, weight, avg_factor)``, as a head calls its loss_cls.
LossFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]

MMDET = 'mmdet FocalLoss'
FUSED = 'Poly1FocalLoss (fused)'
UNCHECKED = 'Poly1FocalLoss (fused, value checks off)'  # no host sync per call
EAGER = 'Poly1 fused, eager (no Triton)'
NAIVE = 'Poly-1 naive autograd'
GAMMA, ALPHA = 2.0, 0.25
PRIOR_LOGIT = -math.log((1 - 0.01) / 0.01)  # RetinaNet's initial classification bias
IGNORED_FRACTION = 0.01
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


@dataclass
class Inputs:
    """One case: logits (a leaf that requires grad), labels, weights, avg_factor."""
    pred: Tensor
    labels: Tensor
    weight: Tensor
    avg_factor: float


@dataclass
class Method:
    """A loss ``fn`` (None: ``unsupported`` says why); ``context`` wraps fwd + bwd."""
    name: str
    fn: Optional[LossFn]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    unsupported: str = ''


def make_base_inputs(images: int, anchors: int, classes: int, positives: int,
                     seed: int) -> Tuple[Tensor, Tensor, Tensor, float]:
    """float32 logits ~ N(prior logit, 1) as early in training, labels (``positives``
    random classes per image, the rest background: ``classes``), weights (~1% of
    the background ignored) and avg_factor (the positives), on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    rows = images * anchors
    logits = torch.randn(rows, classes, generator=gen).add_(PRIOR_LOGIT)
    labels = torch.full((rows,), classes, dtype=torch.long)
    for image in range(images):
        index = torch.randperm(anchors, generator=gen)[:positives] + image * anchors
        labels[index] = torch.randint(0, classes, (positives,), generator=gen)
    ignored = (torch.rand(rows, generator=gen) < IGNORED_FRACTION) & (labels == classes)
    return logits, labels, (~ignored).float(), float(images * positives)


def to_case(base: Tuple[Tensor, Tensor, Tensor, float], dtype: torch.dtype,
            device: str) -> Inputs:
    """The base inputs on ``device``, logits rounded to ``dtype`` (a fresh leaf)."""
    logits, labels, weight, avg_factor = base
    pred = logits.to(device=device, dtype=dtype, copy=True).requires_grad_(True)
    return Inputs(pred, labels.to(device), weight.to(device), avg_factor)


def fwd_bwd(method: Method, case: Inputs, loss_scale: float = 1.0) -> Tensor:
    """Loss and backward (of ``loss_scale`` times it in float32, unless 1); returns
    the detached loss, the gradient is in ``case.pred.grad``."""
    case.pred.grad = None
    with method.context():
        loss = method.fn(case.pred, case.labels, case.weight, case.avg_factor)
        (loss if loss_scale == 1.0 else loss.float() * loss_scale).backward()
    return loss.detach()


def poly1(epsilon: float, naive: bool = False) -> LossFn:
    """Poly-1 at ``epsilon``: the ``Poly1FocalLoss`` module, or ``naive``, the
    composed formula through autograd (the functional layer's 'reference' path)."""
    settings = dict(gamma=GAMMA, alpha=ALPHA)
    if naive:
        from mmdet_polyloss.functional.poly_focal import _polyn_focal_loss_on_path
        return lambda pred, labels, weight, avg_factor: _polyn_focal_loss_on_path(
            'reference', pred, labels, weight, epsilons=(epsilon,), avg_factor=avg_factor,
            **settings)
    from mmdet_polyloss.losses import Poly1FocalLoss
    return module_loss(Poly1FocalLoss(use_sigmoid=True, epsilon=epsilon, **settings))


def module_loss(module: torch.nn.Module) -> LossFn:
    """An mmdet loss module as a :data:`LossFn` (``avg_factor`` by keyword)."""
    return lambda pred, labels, weight, avg_factor: module(
        pred, labels, weight, avg_factor=avg_factor)


@contextlib.contextmanager
def value_checks_off() -> Iterator[None]:
    """The loss's tensor value checks off, forward and backward."""
    from mmdet_polyloss.functional import set_value_checks
    previous = set_value_checks(False)
    try:
        yield
    finally:
        set_value_checks(previous)


def prepare_mmdet(device: str, mmcv_src: Optional[str]) -> None:
    """On CUDA, make mmcv's focal op importable: mmcv's compiled ops, or its
    kernel JIT-built from ``mmcv_src`` (``tools/dev/mmcv_cuda_focal.py``)."""
    if device == 'cuda':
        from tools.dev import mmcv_cuda_focal
        mmcv_cuda_focal.ensure_ops(mmcv_src)


def load_baseline(device: str, mmcv_src: Optional[str]) -> Tuple[Optional[LossFn], str]:
    """mmdet's FocalLoss as its heads call it (on CUDA, mmcv's kernel), or
    (None, why it cannot be loaded)."""
    try:
        prepare_mmdet(device, mmcv_src)
        from mmdet.models.losses import FocalLoss
        module = FocalLoss(use_sigmoid=True, gamma=GAMMA, alpha=ALPHA)
    except Exception as err:  # any error: no mmdet / mmcv, or a failed JIT build
        return None, f'{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}'
    return module_loss(module), ''


def build_methods(device: str, mmdet_fn: Optional[LossFn], mmdet_error: str,
                  dtype: torch.dtype, epsilon: float = -1.0) -> List[Method]:
    """The compared methods for one dtype, Poly-1 at ``epsilon``."""
    if mmdet_fn is None:
        mmdet = Method(MMDET, None, unsupported=f'not loaded: {mmdet_error}')
    elif device == 'cuda' and dtype == torch.bfloat16:
        mmdet = Method(MMDET, None, unsupported="unsupported (mmcv's kernel: fp32/fp16 only)")
    else:
        mmdet = Method(MMDET, mmdet_fn)
    methods = [mmdet, Method(FUSED, poly1(epsilon)),
               Method(UNCHECKED, poly1(epsilon), context=value_checks_off)]
    if device == 'cuda':  # the fused path on its eager ops, forward and backward
        from mmdet_polyloss.functional import triton_kernels
        no_triton = functools.partial(mock.patch.object, triton_kernels, 'AVAILABLE', False)
        methods.append(Method(EAGER, poly1(epsilon), context=no_triton))
    return methods + [Method(NAIVE, poly1(epsilon, naive=True))]


def iter_cases(args: argparse.Namespace, mmdet_fn: Optional[LossFn],
               mmdet_error: str) -> Iterator[Tuple[int, str, Inputs, List[Method]]]:
    """(images, dtype name, inputs, methods) of every size x dtype of the
    command line, the same inputs on every call."""
    for images in args.images:
        base = make_base_inputs(images, args.anchors_per_image, args.classes,
                                args.positives_per_image, args.seed)
        for dtype_name in args.dtype:
            dtype = DTYPES[dtype_name]
            yield (images, dtype_name, to_case(base, dtype, args.device),
                   build_methods(args.device, mmdet_fn, mmdet_error, dtype))
            if args.device == 'cuda':
                torch.cuda.empty_cache()
        del base
        gc.collect()
