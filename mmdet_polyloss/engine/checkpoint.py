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


def is_plain_numeric(dtype: np.dtype) -> bool:
    """A bool, int, uint or float dtype with no fields, sub-array or object flag."""
    return (dtype.kind in NUMERIC_DTYPE_KINDS and dtype.names is None
            and dtype.subdtype is None and not dtype.hasobject)


def check_numpy_values(obj: Any) -> None:
    """Raise if a loaded checkpoint holds a numpy array or scalar whose dtype is
    not plain numeric.

    :func:`numeric_dtype` vets each dtype as it is built, but torch then applies
    the dtype's pickled state (fields, flags) to it, which no allow-list sees;
    this walks the loaded containers (dicts, lists, tuples and HistoryBuffer's
    attributes) and checks the result.
    """
    from mmengine.logging import HistoryBuffer
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (np.ndarray, np.generic)):
            if not is_plain_numeric(item.dtype):
                raise pickle.UnpicklingError(
                    f'checkpoint holds a numpy value of dtype {item.dtype!r} (fields '
                    f'{item.dtype.names}, object flag {item.dtype.hasobject}); only plain '
                    f'numeric dtypes are allowed')
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, HistoryBuffer):
            stack.extend(vars(item).values())


def numeric_dtype(*args: Any) -> np.dtype:
    """``np.dtype(*args)`` for numeric kinds only.

    Registered under the name ``numpy.dtype`` while unpickling: every array
    and scalar in a checkpoint names its dtype through it, so object, string,
    structured and sub-array dtypes are refused as they are built. No dtype
    of object type can be made, so numpy never reads loaded bytes as object
    pointers; a state applied to a dtype afterwards (fields, flags) is caught
    after loading by :func:`check_numpy_values`.
    """
    dtype = np.dtype(*args)
    if not is_plain_numeric(dtype):
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
def _checked_torch_load() -> Iterator[None]:
    """Within this context ``torch.load`` (which mmengine calls) also runs
    :func:`check_numpy_values` on what it loaded."""
    original = torch.load

    def checked_load(*args: Any, **kwargs: Any) -> Any:
        loaded = original(*args, **kwargs)
        check_numpy_values(loaded)
        return loaded
    torch.load = checked_load
    try:
        yield
    finally:
        torch.load = original


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Within this context, ``torch.load`` accepts mmengine checkpoints.

    Weights-only loading stays on: anything outside
    :func:`mmengine_checkpoint_globals` is still refused, and numpy values
    must have plain numeric dtypes (:func:`check_numpy_values`). On torch <
    2.4 (no allow-list API, and weights-only off by default) this does nothing.
    """
    if not _has_safe_globals_api():
        yield
        return
    if not hasattr(torch.serialization, 'safe_globals'):  # torch 2.4: no context manager
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
        with _checked_torch_load():
            yield
        return
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()), _checked_torch_load():
        yield


def allow_mmengine_checkpoints() -> None:
    """Add mmengine's checkpoint types to torch's process-wide allow-list.

    Prefer :func:`mmengine_safe_globals`, which undoes itself on exit and
    also runs :func:`check_numpy_values` on what is loaded.
    """
    if _has_safe_globals_api():
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
