"""Which of mmdet's focal-loss heads take Poly1FocalLoss: the head matrix.

Finds every config shipped inside mmdet whose model uses ``FocalLoss`` (in any
head, at any depth), keeps one per head type (preferring ResNet-50), swaps every
``FocalLoss`` for ``Poly1FocalLoss`` and trains one step on a small synthetic
batch on CPU, without pretrained weights. A head fails only if it trains with
mmdet's ``FocalLoss`` on the same batch and not with ours; what cannot run here
at all (a text encoder from the hub, a GPU-only op) is skipped with the reason.
"""
import copy
import json
import logging
import operator
import re
from dataclasses import dataclass
from functools import lru_cache, reduce
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

Slot = Tuple[Any, ...]  # path from cfg.model to a loss dict, e.g. ('bbox_head', 'loss_cls')
_BASE = re.compile(r"_base_\s*=\s*(\[[^\]]*\]|'[^']*'|\"[^\"]*\")", re.S)
#: FocalLoss arguments that carry over to Poly1FocalLoss.
_KEPT_LOSS_ARGS = ('use_sigmoid', 'gamma', 'alpha', 'loss_weight', 'reduction', 'activated')
#: The scan's result for the installed mmdet, committed so that the test can
#: parametrize per head without re-scanning (about a minute) at collection.
HEADS_FILE = Path(__file__).with_name('focal_heads.json')


@dataclass
class HeadCase:
    head_type: str
    config: Path
    slots: List[Slot]


@dataclass
class HeadResult:
    case: HeadCase
    status: str  # 'ok', 'failed' or 'skipped'
    detail: str = ''


def mmdet_config_root() -> Path:
    import mmdet
    return Path(mmdet.__file__).parent / '.mim' / 'configs'


def mmdet_version() -> str:
    import mmdet
    return mmdet.__version__


def save_heads(cases: List[HeadCase]) -> None:
    """Write a scan to HEADS_FILE, one head a line (configs relative to mmdet's)."""
    rows = ',\n  '.join(json.dumps(dict(head=c.head_type,
                                        config=str(c.config.relative_to(mmdet_config_root())),
                                        slots=[list(s) for s in c.slots])) for c in cases)
    HEADS_FILE.write_text(f'{{"mmdet": {json.dumps(mmdet_version())}, "heads": [\n  {rows}\n]}}\n')


def load_heads() -> Tuple[str, List[HeadCase]]:
    """(the mmdet version it was scanned from, the cases) of the saved scan."""
    data = json.loads(HEADS_FILE.read_text())
    return data['mmdet'], [HeadCase(h['head'], mmdet_config_root() / h['config'],
                                    [tuple(s) for s in h['slots']]) for h in data['heads']]


@lru_cache(maxsize=None)
def _mentions_focal(path: Path) -> bool:
    """Whether the (resolved) ``path`` or a config it inherits from mentions
    FocalLoss, from the text alone: far quicker than parsing every config."""
    try:
        text = path.read_text()
    except OSError:
        return False
    if "'FocalLoss'" in text or '"FocalLoss"' in text:
        return True
    match = _BASE.search(text)
    bases = re.findall(r"['\"]([^'\"]+\.py)['\"]", match.group(1)) if match else []
    return any(_mentions_focal((path.parent / b).resolve()) for b in bases if '::' not in b)


def _focal_slots(node: Any, path: Slot = ()) -> List[Slot]:
    if isinstance(node, dict):
        found = [path] if node.get('type') == 'FocalLoss' else []
        for key, value in node.items():
            found += _focal_slots(value, path + (key,))
        return found
    if isinstance(node, (list, tuple)):
        return [s for i, v in enumerate(node) for s in _focal_slots(v, path + (i,))]
    return []


def _get(node: Any, path: Slot) -> Any:
    return reduce(operator.getitem, path, node)


def find_focal_heads() -> List[HeadCase]:
    """One config per head type whose model uses FocalLoss somewhere: a
    ResNet-50 one if any, then the shortest name (usually the plain 1x one)."""
    from mmengine.config import Config
    paths = sorted(p for p in mmdet_config_root().rglob('*.py') if '_base_' not in p.parts)
    by_head: Dict[str, HeadCase] = {}
    for path in sorted(paths, key=lambda p: ('r50' not in p.name, len(p.name), p.name)):
        if not _mentions_focal(path.resolve()):
            continue
        try:
            model = Config.fromfile(str(path)).to_dict().get('model')
        except Exception:  # any error: configs needing absent extras
            continue
        slots = _focal_slots(model)
        if slots:
            head_type = _get(model, slots[0][:-1]).get('type', '?')
            by_head.setdefault(head_type, HeadCase(head_type, path, slots))
    return [by_head[k] for k in sorted(by_head)]


def run_head(case: HeadCase, poly_loss: Dict[str, Any],
             image_sizes: Sequence[int] = (128, 320)) -> HeadResult:
    """Forward/backward with FocalLoss, then with ``poly_loss`` swapped in.

    Small images first; a head that cannot run on them with FocalLoss (a
    kernel larger than the feature map, more queries than tokens) is tried
    once more on the next size.
    """
    from mmengine.config import Config
    model_cfg = Config.fromfile(str(case.config)).to_dict()['model']
    num_classes = _get(model_cfg, case.slots[0][:-1]).get('num_classes', 80)
    for size in image_sizes:
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


def _train_step(model_cfg: Dict[str, Any], image_size: int, num_classes: int) -> float:
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
    # Backbone and neck gradients do not involve the loss: skip that backward
    # (the forward, and so the loss, is unchanged).
    for part in ('backbone', 'neck'):
        if hasattr(model, part):
            getattr(model, part).requires_grad_(False)
    # The runner's progress, as a training loop publishes it (TOOD reads the
    # epoch, BoxInst the iteration).
    hub = MessageHub.get_current_instance()
    hub.update_info('epoch', 0)
    hub.update_info('iter', 0)
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, image_size, image_size),
                            num_items=[3, 2], num_classes=num_classes, with_mask=True)
    data = model.data_preprocessor(packed, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, _ = model.parse_losses(losses)  # the sum a training loop backpropagates
    if not torch.isfinite(total):
        raise FloatingPointError(f'non-finite loss {total.item()}')
    total.backward()
    return float(total)


def _drop_pretrained(node: Any) -> None:
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        node.pop('pretrained', None)
        if node.get('teacher_ckpt'):  # LAD's teacher: no download here
            node['teacher_ckpt'] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, list):
        for value in node:
            _drop_pretrained(value)


def _error_summary(err: Exception) -> str:
    """The exception's type and message on one line, cut to 160 characters."""
    text = f'{type(err).__name__}: {err}'.replace('\n', ' ')
    return text if len(text) <= 160 else text[:157] + '...'


def head_table(results: List[HeadResult], root: Path | None = None) -> str:
    """Markdown table of the head matrix, one row per head (configs relative to
    ``root``, mmdet's config folder by default)."""
    root = root or mmdet_config_root()
    lines = ['| head | config (mmdet) | FocalLoss slots swapped | result | detail |',
             '| --- | --- | --- | --- | --- |']
    for r in results:
        slots = ', '.join('.'.join(map(str, s)) for s in r.case.slots)
        config = r.case.config.relative_to(root) if r.case.config.is_relative_to(root) \
            else r.case.config
        lines.append(f'| {r.case.head_type} | {config} | {slots} | {r.status} | '
                     f'{r.detail.replace("|", "/")} |')
    return '\n'.join(lines)
