"""The head matrix: one config per mmdet head type that uses ``FocalLoss`` (at any depth), every
``FocalLoss`` swapped for a Poly loss, one training step on CPU without pretrained weights. A
head fails only if it trains with ``FocalLoss`` on the same batch and not with ours."""
import copy
import json
import logging
import operator
import re
from dataclasses import dataclass
from functools import lru_cache, reduce
from pathlib import Path
from typing import Any, Sequence

import mmdet

Slot = tuple[Any, ...]  # path from cfg.model to a loss dict, e.g. ('bbox_head', 'loss_cls')
_BASE = re.compile(r"_base_\s*=\s*(\[[^\]]*\]|'[^']*'|\"[^\"]*\")", re.S)
#: FocalLoss arguments that carry over to Poly1FocalLoss.
_KEPT_LOSS_ARGS = ('use_sigmoid', 'gamma', 'alpha', 'loss_weight', 'reduction', 'activated')
#: The scan of the installed mmdet, committed: the test parametrizes per head without it.
HEADS_FILE = Path(__file__).with_name('focal_heads.json')
MMDET_CONFIGS = Path(mmdet.__file__).parent / '.mim' / 'configs'


@dataclass
class HeadCase:
    head_type: str
    config: Path
    slots: list[Slot]


@dataclass
class HeadResult:
    case: HeadCase
    status: str  # 'ok', 'failed' or 'skipped'
    detail: str = ''


def mmdet_version() -> str:
    return mmdet.__version__


def save_heads(cases: list[HeadCase]) -> None:
    """Write a scan to HEADS_FILE, one head a line (configs relative to mmdet's)."""
    rows = ',\n  '.join(json.dumps(dict(head=c.head_type,
                                        config=str(c.config.relative_to(MMDET_CONFIGS)),
                                        slots=[list(s) for s in c.slots])) for c in cases)
    HEADS_FILE.write_text(f'{{"mmdet": {json.dumps(mmdet_version())}, "heads": [\n  {rows}\n]}}\n')


def load_heads() -> tuple[str, list[HeadCase]]:
    """(the mmdet version it was scanned from, the cases) of the saved scan."""
    data = json.loads(HEADS_FILE.read_text())
    return data['mmdet'], [HeadCase(h['head'], MMDET_CONFIGS / h['config'],
                                    [tuple(s) for s in h['slots']]) for h in data['heads']]


@lru_cache(maxsize=None)
def _mentions_focal(path: Path) -> bool:
    """Whether ``path`` or a config it inherits from names FocalLoss (text only: quick)."""
    try:
        text = path.read_text()
    except OSError:
        return False
    if "'FocalLoss'" in text or '"FocalLoss"' in text:
        return True
    match = _BASE.search(text)
    bases = re.findall(r"['\"]([^'\"]+\.py)['\"]", match.group(1)) if match else []
    return any(_mentions_focal((path.parent / b).resolve()) for b in bases if '::' not in b)


def _focal_slots(node: Any, path: Slot = ()) -> list[Slot]:
    if isinstance(node, dict):
        return ([path] if node.get('type') == 'FocalLoss' else []) + [
            s for key, value in node.items() for s in _focal_slots(value, path + (key,))]
    if isinstance(node, (list, tuple)):
        return [s for i, v in enumerate(node) for s in _focal_slots(v, path + (i,))]
    return []


def _get(node: Any, path: Slot) -> Any:
    return reduce(operator.getitem, path, node)


def find_focal_heads() -> list[HeadCase]:
    """One config per head type using FocalLoss: a ResNet-50 one if any, then the shortest name."""
    from mmengine.config import Config
    paths = [p for p in MMDET_CONFIGS.rglob('*.py') if '_base_' not in p.parts]
    by_head: dict[str, HeadCase] = {}
    for path in sorted(paths, key=lambda p: ('r50' not in p.name, len(p.name), p.name, p)):
        if not _mentions_focal(path.resolve()):
            continue
        try:
            model = Config.fromfile(str(path)).to_dict().get('model')
        except Exception:  # configs needing absent extras
            continue
        slots = _focal_slots(model)
        if slots:
            head_type = _get(model, slots[0][:-1]).get('type', '?')
            by_head.setdefault(head_type, HeadCase(head_type, path, slots))
    return [by_head[k] for k in sorted(by_head)]


def run_head(case: HeadCase, poly_loss: dict[str, Any],
             image_sizes: Sequence[int] = (128, 320)) -> HeadResult:
    """A step with FocalLoss on the first of ``image_sizes`` it runs on, then with ``poly_loss``."""
    from mmengine.config import Config
    model_cfg = Config.fromfile(str(case.config)).to_dict()['model']
    num_classes = _get(model_cfg, case.slots[0][:-1]).get('num_classes', 80)
    for size in image_sizes:  # a kernel larger than the feature map, more queries than tokens
        try:
            focal_loss = _train_step(model_cfg, size, num_classes)
            break
        except Exception as err:
            error = err
    else:
        return HeadResult(case, 'skipped',
                          f'does not train here even with FocalLoss: {_error_summary(error)}')
    poly_cfg = copy.deepcopy(model_cfg)
    for slot in case.slots:
        loss_cfg = _get(poly_cfg, slot)
        kept = {k: v for k, v in loss_cfg.items() if k in _KEPT_LOSS_ARGS}
        loss_cfg.clear()
        loss_cfg.update(kept, **poly_loss)
    try:
        poly = _train_step(poly_cfg, size, num_classes)
    except Exception as err:
        return HeadResult(case, 'failed', f'FocalLoss trains, Poly1FocalLoss does not: '
                                          f'{_error_summary(err)}')
    if poly == focal_loss:  # same weights and batch: a swapped loss must show
        return HeadResult(case, 'failed', f'the swap had no effect: both losses {poly:.6g}')
    return HeadResult(case, 'ok', f'{size}px: FocalLoss {focal_loss:.4g}, '
                                  f'Poly1FocalLoss {poly:.4g}')


def _train_step(model_cfg: dict[str, Any], image_size: int, num_classes: int) -> float:
    """Build without pretrained weights, one loss + backward; the summed loss."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.logging import MessageHub, MMLogger

    import mmdet_polyloss.losses  # noqa: F401  (registers the Poly losses in mmdet's MODELS)
    register_all_modules()
    model_cfg = ConfigDict(copy.deepcopy(model_cfg))  # some heads use attribute access
    _drop_pretrained(model_cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    try:
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        model.init_weights()
    finally:
        logger.setLevel(level)
    model.train()
    for part in ('backbone', 'neck'):  # their gradients do not involve the loss
        if hasattr(model, part):
            getattr(model, part).requires_grad_(False)
    # As a training loop does: TOOD's head reads the epoch, BoxInst's the iteration.
    MessageHub.get_current_instance().update_info_dict(dict(epoch=0, iter=0))
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, image_size, image_size),
                            num_items=[3, 2], num_classes=num_classes, with_mask=True)
    data = model.data_preprocessor(packed, True)
    total, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    if not torch.isfinite(total):
        raise FloatingPointError(f'non-finite loss {total.item()}')
    total.backward()
    return float(total)


def _drop_pretrained(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
        node.pop('pretrained', None)
        if node.get('teacher_ckpt'):  # LAD's teacher: no download here
            node['teacher_ckpt'] = None
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for value in children:
        _drop_pretrained(value)


def _error_summary(err: Exception) -> str:
    """The exception's type and message on one line, cut to 160 characters."""
    text = f'{type(err).__name__}: {err}'.replace('\n', ' ')
    return text if len(text) <= 160 else text[:157] + '...'


def head_table(results: list[HeadResult], root: Path = MMDET_CONFIGS) -> str:
    """The matrix as a markdown table, configs relative to ``root``."""
    lines = ['| head | config (mmdet) | FocalLoss slots swapped | result | detail |',
             '| --- | --- | --- | --- | --- |']
    for r in results:
        slots = ', '.join('.'.join(map(str, s)) for s in r.case.slots)
        config = r.case.config.relative_to(root) if r.case.config.is_relative_to(root) \
            else r.case.config
        lines.append(f'| {r.case.head_type} | {config} | {slots} | {r.status} | '
                     f'{r.detail.replace("|", "/")} |')
    return '\n'.join(lines)
