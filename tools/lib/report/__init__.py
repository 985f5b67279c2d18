"""The sweep report: :mod:`.runs` reads finished runs' work dirs (as data, running
nothing), :mod:`.tables` compares them in markdown tables, :mod:`.plot` in a PNG."""
from pathlib import Path
from typing import Optional, Sequence

from .plot import plot_sweep
from .runs import RunResult, SweepReportError, load_run
from .tables import order_runs, runs_table, seed_table

__all__ = ['RunResult', 'SweepReportError', 'build_report', 'load_run', 'order_runs',
           'plot_sweep', 'runs_table']


def build_report(work_dirs: Sequence[str], baseline: Optional[str] = None,
                 out_png: Optional[str] = None, out_md: Optional[str] = None) -> str:
    """Read the runs, write the optional PNG / markdown, return the tables. Unfinished
    runs are listed under them; a named baseline among those gives way to the default."""
    loaded = [load_run(d) for d in work_dirs]
    finished = [run for run in loaded if not run.unfinished]
    left_out = [run for run in loaded if run.unfinished]
    if not finished:
        raise SweepReportError('no run has a test of the checkpoint its training ended with '
                               'yet: ' + '; '.join(f'{r.name}: {r.unfinished}' for r in left_out))
    named = baseline is not None and any(r.matches(baseline) for r in left_out)
    runs = order_runs(finished, None if named else baseline)
    table = runs_table(runs)
    if left_out:
        table += (f'\n\nNot in the tables: {len(left_out)} of {len(loaded)} runs have no test '
                  'of the checkpoint their training ended with (unfinished):\n\n'
                  + '\n'.join(f'- {r.name}: {r.unfinished}' for r in left_out))
        if named:
            table += (f'\n\nThe baseline {baseline} is one of them: the deltas are against '
                      f'{runs[0].name}.')
    across_seeds = seed_table(runs)
    if across_seeds:
        table += ('\n\n(Deltas above are against the one baseline run; per-seed '
                  'paired differences are below.)'
                  '\n\nAcross seeds (mean ± sd; Δ against the baseline\'s setting):\n\n'
                  + across_seeds)
    try:
        if out_png:
            plot_sweep(runs, out_png)
        if out_md:
            Path(out_md).parent.mkdir(parents=True, exist_ok=True)
            Path(out_md).write_text(table + '\n')
    except OSError as error:
        raise SweepReportError(f'cannot write {error.filename!r}: {error.strerror}') from error
    return table
