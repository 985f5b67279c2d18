"""The classification losses the sweep report tells apart.

This package's losses are read from their classes: their names from
``mmdet_polyloss.losses``, their defaults (``epsilon``, ``alpha_weighted_poly``
...) from the signatures of their constructors. Without mmdet those classes
cannot be imported; the report then reads the same names and defaults from the
classes' source, without running it. mmdet's own losses, the baselines, are a
small table.
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Mapping

#: mmdet's losses that the Poly losses replace, and their short names in the table.
BASELINE_LOSSES: Mapping[str, str] = {'FocalLoss': 'focal', 'CrossEntropyLoss': 'cross-entropy'}

_LOSSES_DIR = Path(__file__).resolve().parents[1] / 'losses'


@dataclass(frozen=True)
class PolyLoss:
    """One of this package's registered losses, as far as the report needs it."""

    name: str
    #: The constructor's arguments that have defaults, with those defaults.
    defaults: Mapping[str, Any]

    @property
    def is_poly1(self) -> bool:
        """Takes one ``epsilon`` (Poly-1), as opposed to ``epsilons`` (Poly-N)."""
        return 'epsilon' in self.defaults

    @property
    def is_poly_n(self) -> bool:
        return 'epsilons' in self.defaults

    @property
    def is_focal(self) -> bool:
        """A focal loss (it has the focusing parameter gamma), else cross-entropy."""
        return 'gamma' in self.defaults


def _signature_defaults(cls: type) -> Dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.default is not inspect.Parameter.empty}


def _imported_losses() -> Dict[str, PolyLoss]:
    """From the classes themselves (needs mmdet)."""
    from .. import losses
    return {name: PolyLoss(name, _signature_defaults(getattr(losses, name)))
            for name in losses.__all__}


def _registers(cls: ast.ClassDef) -> bool:
    """Decorated with ``@<registry>.register_module()``."""
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
               and d.func.attr == 'register_module' for d in cls.decorator_list)


def _init_defaults(cls: ast.ClassDef, classes: Mapping[str, ast.ClassDef]) -> Dict[str, Any]:
    """The defaults of ``__init__`` (inherited from a base in the same files)."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == '__init__':
            args = node.args
            with_default = (args.posonlyargs + args.args)[-len(args.defaults):] if args.defaults \
                else []
            pairs = [(arg, args.defaults[i]) for i, arg in enumerate(with_default)]
            pairs += [(arg, args.kw_defaults[i]) for i, arg in enumerate(args.kwonlyargs)
                      if args.kw_defaults[i] is not None]  # None: keyword-only without default
            return {arg.arg: ast.literal_eval(default) for arg, default in pairs}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            return _init_defaults(classes[base.id], classes)
    return {}


def losses_from_source(folder: Path = _LOSSES_DIR) -> Dict[str, PolyLoss]:
    """The registered loss classes defined in ``folder``'s modules, read (not run)."""
    classes: Dict[str, ast.ClassDef] = {}
    for path in sorted(folder.glob('*.py')):
        tree = ast.parse(path.read_text(), filename=str(path))
        classes.update((n.name, n) for n in tree.body if isinstance(n, ast.ClassDef))
    return {name: PolyLoss(name, _init_defaults(cls, classes))
            for name, cls in classes.items() if _registers(cls)}


@lru_cache(maxsize=None)
def poly_losses() -> Dict[str, PolyLoss]:
    """This package's losses by registered name."""
    try:
        return _imported_losses()
    except ModuleNotFoundError as err:
        if err.name != 'mmdet' and not (err.name or '').startswith('mmdet.'):
            raise
        return losses_from_source()

