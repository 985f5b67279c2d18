#!/usr/bin/env python
"""Generate the demo's synthetic COCO-format shapes dataset.

    python tools/make_demo_data.py [OUT_DIR] [--seed N] [--num-train N] ...

Default OUT_DIR: data/polyloss_shapes (where configs/demo/ look). Skips the
work when OUT_DIR already holds the same dataset (same parameters); --force
regenerates. See mmdet_polyloss/demo/synthetic.py. A bad value is one line
on stderr, exit status 2.
"""
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet_polyloss.demo import synthetic
from tools.lib import errors


def main(argv: Optional[Sequence[str]] = None) -> None:
    synthetic.main(argv, parser_class=errors.ArgumentParser)


if __name__ == '__main__':
    errors.run(main)
