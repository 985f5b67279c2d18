"""When two runs can be compared: their configs agree in everything but the run's identity
(``work_dir``, ``randomness.seed``) and the box classifier's loss (``loss_cls`` of
``model.bbox_head`` or ``model.roi_head.bbox_head``, a cascade's stages too, or mmdet3d's
``model.pts_bbox_head``), which is what a sweep varies. mmdet_polyloss.det3d's heads count
as the mmdet3d heads they are made from (:data:`SAME_HEAD`): with a focal loss they compute
what those compute (tests/det3d), so a 3D config that swaps both the loss and the head
differs in the loss alone. Everything else (the dataset, the schedule, the model, the
pipeline) is the recipe, and a difference in it makes the runs' numbers incomparable.
Standard library only: configs come in as plain dicts (``Config.to_dict()``, or a dumped
config read as data by :func:`parse_config_text`, which runs none of it)."""
from __future__ import annotations

import ast
import math
import os.path as osp
import re
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, NamedTuple, Optional, Tuple

from tools.lib.errors import UserError

#: Keys that name the run rather than its recipe.
RUN_KEYS = ('work_dir', 'randomness.seed')
#: The box classifier's loss, and anything under it.
LOSS_KEY = re.compile(
    r'model\.(?:roi_head\.bbox_head|bbox_head|pts_bbox_head)(?:\.\d+)?\.loss_cls(?:\..*)?')
#: mmdet_polyloss.det3d's heads -> the mmdet3d head each is (sampling decided by the loss).
SAME_HEAD = {'PolyFocalAnchor3DHead': 'Anchor3DHead', 'PolyFocalShapeAwareHead': 'ShapeAwareHead',
             'PolyFocalPartA2RPNHead': 'PartA2RPNHead'}
#: Where a config names an anchor head of mmdet3d.
HEAD_KEYS = ('bbox_head', 'pts_bbox_head', 'rpn_head')
_UNSET = object()


class Difference(NamedTuple):
    """The first key where two configs differ, and its value in each (``_UNSET``: absent)."""
    key: str
    first: Any
    second: Any

    def describe(self, first: str, second: str) -> str:
        """``KEY: A in <first>, B in <second>``, values cut to 80 characters."""
        return f'{self.key}: {_shown(self.first)} in {first}, {_shown(self.second)} in {second}'


def _shown(value: Any) -> str:
    text = 'not set' if value is _UNSET else repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def _walk(a: Any, b: Any, key: str, allowed: Callable[[str], bool]) -> Iterator[Difference]:
    if key and allowed(key):
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for name in [*a, *(k for k in b if k not in a)]:
            yield from _walk(a.get(name, _UNSET), b.get(name, _UNSET),
                             f'{key}.{name}' if key else str(name), allowed)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk(x, y, f'{key}.{index}', allowed)
    elif type(a) is not type(b) and not (_number(a) and _number(b)) or a != b:
        yield Difference(key, a, b)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_mmdet3d_heads(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with each head of :data:`SAME_HEAD` named as the mmdet3d head it is."""
    model = config.get('model')
    if not isinstance(model, Mapping):
        return config
    renamed = {key: dict(head, type=SAME_HEAD[head['type']]) for key in HEAD_KEYS
               if isinstance(head := model.get(key), Mapping)
               and isinstance(head.get('type'), str) and head['type'] in SAME_HEAD}
    return dict(config, model=dict(model, **renamed)) if renamed else config


def first_difference(a: Mapping[str, Any], b: Mapping[str, Any],
                     also_allowed: Iterable[str] = ()) -> Optional[Difference]:
    """The first key (in ``a``'s order, then ``b``'s) where the configs differ outside the
    run's identity, the classifier loss and ``also_allowed``; None when they agree."""
    also = tuple(also_allowed)
    return next(_walk(_as_mmdet3d_heads(a), _as_mmdet3d_heads(b), '',
                      lambda key: key in RUN_KEYS or key in also
                      or LOSS_KEY.fullmatch(key) is not None), None)


def classifier_losses(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The box classifier's ``loss_cls`` settings by config key (a cascade's: each stage's),
    ``type`` first."""
    model = config.get('model') if isinstance(config.get('model'), Mapping) else {}
    roi_head = model.get('roi_head') if isinstance(model.get('roi_head'), Mapping) else {}
    found = {}
    for path, head in (('model.bbox_head', model.get('bbox_head')),
                       ('model.roi_head.bbox_head', roi_head.get('bbox_head')),
                       ('model.pts_bbox_head', model.get('pts_bbox_head'))):
        stages = dict(enumerate(head)) if isinstance(head, (list, tuple)) else {None: head}
        for index, stage in stages.items():
            loss = stage.get('loss_cls') if isinstance(stage, Mapping) else None
            if isinstance(loss, Mapping):  # its type first: the difference that matters most
                loss = dict(sorted(loss.items(), key=lambda item: item[0] != 'type'))
            if loss is not None:
                found[path + ('' if index is None else f'.{index}') + '.loss_cls'] = loss
    return found


def loss_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> Optional[Difference]:
    """The first classifier loss setting (``model.bbox_head.loss_cls.type``, ...) where the
    configs differ; None when their losses agree (``gamma=2`` is ``gamma=2.0``)."""
    return next(_walk(classifier_losses(a), classifier_losses(b), '', lambda key: False), None)


def annotation_files(config: Mapping[str, Any], loader: str) -> Iterator[Tuple[str, str]]:
    """(config key, path joined to its ``data_root``) of each ann_file of ``loader``'s datasets
    (inside wrappers and concatenations), then of its evaluators."""
    def walk(dataset: Any, where: str, data_root: str = '') -> Iterator[Tuple[str, str]]:
        if not isinstance(dataset, Mapping):
            return
        root = dataset.get('data_root')
        data_root = root if isinstance(root, str) and root else data_root
        ann_file = dataset.get('ann_file')
        if isinstance(ann_file, str) and ann_file:  # a URL is not joined (as mmengine's)
            yield f'{where}.ann_file', ann_file if '://' in ann_file else \
                osp.join(data_root, ann_file)
        inner = dataset.get('datasets', [dataset.get('dataset')])
        for index, each in enumerate(inner if isinstance(inner, (list, tuple)) else [inner]):
            yield from walk(each, f'{where}.dataset' if 'dataset' in dataset
                            else f'{where}.datasets.{index}', data_root)

    loader_cfg = config.get(loader)
    yield from walk(loader_cfg.get('dataset') if isinstance(loader_cfg, Mapping) else None,
                    f'{loader}.dataset')
    evaluator = loader.replace('dataloader', 'evaluator')
    metrics = config.get(evaluator)
    for metric in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
        if isinstance(metric, Mapping) and isinstance(metric.get('ann_file'), str):
            yield f'{evaluator}.ann_file', metric['ann_file']


_FLOAT_NAMES = {'inf': math.inf, 'nan': math.nan}  # as Config.dump writes them
_PLAIN = (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp,
          ast.expr_context, ast.operator, ast.unaryop)


class _NotData(Exception):
    """A node of a dumped config that is neither a ``name = value`` line nor a plain value."""


class _AsLiteral(ast.NodeTransformer):
    """Config.dump's ``dict({...}, k=v)`` as a dict display and ``inf`` / ``nan`` as
    constants, for ``ast.literal_eval``; :class:`_NotData` for any other call or name."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id not in _FLOAT_NAMES:
            raise _NotData(node)
        return ast.copy_location(ast.Constant(_FLOAT_NAMES[node.id]), node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        first = node.args[0] if node.args else ast.Dict([], [])
        if not (isinstance(node.func, ast.Name) and node.func.id == 'dict' and len(node.args) <= 1
                and isinstance(first, ast.Dict) and all(kw.arg for kw in node.keywords)):
            raise _NotData(node)
        keys = first.keys + [ast.Constant(kw.arg) for kw in node.keywords]
        values = first.values + [kw.value for kw in node.keywords]
        return self.visit(ast.copy_location(ast.Dict(keys, values), node))

    def visit_BinOp(self, node: ast.AST) -> ast.AST:
        """Signs and complex numbers only (``-1``, ``1+2j``), as ``literal_eval`` takes them."""
        node = self.generic_visit(node)
        try:
            ast.literal_eval(node)
        except (ValueError, TypeError):
            raise _NotData(node) from None
        return node

    visit_UnaryOp = visit_BinOp

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, _PLAIN) or None in getattr(node, 'keys', ()):  # {**other}
            raise _NotData(node)
        return super().generic_visit(node)


def parse_config_text(text: str, path: str) -> Dict[str, Any]:
    """The ``name = value`` lines of a config mmengine dumped, parsed (never run): ``text``
    (a file's, or a checkpoint's ``meta['cfg']``: mmengine's
    ``Config.pretty_text``, what it dumps); ``path`` names it in errors."""
    config: Dict[str, Any] = {}
    try:
        for stmt in ast.parse(text, filename=path).body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                raise _NotData(stmt)
            try:  # also a sign on a non-number, a set member or dict key that cannot be one
                config[stmt.targets[0].id] = ast.literal_eval(_AsLiteral().visit(stmt.value))
            except (ValueError, TypeError):
                raise _NotData(stmt.value) from None
    except SyntaxError as err:
        raise UserError(f'{path}:{err.lineno}: not a config mmengine dumped: '
                        f'{err.msg}') from None
    except (ValueError, RecursionError, MemoryError) as err:  # not text, null bytes, too deep
        raise UserError(f'{path}: not a config mmengine dumped: '
                        f'{type(err).__name__} {err}') from None
    except _NotData as err:
        node = err.args[0]
        what = 'a `name = value` line' if isinstance(node, ast.stmt) else 'a plain value'
        found = (ast.get_source_segment(text, node) or type(node).__name__).splitlines()[0]
        found = found if len(found) <= 60 else found[:57] + '...'
        raise UserError(f'{path}:{node.lineno}: expected {what}, found {found!r}; the '
                        "sweep report reads a run's config as data (as mmengine's "
                        'Config.dump writes it) and runs none of it') from None
    return config
