#!/usr/bin/env python
"""Generate the demo's synthetic COCO-format shapes dataset (tools/datasets/shapes.py) in OUT_DIR
(default data/polyloss_shapes, where configs/demo/ look); nothing to do when OUT_DIR already
holds it with the same parameters, complete, unless --force. A folder it did not make, or holding
files it does not write, is left alone; the new dataset is written beside OUT_DIR and swapped in
once complete (tools/datasets/dataset_dir.py). A bad value: one line on stderr, exit 2."""
import os.path as osp
import re
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from tools.datasets.shapes import SyntheticConfig, class_counts, generate
from tools.lib import errors
from tools.lib.errors import number
from tools.lib.sweep.settings import SEED_LIMIT


def main(argv: Optional[Sequence[str]] = None) -> None:
    defaults = SyntheticConfig()
    parser = errors.ArgumentParser(description='Generate the synthetic COCO-format shapes dataset')
    parser.add_argument('out_dir', nargs='?', default='data/polyloss_shapes',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--seed', type=number(int, 0, SEED_LIMIT - 1), default=defaults.seed,
                        help='an integer in [0, 2^32) (default: %(default)s)')
    parser.add_argument('--num-train', type=number(int, 1), default=defaults.num_train)
    parser.add_argument('--num-val', type=number(int, 1), default=defaults.num_val)
    parser.add_argument('--img-size', type=number(int, 1, 4096), default=defaults.img_size,
                        help='image side in pixels, at most 4096 (memory)')
    parser.add_argument('--min-size', type=number(float), default=defaults.min_size)
    parser.add_argument('--max-size', type=number(float), default=defaults.max_size)
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if the same dataset exists')
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                          img_size=args.img_size, min_size=args.min_size, max_size=args.max_size)
    try:
        cfg.validate()
    except ValueError as error:  # named as its flag: min_size is --min-size
        parser.error(re.sub(r'\b(min|max|img)_size\b', r'--\1-size', str(error)))
    with errors.writing(args.out_dir):
        made = generate(args.out_dir, cfg, force=args.force,
                        log=lambda line: print(f'[make_demo_data] {line}', flush=True))
    state = 'generated' if made else 'already present (same parameters)'
    train_file = osp.join(args.out_dir, 'annotations', 'instances_train.json')
    print(f'[make_demo_data] {args.out_dir}: {state}; train objects per class: '
          f'{class_counts(train_file)}')


if __name__ == '__main__':
    errors.run(main)
