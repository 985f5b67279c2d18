"""The loss benchmark: benchmark_loss.py, cases (inputs, methods, checks), measure."""
