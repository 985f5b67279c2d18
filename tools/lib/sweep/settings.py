#!/usr/bin/env python
"""Seeds and Poly-1 epsilons checked in Python, standard library only: tools/run_demo.sh
runs ``settings.py SEEDS "0 1 01"`` (prints ``0 1``) or ``EPSILONS "-1 -.5 .5"``
(``-1 -0.5 +0.5``) before set-up, where bash arithmetic would wrap around. A bad value:
one line on stderr (``run_demo: error: ...``, or ``--prog NAME``'s), exit 2."""
from __future__ import annotations

import math
import os.path as osp
import re
import struct
import sys
from typing import List, Optional, Sequence

if __name__ == '__main__':  # run as a script: make ``tools`` importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))))

from tools.lib.errors import UserError, run

SEED_LIMIT = 2 ** 32  # numpy's np.random.seed takes 32-bit seeds
FLOAT32_MAX = 3.4028234663852886e38  # the loss computes in float32: more would overflow
_DECIMAL = re.compile(r'[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)')


def parse_seeds(value: str, variable: str = 'SEEDS') -> List[int]:
    """The seeds (ASCII decimal integers in [0, 2^32), each once) in ``value``, in order."""
    seeds: List[int] = []
    for word in value.split():
        if not re.fullmatch('[0-9]+', word):
            raise UserError(f'{variable} must hold non-negative integers, got {word!r} in '
                            f'{variable}={value!r}')
        digits = word.lstrip('0') or '0'  # Python refuses int() of thousands of digits
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
    """The epsilons (plain decimals >= -1, each once) in ``value`` by name, as the COCO
    configs name them (``-1``, ``-0.5``, ``0``, ``+0.5``), in order."""
    names: List[str] = []
    for word in value.split():
        epsilon = float(word) if _DECIMAL.fullmatch(word) else math.nan
        if not epsilon >= -1:  # also catches nan
            raise UserError(f'{variable} must hold decimal numbers >= -1, got {word!r} in '
                            f'{variable}={value!r}')
        if epsilon > FLOAT32_MAX:
            raise UserError(f'{variable}: {word!r} is too large for the loss, which computes '
                            f'in float32 (at most {FLOAT32_MAX:.8g}), in {variable}={value!r}')
        if epsilon != 0 and struct.unpack('f', struct.pack('f', epsilon))[0] == 0:
            raise UserError(f'{variable}: {word!r} is too small for the loss, which computes '
                            f'in float32: it would train as epsilon 0, in {variable}={value!r}')
        name = '0' if epsilon == 0 else ('+' if epsilon > 0 else '') + '%.15g' % epsilon
        if name in names:
            raise UserError(f'{variable} lists epsilon {name} twice: {variable}={value!r}')
        names.append(name)
    return names


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``settings.py [--prog NAME] SEEDS|EPSILONS VALUE``: print the checked values."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = args[2:] if args[:1] == ['--prog'] else args
    parsers = {'SEEDS': parse_seeds, 'EPSILONS': parse_epsilons}
    if len(args) != 2 or args[0] not in parsers:
        raise UserError(f'usage: settings.py [--prog NAME] SEEDS|EPSILONS VALUE, got {args}')
    print(' '.join(map(str, parsers[args[0]](args[1], args[0]))))


if __name__ == '__main__':
    run(main, prog=sys.argv[2] if sys.argv[1:2] == ['--prog'] and len(sys.argv) > 2
        else 'run_demo')
