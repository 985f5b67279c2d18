"""The loss benchmark: ``benchmark_loss.py`` (the command line), :mod:`.cases`
(inputs and methods), :mod:`.agreement` (checks against float64),
:mod:`.measure` (time, memory, training step) and :mod:`.report`."""
