"""tools/lib/machine.py: the machine line that results carry."""
import os
import subprocess
import sys

import torch

from tools.lib import machine

from train_helpers import ROOT


def test_describe_names_the_cpu_the_kernels_and_the_threads():
    line = machine.describe()
    assert line.startswith(machine.cpu_model() + ', ')
    assert f'torch CPU kernels {torch.backends.cpu.get_cpu_capability()}' in line
    threads = torch.get_num_threads()
    assert line.endswith(f', {threads} thread' + ('' if threads == 1 else 's'))


def test_the_line_follows_the_settings_that_change_results():
    """What a user pins (threads; the kernels' instruction set, where the CPU has more
    than AVX2) is what the line reports."""
    env = dict(os.environ, OMP_NUM_THREADS='1', ATEN_CPU_CAPABILITY='default')
    line = subprocess.run([sys.executable, str(ROOT / 'tools/lib/machine.py')], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert line.endswith('torch CPU kernels DEFAULT, 1 thread'), line
