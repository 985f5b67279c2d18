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
statistics methods takes its name, and ``numpy.dtype`` is a stand-in that
builds numeric dtypes only. numpy's array helpers are accepted under both
their numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names, so a
checkpoint saved with either numpy loads with the other.
"""
from __future__ import annotations

import contextlib
import pickle
from typing import Any, Iterator, List

import numpy as np
import torch


def _numpy_reconstruct_globals() -> List[Any]:
    """numpy functions that pickles of arrays and scalars call, under the
    module names of numpy 1 and numpy 2 (a pickle names the one it was saved with)."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return [(function, f'{module}.multiarray.{function.__name__}')
            for function in (multiarray._reconstruct, multiarray.scalar)
            for module in ('numpy.core', 'numpy._core')]


#: numpy dtype kinds a checkpoint may hold: bool, signed and unsigned integers, floats.
NUMERIC_DTYPE_KINDS = 'biuf'
_NUMERIC_DTYPE_NAMES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                        'uint32', 'uint64', 'float16', 'float32', 'float64')


def numeric_dtype(*args: Any) -> np.dtype:
    """``np.dtype(*args)`` for numeric kinds only.

    Registered under the name ``numpy.dtype`` while unpickling: every array
    and scalar in a checkpoint names its dtype through it, so object,
    string and structured arrays are refused however the pickle is written.
    """
    dtype = np.dtype(*args)
    if dtype.kind not in NUMERIC_DTYPE_KINDS or dtype.hasobject:
        raise pickle.UnpicklingError(
            f'checkpoint asks for numpy dtype {dtype!r} (kind {dtype.kind!r}); only the '
            f'numeric kinds {NUMERIC_DTYPE_KINDS!r} (bool, int, uint, float) are allowed')
    return dtype


def _numpy_dtype_globals() -> List[Any]:
    """The ``numpy.dtype`` stand-in and, on numpy >= 1.25, the per-dtype
    classes of the numeric dtypes (a pickled dtype's state is applied to one)."""
    types: List[Any] = [(numeric_dtype, 'numpy.dtype')]
    for name in _NUMERIC_DTYPE_NAMES:
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
