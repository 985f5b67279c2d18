"""Running mmdet with this package: weights-only loading of mmengine checkpoints."""
from .checkpoint import mmengine_checkpoint_globals, mmengine_safe_globals

__all__ = ['mmengine_checkpoint_globals', 'mmengine_safe_globals']
