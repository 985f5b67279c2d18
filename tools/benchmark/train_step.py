"""A full RetinaNet R50-FPN training step with mmdet's ``FocalLoss`` and with
``Poly1FocalLoss`` in the classification head (``--train-step``)."""
import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from tools.benchmark.cases import ALPHA, GAMMA, prepare_mmdet
from tools.benchmark.measure import synchronize

#: A config on mmdet's RetinaNet, with this project's losses registered and no
#: pretrained backbone to download.
CONFIG = ("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
          "custom_imports = dict(imports=['mmdet_polyloss'], allow_failed_imports=False)\n"
          "model = dict(backbone=dict(init_cfg=None))\n")
FOCAL = 'FocalLoss'
POLY1 = 'Poly1FocalLoss(epsilon=-1)'


def build_retinanet(seed: int) -> torch.nn.Module:
    """RetinaNet R50-FPN from mmdet's config, initialised from ``seed``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'retinanet_bench.py'
        path.write_text(CONFIG)
        cfg = Config.fromfile(str(path))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def train_step_benchmark(args: argparse.Namespace) -> Dict[str, object]:
    """Median wall time of a RetinaNet R50-FPN training step, FocalLoss vs
    Poly1FocalLoss(epsilon=-1) in ``bbox_head.loss_cls``, same weights."""
    prepare_mmdet(args.device, args.mmcv_src)
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    model = build_retinanet(args.seed)
    model.to(args.device).train()
    common = dict(use_sigmoid=True, gamma=GAMMA, alpha=ALPHA, loss_weight=1.0)
    losses = {FOCAL: MODELS.build(dict(type='FocalLoss', **common)),
              POLY1: MODELS.build(dict(type='Poly1FocalLoss', epsilon=-1.0, **common))}
    height, width = args.train_size
    batch = demo_mm_inputs(batch_size=args.train_images, image_shapes=(3, height, width),
                           num_items=[5] * args.train_images, num_classes=80)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(loss_module: torch.nn.Module) -> float:
        model.load_state_dict(initial)
        optimizer.state.clear()
        optimizer.zero_grad(set_to_none=True)
        model.bbox_head.loss_cls = loss_module
        synchronize(args.device)
        begin = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        parts = model.loss(data['inputs'], data['data_samples'])
        total, _ = model.parse_losses(parts)  # what a training loop backpropagates
        total.backward()
        optimizer.step()
        synchronize(args.device)
        return (time.perf_counter() - begin) * 1e3

    times: Dict[str, List[float]] = {name: [] for name in losses}
    first: Dict[str, float] = {}
    for repeat in range(args.warmup + args.train_repeats):
        for name, module in losses.items():
            elapsed = step(module)
            if repeat == 0:
                first[name] = elapsed
            elif repeat >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return dict(images=args.train_images, size=f'{height}x{width}', repeats=args.train_repeats,
                first_ms=first, median_ms=medians, times_ms=times,
                ratio=medians[POLY1] / medians[FOCAL])
