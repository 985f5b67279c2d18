"""What tools/train.py and tools/test.py import first, in this order: mmengine's known
warnings silenced (before mmengine is imported, so that a one-line error stays one line),
mmdet_polyloss (registers the losses, loads mmengine checkpoints), then the tools' helpers.
The tools put the checkout on ``sys.path`` before importing this."""
from tools.lib import errors

errors.ignore_known_warnings()

import mmdet_polyloss  # noqa: F401
from tools.lib import checkpoints, cli
from tools.lib.dist import destroy_process_group

__all__ = ['checkpoints', 'cli', 'destroy_process_group', 'errors']
