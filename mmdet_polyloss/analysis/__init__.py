"""Reading and comparing the results of training runs."""
from .sweep import (RunResult, SweepReportError, build_report, load_run,
                    markdown_table, order_runs, plot_sweep)

__all__ = [
    'RunResult', 'SweepReportError', 'build_report', 'load_run',
    'markdown_table', 'order_runs', 'plot_sweep'
]
