#!/usr/bin/env python
"""Compare the runs of an epsilon sweep (tools/train.py or test.py work dirs, read as data,
never run): markdown tables and an AP/AR plot, the baseline first (tools/lib/sweep/report/)."""
import os.path as osp
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib.cli import check_writable
from tools.lib.errors import ArgumentParser, UserError, run
from tools.lib.sweep.report import build_report
from tools.lib.sweep.report.plot import plot_formats


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = ArgumentParser(
        prog='sweep_report.py', description='COCO bbox results of a sweep, baseline first')
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR')
    parser.add_argument('--baseline', help='run name (work dir basename) or path to compare '
                        'against (default: the focal-loss run)')
    parser.add_argument('--out-png', help='write the AP/AR vs epsilon plot')
    parser.add_argument('--out-md', help='write the table to this file')
    args = parser.parse_args(argv)
    if args.out_png and Path(args.out_png).suffix.lower().lstrip('.') not in plot_formats():
        raise UserError(f'--out-png {args.out_png!r}: expected a file name ending in a format '
                        'matplotlib writes (.png, .pdf, .svg, ...)')
    for flag, path in (('--out-png', args.out_png), ('--out-md', args.out_md)):
        if path:  # fail now, not after reading every run
            check_writable(path, flag)
    print(build_report(args.work_dirs, args.baseline, args.out_png, args.out_md))
    if args.out_png:
        print(f'\nplot: {args.out_png}')


if __name__ == '__main__':
    run(main, prog='sweep_report.py')
