"""The sweep report: read the runs, print the tables, draw the plot.

Reading work dirs is :mod:`.runs`, the tables and their statistics
:mod:`.tables`, the PNG :mod:`.plot`; ``tools/sweep_report.py`` is the
command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .plot import plot_sweep
from .runs import SweepReportError, load_run
from .tables import order_runs, runs_table, seed_table


def build_report(work_dirs: Sequence[str],
                 baseline: Optional[str] = None,
                 out_png: Optional[str] = None,
                 out_md: Optional[str] = None) -> str:
    """Read the runs, write the optional PNG / markdown, return the tables."""
    if not work_dirs:
        raise SweepReportError('work_dirs: give at least one work dir')
    runs = order_runs([load_run(d) for d in work_dirs], baseline)
    table = runs_table(runs)
    across_seeds = seed_table(runs)
    if across_seeds:
        table += ('\n\n(Deltas above are against the one baseline run; per-seed '
                  'paired differences are below.)'
                  '\n\nAcross seeds (mean ± sd; Δ against the baseline\'s setting):\n\n'
                  + across_seeds)
    if out_png:
        plot_sweep(runs, out_png)
    if out_md:
        Path(out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(out_md).write_text(table + '\n')
    return table
