"""Reading and comparing the results of training runs (the sweep report).

:mod:`.runs` reads work dirs (metrics, the dumped config, as data),
:mod:`.tables` makes the tables, :mod:`.plot` the PNG, :mod:`.sweep` puts
them together. None of it needs mmdet.
"""
from .plot import plot_sweep
from .runs import RunResult, SweepReportError, load_run, parse_dumped_config
from .sweep import build_report
from .tables import order_runs, runs_table, seed_table

__all__ = [
    'RunResult', 'SweepReportError', 'build_report', 'load_run', 'order_runs',
    'parse_dumped_config', 'plot_sweep', 'runs_table', 'seed_table'
]
