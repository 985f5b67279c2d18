#!/usr/bin/env python
"""Seeds and Poly-1 epsilons for the demo and sweep launchers, checked in Python.

A seed is an ASCII decimal integer in [0, 2^32) (``01`` is seed 1); an epsilon a
plain decimal number >= -1 (below, the Poly-1 loss goes negative) that fits a
float32, named as in the COCO configs (``-1``, ``-0.5``, ``0``, ``+0.5``); each
value once. ``tools/run_demo.sh`` checks its settings with the command (standard
library only: it runs before set-up), as bash arithmetic would wrap around::

    python tools/lib/run_settings.py SEEDS "0 1 01"        # prints: 0 1
    python tools/lib/run_settings.py EPSILONS "-1 -.5 .5"  # prints: -1 -0.5 +0.5

A bad value: one line on stderr (``run_demo: error: ...``, or ``--prog NAME``'s), exit 2.
"""
from __future__ import annotations

import math
import os.path as osp
import re
import sys
from typing import List, Optional, Sequence

if __name__ == '__main__':  # run as a script: make ``tools`` importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools.lib.errors import UserError, run

#: Seeds are below this (numpy's ``np.random.seed`` takes 32-bit seeds).
SEED_LIMIT = 2 ** 32
#: The largest float32: the loss computes in it, so a larger epsilon would overflow.
FLOAT32_MAX = 3.4028234663852886e38
_DECIMAL = re.compile(r'[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)')


def parse_seeds(value: str, variable: str = 'SEEDS') -> List[int]:
    """The seeds in the whitespace-separated ``value``, in order (else a UserError)."""
    seeds: List[int] = []
    for word in value.split():
        if not re.fullmatch('[0-9]+', word):
            raise UserError(f'{variable} must hold non-negative integers, got {word!r} in '
                            f'{variable}={value!r}')
        # int() of a few thousand digits is refused by Python: compare lengths first.
        digits = word.lstrip('0') or '0'
        seed = int(digits) if len(digits) <= len(str(SEED_LIMIT)) else SEED_LIMIT
        if seed >= SEED_LIMIT:
            raise UserError(f'{variable} must hold seeds below 2^32 = {SEED_LIMIT}, got '
                            f'{word!r} in {variable}={value!r}')
        if seed in seeds:
            raise UserError(f'{variable} lists seed {seed} twice: {variable}={value!r}')
        seeds.append(seed)
    if not seeds:
        raise UserError(f'{variable} lists no seed: {variable}={value!r}')
    return seeds


def parse_epsilons(value: str, variable: str = 'EPSILONS') -> List[str]:
    """The epsilons in the whitespace-separated ``value``, by name, in order (else
    a UserError)."""
    names: List[str] = []
    for word in value.split():
        epsilon = float(word) if _DECIMAL.fullmatch(word) else math.nan
        if not epsilon >= -1:  # also catches nan
            raise UserError(f'{variable} must hold decimal numbers >= -1, got {word!r} in '
                            f'{variable}={value!r}')
        if epsilon > FLOAT32_MAX:
            raise UserError(f'{variable}: {word!r} is too large for the loss, which computes '
                            f'in float32 (at most {FLOAT32_MAX:.8g}), in {variable}={value!r}')
        # 15 significant digits; 0 rather than -0.
        name = '0' if epsilon == 0 else ('+' if epsilon > 0 else '') + '%.15g' % epsilon
        if name in names:
            raise UserError(f'{variable} lists epsilon {name} twice: {variable}={value!r}')
        names.append(name)
    return names


PARSERS = {'SEEDS': parse_seeds, 'EPSILONS': parse_epsilons}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``run_settings.py [--prog NAME] SEEDS|EPSILONS VALUE``: print the checked values."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ['--prog']:
        args = args[2:]
    if len(args) != 2 or args[0] not in PARSERS:
        raise UserError(f'usage: run_settings.py [--prog NAME] {{{",".join(PARSERS)}}} VALUE, '
                        f'got {args}')
    print(' '.join(str(item) for item in PARSERS[args[0]](args[1], args[0])))


if __name__ == '__main__':
    prog = sys.argv[2] if sys.argv[1:2] == ['--prog'] and len(sys.argv) > 2 else 'run_demo'
    run(main, prog=prog)
