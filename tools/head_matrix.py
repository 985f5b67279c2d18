#!/usr/bin/env python
"""The focal-loss head matrix: every mmdet head that uses FocalLoss, trained
one step with Poly1FocalLoss swapped in, on CPU.

    python tools/head_matrix.py [--scan] [--heads NAME ...] [--out-md FILE]

Without --scan it runs the heads listed in tools/lib/focal_heads.json (one
config per head type, scanned from the installed mmdet); --scan walks mmdet's
configs again (about a minute) and rewrites that file. Prints a markdown table;
exits 1 when a head trains with FocalLoss but not with Poly1FocalLoss.
"""
import os.path as osp
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from tools.lib import errors, head_matrix

POLY_LOSS = dict(type='Poly1FocalLoss', epsilon=-1.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = errors.ArgumentParser(prog='head_matrix.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--scan', action='store_true',
                        help=f'rescan mmdet configs and rewrite {head_matrix.HEADS_FILE.name}')
    parser.add_argument('--heads', nargs='+', metavar='NAME',
                        help='only these head types (default: all)')
    parser.add_argument('--out-md', type=Path, help='also write the table here')
    args = parser.parse_args(argv)

    if args.scan or not head_matrix.HEADS_FILE.exists():
        print('scanning mmdet configs for FocalLoss users ...', flush=True)
        head_matrix.save_heads(head_matrix.find_focal_heads())
    scanned_from, cases = head_matrix.load_heads()
    if scanned_from != head_matrix.mmdet_version():
        parser.error(f'{head_matrix.HEADS_FILE} was scanned from mmdet {scanned_from}, '
                     f'installed is {head_matrix.mmdet_version()}: run with --scan')
    if args.heads:
        unknown = sorted(set(args.heads) - {c.head_type for c in cases})
        if unknown:
            parser.error(f'argument --heads: {unknown} not among '
                         f'{sorted(c.head_type for c in cases)}')
        cases = [c for c in cases if c.head_type in args.heads]

    results = []
    for case in cases:
        start = time.perf_counter()
        result = head_matrix.run_head(case, POLY_LOSS)
        print(f'{case.head_type}: {result.status} ({time.perf_counter() - start:.0f} s) '
              f'{result.detail}', flush=True)
        results.append(result)
    table = head_matrix.head_table(results)
    print('\n' + table)
    if args.out_md:
        counts = Counter(r.status for r in results)
        header = (f'# Focal-loss head matrix\n\nCommand: `python {" ".join(sys.argv)}`; '
                  f'{time.strftime("%Y-%m-%d", time.gmtime())}, mmdet '
                  f'{head_matrix.mmdet_version()}, CPU. Every FocalLoss of one config per '
                  f'head type swapped for {POLY_LOSS}; one training step each, FocalLoss '
                  f'first. {counts["ok"]} ok, {counts["skipped"]} skipped, '
                  f'{counts["failed"]} failed.\n\n')
        args.out_md.write_text(header + table + '\n')
    return 1 if any(r.status == 'failed' for r in results) else 0


if __name__ == '__main__':
    errors.run(lambda argv: sys.exit(main(argv)), prog='head_matrix.py')
