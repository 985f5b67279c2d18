"""Checkpoints: the crash-safe checkpoint hook (``HOOKS`` registry) and the
allow-list that lets torch's weights-only unpickler read mmengine checkpoints."""
from .checkpoint import mmengine_checkpoint_globals, register_mmengine_safe_globals
from .hooks import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook', 'mmengine_checkpoint_globals',
           'register_mmengine_safe_globals']
