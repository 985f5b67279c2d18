#!/usr/bin/env python
"""Generate a tiny synthetic LiDAR set in mmdet3d's KITTI layout (tools/datasets/synthetic_kitti.py)
in OUT_DIR (default data/kitti, where mmdet3d's KITTI configs look): point clouds, info files,
and ObjectSample's database. OUT_DIR must be missing, empty, or a set this tool wrote (never
the real KITTI); the new set is written beside it and swapped in (tools/datasets/dataset_dir.py).
Needs mmdet3d. A bad value or folder: one line on stderr, exit 2."""
import json
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from tools.datasets.dataset_dir import check_replaceable, target, written_beside
from tools.datasets.synthetic_kitti import KIND, make_kitti_set, record
from tools.lib import errors
from tools.lib.errors import number
from tools.lib.sweep.settings import SEED_LIMIT


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = errors.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', nargs='?', default='data/kitti',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--seed', type=number(int, 0, SEED_LIMIT - 1), default=0,
                        help='an integer in [0, 2^32) (default: %(default)s)')
    parser.add_argument('--num-train', type=number(int, 1, 10000), default=8,
                        help='training scenes (default: %(default)s)')
    parser.add_argument('--num-val', type=number(int, 1, 10000), default=4,
                        help='validation scenes (default: %(default)s)')
    args = parser.parse_args(argv)
    folder = target(args.out_dir)
    check_replaceable(folder, KIND)
    with errors.writing(args.out_dir), written_beside(folder) as built:
        counts = make_kitti_set(built, train=args.num_train, val=args.num_val, seed=args.seed)
        (built / 'meta.json').write_text(
            json.dumps(record(args.num_train, args.num_val, args.seed)) + '\n')
    print(f"{args.out_dir}: {counts['train']} training and {counts['val']} validation scenes, "
          f"{counts['objects']} objects")


if __name__ == '__main__':
    errors.run(main)
