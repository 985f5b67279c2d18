#!/usr/bin/env python
"""The focal-loss head matrix: every mmdet head that uses FocalLoss, trained one step with
Poly1FocalLoss swapped in, on CPU. The heads are those of tools/lib/focal_heads.json; --scan
rescans mmdet's configs (a minute). Exit status 1 when a head trains with FocalLoss only."""
import os.path as osp
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from tools.lib import errors, head_matrix
from tools.lib.cli import check_writable

POLY_LOSS = dict(type='Poly1FocalLoss', epsilon=-1.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = errors.ArgumentParser(prog='head_matrix.py', description=__doc__)
    parser.add_argument('--scan', action='store_true',
                        help=f'rescan mmdet configs and rewrite {head_matrix.HEADS_FILE.name}')
    parser.add_argument('--heads', nargs='+', metavar='NAME',
                        help='only these head types (default: all)')
    parser.add_argument('--out-md', type=Path, help='also write the table here')
    args = parser.parse_args(argv)
    if args.out_md:  # fail now, not after every head has trained
        check_writable(str(args.out_md), '--out-md')
    if args.scan or not head_matrix.HEADS_FILE.exists():
        print('scanning mmdet configs for FocalLoss users ...', flush=True)
        head_matrix.save_heads(head_matrix.find_focal_heads())
    scanned_from, cases = head_matrix.load_heads()
    if scanned_from != head_matrix.mmdet_version():
        parser.error(f'{head_matrix.HEADS_FILE} was scanned from mmdet {scanned_from}, '
                     f'installed is {head_matrix.mmdet_version()}: run with --scan')
    unknown = sorted(set(args.heads or ()) - {c.head_type for c in cases})
    if unknown:
        parser.error(f'argument --heads: {unknown} not among '
                     f'{sorted(c.head_type for c in cases)}')
    results = []
    for case in cases:
        if args.heads is None or case.head_type in args.heads:
            start = time.perf_counter()
            results.append(head_matrix.run_head(case, POLY_LOSS))
            print(f'{case.head_type}: {results[-1].status} ({time.perf_counter() - start:.0f} '
                  f's) {results[-1].detail}', flush=True)
    table = head_matrix.head_table(results)
    print('\n' + table)
    counts = Counter(r.status for r in results)
    if args.out_md:
        args.out_md.write_text(
            f'# Focal-loss head matrix\n\nCommand: `python {" ".join(sys.argv)}`; '
            f'{time.strftime("%Y-%m-%d", time.gmtime())}, mmdet {head_matrix.mmdet_version()}, '
            f'CPU. Every FocalLoss of one config per head type swapped for {POLY_LOSS}; one '
            f'training step each, FocalLoss first. {counts["ok"]} ok, {counts["skipped"]} '
            f'skipped, {counts["failed"]} failed.\n\n{table}\n')
    return 1 if counts['failed'] else 0


if __name__ == '__main__':
    errors.run(lambda argv: sys.exit(main(argv)), prog='head_matrix.py')
