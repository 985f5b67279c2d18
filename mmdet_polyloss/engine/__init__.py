"""Running mmdet with this package: weights-only loading of mmengine checkpoints."""
from importlib.util import find_spec

from .checkpoint import mmengine_checkpoint_globals, mmengine_safe_globals

__all__ = ['mmengine_checkpoint_globals', 'mmengine_safe_globals']

if find_spec('mmdet') is not None:  # the hook registers in mmdet's HOOKS
    from .hooks import AtomicCheckpointHook, write_atomically
    __all__ += ['AtomicCheckpointHook', 'write_atomically']
