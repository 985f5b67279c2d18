"""Running mmdet with this package: weights-only loading of mmengine checkpoints,
checking that a checkpoint fits a model, and crash-safe checkpoint saving."""
from importlib.util import find_spec

from .checkpoint import mmengine_checkpoint_globals, mmengine_safe_globals
from .weights import (
    WeightsError,
    WeightsMismatch,
    WeightsMismatchError,
    check_weights,
    compare_weights,
    read_checkpoint,
    state_dict_of,
)

__all__ = ['mmengine_checkpoint_globals', 'mmengine_safe_globals', 'WeightsError',
           'WeightsMismatch', 'WeightsMismatchError', 'check_weights', 'compare_weights',
           'read_checkpoint', 'state_dict_of']

if find_spec('mmdet') is not None:  # the hook registers in mmdet's HOOKS
    from .hooks import AtomicCheckpointHook, write_atomically
    __all__ += ['AtomicCheckpointHook', 'write_atomically']
