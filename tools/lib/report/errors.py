"""The report's one error type (tools/sweep_report.py prints it as one line)."""


class SweepReportError(ValueError):
    """Bad input to the sweep report; the message names the culprit."""
