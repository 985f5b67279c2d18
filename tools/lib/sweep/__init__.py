"""The epsilon sweep behind tools/sweep.py: its plan, one run's folder and steps, the local
and Slurm launchers, and the report."""
