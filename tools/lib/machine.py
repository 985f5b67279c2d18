#!/usr/bin/env python
"""The machine a CPU result comes from: CPU model, the instruction set torch's CPU kernels
use, and torch's thread count. Training on CPU is deterministic for one such machine, but
the same seed trains to other numbers under another instruction set or thread count
(docs/reproduction.md, "Same seed, another CPU"), so results state it.

    python tools/lib/machine.py    # prints e.g. "AMD EPYC, torch CPU kernels AVX512, 2 threads"
"""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith(('model name', 'hardware')):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def describe() -> str:
    """``<CPU model>, torch CPU kernels <ISA>, <N> threads``."""
    import torch
    threads = torch.get_num_threads()
    return (f'{cpu_model()}, torch CPU kernels {torch.backends.cpu.get_cpu_capability()}, '
            f'{threads} thread{"" if threads == 1 else "s"}')


if __name__ == '__main__':
    print(describe())
