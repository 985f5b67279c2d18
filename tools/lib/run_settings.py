#!/usr/bin/env python
"""Seeds and Poly-1 epsilons for the demo and sweep launchers, checked in Python.

``tools/run_demo.sh`` checks ``SEEDS`` and ``EPSILONS`` here rather than with
bash arithmetic, which wraps around (2^64 + 1 is 1 there, 2^63 negative). A
seed is a decimal integer in [0, 2^32) (what numpy's and torch's seeding
accept), written in ASCII digits; ``01`` is seed 1; each seed once. An
epsilon is a plain decimal number >= -1 (below, the Poly-1 loss goes
negative), finite as a float, each once, and is named as in the COCO config
names: ``-1``, ``-0.5``, ``0``, ``+0.5`` (15 significant digits).

As a command, for shell scripts (standard library only, so it runs before the
project's environment exists)::

    python tools/lib/run_settings.py SEEDS "0 1 01"        # prints: 0 1
    python tools/lib/run_settings.py EPSILONS "-1 -.5 .5"  # prints: -1 -0.5 +0.5

A bad value: one line on stderr (``run_demo: error: ...``; ``--prog NAME`` first
names another caller), exit status 2.
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
#: The smallest epsilon the demo trains: below -1 the Poly-1 loss goes negative.
MIN_EPSILON = -1.0

_SEED = re.compile(r'[0-9]+')
_DECIMAL = re.compile(r'[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)')


def parse_seeds(value: str, variable: str = 'SEEDS') -> List[int]:
    """The seeds in the whitespace-separated ``value``, in order.

    Raises:
        UserError: a word is not a seed, a seed comes twice, or there is none.
    """
    seeds: List[int] = []
    for word in value.split():
        if not _SEED.fullmatch(word):
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


def epsilon_name(epsilon: float) -> str:
    """How an epsilon is written in run and config names: -1, -0.5, 0, +0.5."""
    if epsilon == 0:
        return '0'  # no -0
    return ('+' if epsilon > 0 else '') + '%.15g' % epsilon


#: The largest float32: the loss computes in it, so a larger epsilon would overflow.
FLOAT32_MAX = 3.4028234663852886e38


def parse_epsilons(value: str, variable: str = 'EPSILONS') -> List[str]:
    """The epsilons in the whitespace-separated ``value``, by name, in order.

    Raises:
        UserError: a word is not a decimal number >= -1 (or overflows a
            float), or two words name the same epsilon.
    """
    names: List[str] = []
    for word in value.split():
        epsilon = float(word) if _DECIMAL.fullmatch(word) else math.nan
        if not epsilon >= MIN_EPSILON:  # also catches nan
            raise UserError(f'{variable} must hold decimal numbers >= -1, got {word!r} in '
                            f'{variable}={value!r}')
        if epsilon > FLOAT32_MAX:
            raise UserError(f'{variable}: {word!r} is too large for the loss, which computes '
                            f'in float32 (at most {FLOAT32_MAX:.8g}), in {variable}={value!r}')
        name = epsilon_name(epsilon)
        if name in names:
            raise UserError(f'{variable} lists epsilon {name} twice: {variable}={value!r}')
        names.append(name)
    return names


PARSERS = {'SEEDS': parse_seeds, 'EPSILONS': parse_epsilons}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``run_settings.py SEEDS|EPSILONS VALUE``: print the checked values."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ['--prog']:
        args = args[2:]
    if len(args) != 2 or args[0] not in PARSERS:
        raise UserError(f'usage: run_settings.py [--prog NAME] {{{",".join(PARSERS)}}} VALUE, '
                        f'got {args}')
    variable, value = args
    print(' '.join(str(item) for item in PARSERS[variable](value, variable)))


def _prog(argv: Sequence[str]) -> str:
    """The caller's name for error messages: ``--prog NAME``, else run_demo."""
    return argv[1] if len(argv) > 1 and argv[0] == '--prog' else 'run_demo'


if __name__ == '__main__':
    run(main, prog=_prog(sys.argv[1:]))
