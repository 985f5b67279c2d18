"""Running mmdet with this package: checkpoint loading, CPU torchrun, CLI."""
from .checkpoint import (allow_mmengine_checkpoints,
                         mmengine_checkpoint_globals, mmengine_safe_globals)

__all__ = [
    'allow_mmengine_checkpoints', 'mmengine_checkpoint_globals',
    'mmengine_safe_globals'
]
