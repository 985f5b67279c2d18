#!/usr/bin/env python
"""Generate the demo's synthetic COCO-format shapes dataset (tools/lib/shapes.py).

    python tools/make_demo_data.py [OUT_DIR] [--seed N] [--num-train N] ...

Default OUT_DIR: data/polyloss_shapes (where configs/demo/ look). Skips the
work when OUT_DIR already holds the same dataset (same parameters); --force
regenerates. A bad value is one line on stderr, exit status 2.
"""
import argparse
import math
import os.path as osp
import re
import sys
from typing import Callable, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import errors
from tools.lib.run_settings import SEED_LIMIT
from tools.lib.shapes import SyntheticConfig, class_counts, generate


def _int_in(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """argparse type: a decimal integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low or (high is not None and value > high):
            bound = f'from {low} to {high}' if high is not None else f'>= {low}'
            raise argparse.ArgumentTypeError(f'expected an integer {bound}, got {text!r}')
        return value
    return parse


def _finite(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected a finite number, got {text!r}')
    return value


def main(argv: Optional[Sequence[str]] = None) -> None:
    defaults = SyntheticConfig()
    parser = errors.ArgumentParser(description='Generate the synthetic COCO-format shapes dataset')
    parser.add_argument('out_dir', nargs='?', default='data/polyloss_shapes',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--seed', type=_int_in(0, SEED_LIMIT - 1), default=defaults.seed,
                        help='an integer in [0, 2^32) (default: %(default)s)')
    parser.add_argument('--num-train', type=_int_in(1), default=defaults.num_train)
    parser.add_argument('--num-val', type=_int_in(1), default=defaults.num_val)
    # At most 4096: memory (the generator holds one image at a time).
    parser.add_argument('--img-size', type=_int_in(1, 4096), default=defaults.img_size)
    parser.add_argument('--min-size', type=_finite, default=defaults.min_size)
    parser.add_argument('--max-size', type=_finite, default=defaults.max_size)
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if the same dataset exists')
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                          img_size=args.img_size, min_size=args.min_size, max_size=args.max_size)
    try:
        cfg.validate()
    except ValueError as error:  # the flags' names: num_train is --num-train
        parser.error(re.sub(r'\b(min_size|max_size|img_size)\b',
                            lambda m: '--' + m.group(1).replace('_', '-'), str(error)))
    try:
        made = generate(args.out_dir, cfg, force=args.force)
    except OSError as error:
        parser.error(f'cannot write the dataset to {args.out_dir}: '
                     f'{error.strerror or error}: {error.filename or args.out_dir}')
    ann = osp.join(args.out_dir, 'annotations', 'instances_train.json')
    state = 'generated' if made else 'already present (same parameters)'
    print(f'[make_demo_data] {args.out_dir}: {state}; train objects per '
          f'class: {class_counts(ann)}')


if __name__ == '__main__':
    errors.run(main)
