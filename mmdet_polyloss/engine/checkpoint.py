"""Load mmengine checkpoints with torch's weights-only unpickler.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which only
rebuilds tensors, containers and plain Python scalars. An mmengine 0.10
checkpoint also holds the training state of its ``MessageHub``: a
:class:`mmengine.logging.HistoryBuffer` per logged scalar, each wrapping numpy
arrays (and numpy scalars) and a dict of its statistics methods, which pickle
as ``getattr(HistoryBuffer, 'min')`` and so on. Loading one for ``--resume``
or testing fails with "Weights only load failed".

The fix here keeps weights-only loading on and allow-lists exactly those
types, rather than passing ``weights_only=False`` (which would execute
arbitrary pickled code from any file a user points at). ``builtins.getattr``
is not allowed as such: a stand-in that only resolves HistoryBuffer's
statistics methods takes its name.
"""
from __future__ import annotations

import contextlib
import pickle
from typing import Any, Iterator, List

import numpy as np
import torch


def _numpy_reconstruct_globals() -> List[Any]:
    """numpy functions that pickles of arrays and scalars call."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return [multiarray._reconstruct, multiarray.scalar]


def _numpy_dtype_globals() -> List[Any]:
    """``np.dtype`` and, on numpy >= 1.25, its per-dtype classes.

    Only the numeric dtypes: object arrays stay refused.
    """
    types: List[Any] = [np.dtype]
    for name in ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                 'uint32', 'uint64', 'float16', 'float32', 'float64'):
        dtype_cls = type(np.dtype(name))
        if dtype_cls is not np.dtype and dtype_cls not in types:
            types.append(dtype_cls)
    return types


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to HistoryBuffer's statistics methods.

    Registered under the name ``builtins.getattr`` while unpickling, so a
    checkpoint can refer to ``HistoryBuffer.min`` etc. and nothing else.
    """
    from mmengine.logging import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean'}
    allowed.update(HistoryBuffer._statistics_methods)
    if obj is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({obj!r}, {name!r}); only '
            f'HistoryBuffer statistics methods {sorted(allowed)} are allowed')
    return getattr(obj, name)


def mmengine_checkpoint_globals() -> List[Any]:
    """The non-tensor globals an mmengine checkpoint needs to unpickle.

    Entries are objects, or ``(object, 'module.name')`` where the pickle
    names the object differently (torch's ``add_safe_globals`` format).
    """
    from mmengine.logging import HistoryBuffer
    return ([HistoryBuffer, np.ndarray,
             (history_buffer_getattr, 'builtins.getattr')] +
            _numpy_reconstruct_globals() + _numpy_dtype_globals())


def _has_safe_globals_api() -> bool:
    return hasattr(torch.serialization, 'add_safe_globals')


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Within this context, ``torch.load`` accepts mmengine checkpoints.

    Weights-only loading stays on: anything outside
    :func:`mmengine_checkpoint_globals` is still refused. On torch < 2.4
    (no allow-list API, and weights-only off by default) this does nothing.
    """
    if not _has_safe_globals_api():
        yield
        return
    if not hasattr(torch.serialization, 'safe_globals'):  # torch 2.4: no context manager
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
        yield
        return
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield


def allow_mmengine_checkpoints() -> None:
    """Add mmengine's checkpoint types to torch's process-wide allow-list.

    Prefer :func:`mmengine_safe_globals`, which undoes itself on exit.
    """
    if _has_safe_globals_api():
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
