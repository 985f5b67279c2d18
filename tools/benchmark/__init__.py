"""The loss benchmark: benchmark_loss.py, :mod:`.cases` (inputs, methods, float64 checks),
:mod:`.measure` (time, memory, training step, report)."""
