"""The sweep report: :mod:`.runs` reads finished runs' work dirs (as data, running
nothing), :mod:`.tables` compares them in markdown tables, :mod:`.plot` in a PNG."""
from pathlib import Path
from typing import List, Optional, Sequence

from tools.lib.recipe import Difference, first_difference
from tools.lib.sweep.run import Run

from .plot import plot_sweep
from .runs import RunResult, SweepReportError, load_run, not_a_run
from .tables import order_runs, runs_table, seed_table

__all__ = ['RunResult', 'SweepReportError', 'build_report', 'load_run', 'order_runs',
           'plot_sweep', 'recipe_groups', 'runs_table', 'write_sweep_report']


#: Besides the run's identity and its loss (tools/lib/recipe.py): whether the newest part of
#: a training resumed (``load_from`` in a recipe is what the training started from: runs.py).
RUN_STATE_KEYS = ('resume',)


def recipe_difference(a: RunResult, b: RunResult) -> Optional[Difference]:
    """Where the runs differ outside the loss, the seed, the work dir and
    :data:`RUN_STATE_KEYS`: their recipes (training configs), else the data their final
    tests read or how those ran (:attr:`RunResult.test_settings`); None when they are
    comparable."""
    difference = first_difference(a.recipe, b.recipe, RUN_STATE_KEYS)
    if difference is None and a.test_data != b.test_data:
        return Difference("the final test's test_dataloader.dataset", a.test_data or None,
                          b.test_data or None)
    if difference is None and (test := first_difference(a.test_settings, b.test_settings)):
        return test._replace(key=f"the final test's {test.key}")
    return difference


def recipe_groups(runs: Sequence[RunResult]) -> List[List[RunResult]]:
    """The runs by recipe (:func:`recipe_difference` None within a group), groups in order
    of first appearance."""
    groups: List[List[RunResult]] = []
    for run in runs:
        group = next((g for g in groups if recipe_difference(g[0], run) is None), None)
        if group is None:
            groups.append([run])
        else:
            group.append(run)
    return groups


def _section(runs: List[RunResult], first: Optional[RunResult]) -> str:
    """One recipe's runs table and dataset; after the first (``first``'s), what differs."""
    head = ''
    if first is not None:
        difference = recipe_difference(first, runs[0])
        head = (f'Runs of another recipe, compared only among themselves (they differ from '
                f'{first.name} in {difference.describe(first.name, runs[0].name)}):\n\n')
    dataset = runs[0].dataset or "not named in the runs' configs"
    return f'{head}{runs_table(runs)}\n\nDataset: {dataset}'


def build_report(work_dirs: Sequence[str], baseline: Optional[str] = None,
                 out_png: Optional[str] = None, out_md: Optional[str] = None) -> str:
    """Read the runs, write the optional PNG / markdown, return the tables: one per recipe
    (:func:`recipe_groups`), each naming its dataset. Unfinished runs are listed under
    them; a named baseline among those gives way to the default."""
    skipped = [(d, why) for d in work_dirs if (why := not_a_run(Path(d)))]
    if len(skipped) == len(work_dirs):
        raise SweepReportError('no run folder among the work dirs: ' + '; '.join(
            f'{d}: {why}' for d, why in skipped))
    loaded = [load_run(d) for d in work_dirs if d not in dict(skipped)]
    finished = [run for run in loaded if not run.unfinished]
    left_out = [run for run in loaded if run.unfinished]
    if not finished:
        raise SweepReportError('no run has a test of the checkpoint its training ended with '
                               'yet: ' + '; '.join(f'{r.name}: {r.unfinished}' for r in left_out))
    named = baseline is not None and any(r.matches(baseline) for r in left_out)
    groups = recipe_groups(finished)
    if baseline is not None and not named:  # its group first; none: order_runs says so
        groups.sort(key=lambda g: not any(r.matches(baseline) for r in g))
    ordered = [order_runs(group, None if named or i else baseline)
               for i, group in enumerate(groups)]
    table = '\n\n'.join(_section(runs, ordered[0][0] if i else None)
                         for i, runs in enumerate(ordered))
    if left_out:
        table += (f'\n\nNot in the tables: {len(left_out)} of {len(loaded)} runs have no test '
                  'of the checkpoint their training ended with (unfinished):\n\n'
                  + '\n'.join(f'- {r.name}: {r.unfinished}' for r in left_out))
        if named:
            table += (f'\n\nThe baseline {baseline} is one of them: the deltas are against '
                      f'{ordered[0][0].name}.')
    if skipped:
        table += ('\n\nSkipped, not run folders: '
                  + '; '.join(f'{d} ({why})' for d, why in skipped) + '.')
    for i, runs in enumerate(ordered):
        across_seeds = seed_table(runs)
        if across_seeds and not i:
            table += ('\n\n(Deltas above are against the one baseline run; per-seed '
                      'paired differences are below.)'
                      '\n\nAcross seeds (mean ± sd; Δ against the baseline\'s setting):\n\n'
                      + across_seeds)
        elif across_seeds:
            table += (f'\n\nAcross seeds, the runs of {runs[0].name}\'s recipe (mean ± sd; Δ '
                      'against its setting):\n\n' + across_seeds)
    if len(ordered) > 1 and out_png:
        table += f'\n\nThe plot shows the runs of the first table ({ordered[0][0].name}\'s recipe).'
    try:
        if out_png:
            plot_sweep(ordered[0], out_png)
        if out_md:
            Path(out_md).parent.mkdir(parents=True, exist_ok=True)
            Path(out_md).write_text(table + '\n')
    except OSError as error:
        raise SweepReportError(f'cannot write {error.filename!r}: {error.strerror}') from error
    return table


def write_sweep_report(runs: Sequence[Run], root: Path, baseline: bool, before: str = '',
                       after: str = '') -> None:
    """Write ``root``/sweep.md and sweep.png from the runs' final tests (the first is the
    baseline with ``baseline``); print the table, ``before`` and ``after`` it."""
    table = build_report([str(r.work_dir) for r in runs], str(runs[0].work_dir) if baseline
                         else None, str(root / 'sweep.png'), str(root / 'sweep.md'))
    print(f'{before}\n{table}\n\n[sweep] table: {root / "sweep.md"}, plot: {root / "sweep.png"}'
          + after)
