"""Put on PYTHONPATH by tools/dev/gpu_check.sh on a GPU machine whose mmcv has no compiled
ops: with ``POLYLOSS_MMCV_SRC`` set (the mmcv sources), every Python process it starts
(the sweep's tools/train.py and tools/test.py too) gets tools/dev/mmcv_cuda_focal.py's
stand-in ``mmcv._ext`` before mmcv is imported. Python imports one ``sitecustomize``: an
image with its own would need this added to it."""
import os

if os.environ.get('POLYLOSS_MMCV_SRC'):
    from tools.dev import mmcv_cuda_focal

    mmcv_cuda_focal.ensure_ops(os.environ['POLYLOSS_MMCV_SRC'])
