"""Load mmengine checkpoints with torch's weights-only unpickler.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which only
rebuilds tensors, containers and plain Python scalars. An mmengine 0.10
checkpoint also holds the training state of its ``MessageHub``: a
:class:`mmengine.logging.HistoryBuffer` per logged scalar, each wrapping numpy
arrays (and numpy scalars) and a dict of its statistics methods, which pickle
as ``getattr(HistoryBuffer, 'min')`` and so on. Loading one for ``--resume``
or testing fails with "Weights only load failed".

:func:`register_mmengine_safe_globals`, called when ``mmdet_polyloss`` is
imported (so also through a config's ``custom_imports``), keeps weights-only
loading on and allow-lists exactly those types process-wide, through torch's
own ``torch.serialization.add_safe_globals``; ``torch.load`` itself is left
alone. mmengine's ``--resume``, ``load_from`` and testing then work in any
tool, mmdet's own ``tools/train.py`` and ``tools/test.py`` included. Passing
``weights_only=False`` instead would execute arbitrary pickled code from any
file a user points at. Two names are stand-ins:

- ``builtins.getattr`` resolves only HistoryBuffer's statistics methods;
- ``numpy.ndarray`` is :class:`NumericArray`, and numpy's ``scalar`` is
  :func:`numeric_scalar`: the two places where a pickle's raw bytes are read
  with a dtype. Both accept plain numeric dtypes only, checked when the bytes
  are read, i.e. after a pickled dtype state (which can add fields or numpy's
  "holds objects" flag to a float64) has been applied. So no loaded bytes
  are ever read as object pointers.

numpy's array helpers are accepted under both their numpy 1 (``numpy.core``)
and numpy 2 (``numpy._core``) names, so a checkpoint saved with either numpy
loads with the other.

This module can go once mmengine loads its own checkpoints under weights-only
loading: open-mmlab/mmengine#1655 reports the failure (closed without a fix in
0.10.7); the open PR open-mmlab/mmengine#1650 would pass ``weights_only=False``
instead, which would not make this module redundant but unsafe to drop.
"""
from __future__ import annotations

import pickle
from typing import Any, List

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core import multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray  # type: ignore[no-redef]

#: numpy dtype kinds a checkpoint may hold: bool, signed and unsigned integers, floats.
NUMERIC_DTYPE_KINDS = 'biuf'
_NUMERIC_DTYPE_NAMES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                        'uint32', 'uint64', 'float16', 'float32', 'float64')
_NUMPY_MODULES = ('numpy.core', 'numpy._core')


def is_plain_numeric(dtype: np.dtype) -> bool:
    """A bool, int, uint or float dtype with no fields, sub-array or object flag."""
    return (dtype.kind in NUMERIC_DTYPE_KINDS and dtype.names is None
            and dtype.subdtype is None and not dtype.hasobject)


def require_plain_numeric(dtype: object, what: str) -> None:
    """Raise ``pickle.UnpicklingError`` unless ``dtype`` is a plain numeric dtype."""
    if not isinstance(dtype, np.dtype) or not is_plain_numeric(dtype):
        detail = (f'{dtype!r} (kind {dtype.kind!r}, fields {dtype.names}, object flag '
                  f'{dtype.hasobject})' if isinstance(dtype, np.dtype) else repr(dtype))
        raise pickle.UnpicklingError(
            f'checkpoint asks for a numpy {what} of dtype {detail}; only plain numeric '
            f'dtypes (kinds {NUMERIC_DTYPE_KINDS!r}: bool, int, uint, float) are allowed')


class NumericArray(np.ndarray):
    """Loaded in place of ``numpy.ndarray``: an array whose construction and
    unpickling accept plain numeric dtypes only."""

    def __new__(cls, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any):
        require_plain_numeric(np.dtype(dtype), 'array')
        return super().__new__(cls, shape, dtype, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        dtypes = [item for item in state if isinstance(item, np.dtype)] \
            if isinstance(state, tuple) else []
        require_plain_numeric(dtypes[0] if dtypes else state, 'array')
        super().__setstate__(state)


def numeric_scalar(dtype: Any, *args: Any) -> Any:
    """numpy's pickled-scalar constructor, for plain numeric dtypes only."""
    require_plain_numeric(dtype, 'scalar')
    return multiarray.scalar(dtype, *args)


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

    Entries are objects, or ``(object, 'module.name')`` where the pickle's
    name resolves to a stand-in (torch's ``safe_globals`` format).
    """
    from mmengine.logging import HistoryBuffer
    entries: List[Any] = [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'),
                          (NumericArray, 'numpy.ndarray'), np.dtype]
    for module in _NUMPY_MODULES:
        entries += [(multiarray._reconstruct, f'{module}.multiarray._reconstruct'),
                    (numeric_scalar, f'{module}.multiarray.scalar')]
    # A pickled dtype's state is applied to an instance of its per-dtype class
    # (numpy >= 1.25), which must be allowed for that.
    for name in _NUMERIC_DTYPE_NAMES:
        dtype_cls = type(np.dtype(name))
        if dtype_cls is not np.dtype and dtype_cls not in entries:
            entries.append(dtype_cls)
    return entries


def register_mmengine_safe_globals() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for torch's weights-only
    unpickler in this process; anything else stays refused. Idempotent."""
    registered = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(
        [entry for entry in mmengine_checkpoint_globals() if entry not in registered])
