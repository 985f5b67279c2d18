"""The classification losses the sweep report tells apart.

This package's losses are read from their classes: their names from
``mmdet_polyloss.losses``, their defaults (``epsilon``, ``alpha_weighted_poly``
...) from the signatures of their constructors. mmdet's own losses, the
baselines, are a small table.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Mapping

#: mmdet's losses that the Poly losses replace, and their short names in the table.
BASELINE_LOSSES: Mapping[str, str] = {'FocalLoss': 'focal', 'CrossEntropyLoss': 'cross-entropy'}


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


@lru_cache(maxsize=None)
def poly_losses() -> Dict[str, PolyLoss]:
    """This package's losses by registered name."""
    from mmdet_polyloss import losses
    return {name: PolyLoss(name, _signature_defaults(getattr(losses, name)))
            for name in losses.__all__}
