"""Put on PYTHONPATH by tools/dev/gpu_check.sh on a GPU machine whose mmcv has no compiled
ops: with ``POLYLOSS_MMCV_SRC`` set (the mmcv sources), every Python process it starts
(the sweep's tools/train.py and tools/test.py too) gets tools/dev/mmcv_cuda_focal.py's
stand-in ``mmcv._ext`` before mmcv is imported. Python imports only the first
``sitecustomize`` on sys.path, so this one runs the next one too (an image's own)."""
import importlib.machinery
import importlib.util
import os
import sys


def _run_the_next_sitecustomize() -> None:
    """The ``sitecustomize`` that this one shadows, from the sys.path entries after it."""
    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    later = sys.path[entries.index(here) + 1:] if here in entries else []
    spec = importlib.machinery.PathFinder.find_spec('sitecustomize', later)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


try:
    _run_the_next_sitecustomize()
except Exception as error:  # as Python does with a failing sitecustomize: say it, go on
    print(f'Error in the sitecustomize after {__file__}: {error!r}', file=sys.stderr)
if os.environ.get('POLYLOSS_MMCV_SRC'):
    from tools.dev import mmcv_cuda_focal

    mmcv_cuda_focal.ensure_ops(os.environ['POLYLOSS_MMCV_SRC'])
