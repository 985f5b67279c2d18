"""Weights-only loading of mmengine checkpoints (mmdet_polyloss.engine.checkpoint)."""
import os
import pickle
import subprocess
import sys
import uuid
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmdet_polyloss.engine.checkpoint import (
    NumericArray,
    history_buffer_getattr,
    mmengine_checkpoint_globals,
    numeric_scalar,
    register_mmengine_safe_globals,
)


def _mmengine_like_checkpoint() -> dict:
    """What mmengine's Runner.save_checkpoint writes, minus the model size."""
    # A fresh hub each call (instances are global by name).
    hub = MessageHub.get_instance(f'test_engine_checkpoint_{uuid.uuid4().hex}')
    for step in range(3):
        hub.update_scalar('train/loss', 1.0 / (step + 1))
        hub.update_scalar('train/lr', 0.01)
    hub.update_info('epoch', 1)
    hub.update_info('best_score', np.float64(0.25))  # a numpy scalar
    return dict(
        meta=dict(epoch=1, iter=3, seed=0, cfg='model = dict()',
                  dataset_meta=dict(classes=('a', 'b'),
                                    palette=[(1, 2, 3)])),
        state_dict={'w': torch.ones(2, 2)},
        message_hub=hub.state_dict(),
        optimizer=dict(state={}, param_groups=[dict(lr=0.01, params=[0])]))


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save(_mmengine_like_checkpoint(), path)
    return path


def load_in_fresh_process(path, *imports: str) -> subprocess.CompletedProcess:
    """``torch.load(path)`` (weights-only, torch's default) in a new interpreter
    that imported ``imports`` first."""
    code = ''.join(f'import {name}\n' for name in imports) + (
        'import sys, torch\n'
        "ckpt = torch.load(sys.argv[1])\n"
        "print(ckpt['message_hub']['log_scalars']['train/loss'].mean())\n")
    return subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True,
                          text=True)


def test_importing_the_plugin_lets_torch_load_mmengine_checkpoints(checkpoint):
    """mmengine's failure on torch >= 2.6 (what mmdet's own tools hit), and the
    fix: ``import mmdet_polyloss`` (a config's custom_imports) alone."""
    without = load_in_fresh_process(checkpoint, 'mmengine.logging')
    assert without.returncode != 0 and 'Weights only load failed' in without.stderr
    with_plugin = load_in_fresh_process(checkpoint, 'mmdet_polyloss')
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert float(with_plugin.stdout) == pytest.approx((1.0 + 0.5 + 1.0 / 3) / 3)


def test_safe_globals_load_it_with_weights_only(checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    np.testing.assert_allclose(buf.data[0], [1.0, 0.5, 1.0 / 3])
    assert buf.mean() == pytest.approx((1.0 + 0.5 + 1.0 / 3) / 3)
    assert ckpt['message_hub']['runtime_info']['best_score'] == 0.25
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2, 2))


def test_loaded_history_keeps_working_and_torch_load_is_untouched(checkpoint):
    """Arrays come back as NumericArray (an ndarray); a resumed hub logs on."""
    assert torch.load.__module__ == 'torch.serialization'  # allow-listed, not replaced
    ckpt = torch.load(checkpoint, weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf.data[0], np.ndarray)
    buf.update(0.25)
    np.testing.assert_allclose(buf.data[0], [1.0, 0.5, 1.0 / 3, 0.25])
    assert buf.mean(2) == pytest.approx((1.0 / 3 + 0.25) / 2)
    hub = MessageHub.get_instance(f'resumed_{uuid.uuid4().hex}')
    hub.load_state_dict(ckpt['message_hub'])
    assert hub.get_scalar('train/loss').current() == 0.25


class _RunsCode:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_arbitrary_code_stays_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def _renamed_modules(path, new_path, old: bytes, new: bytes) -> None:
    """Copy a torch checkpoint, renaming a module in its pickle (as another
    numpy version would have written it)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(new_path, 'w') as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith('data.pkl'):
                assert old in data
                data = data.replace(old, new)
            dst.writestr(item, data)


@pytest.mark.parametrize('saved_by', ['numpy 1', 'numpy 2'])
def test_checkpoint_of_the_other_numpy_major_loads(checkpoint, tmp_path, saved_by):
    """numpy 1 pickles arrays as numpy.core.multiarray.*, numpy 2 as numpy._core.*;
    mmdet 3.3 setups run either, so a checkpoint must load under both."""
    names = {'numpy 1': b'numpy.core.multiarray', 'numpy 2': b'numpy._core.multiarray'}
    running = names['numpy 2'] if int(np.__version__.split('.')[0]) >= 2 else names['numpy 1']
    moved = tmp_path / 'moved.pth'
    _renamed_modules(checkpoint, moved, running, names[saved_by])
    ckpt = torch.load(moved, weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    np.testing.assert_allclose(buf.data[0], [1.0, 0.5, 1.0 / 3])
    assert ckpt['message_hub']['runtime_info']['best_score'] == 0.25


def test_object_arrays_stay_refused(tmp_path):
    path = tmp_path / 'objects.pth'
    torch.save({'x': np.array([{'a': 1}], dtype=object)}, path)
    # numpy pickles an object dtype with a state step, which its per-dtype class
    # (not allowed) would have to take: refused there.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


class _ObjectDtype:
    """Pickles as ``np.dtype('O8')`` with no state step (numpy adds one)."""

    def __reduce__(self):
        return (np.dtype, ('O8', False, True))


class _ObjectArray:
    """An object array pickled by hand around an object dtype without state."""

    def __reduce__(self):
        return (np.ndarray, ((0,), 'b'), (1, (2,), _ObjectDtype(), False, [{'a': 1}, 's']))


def test_crafted_object_arrays_stay_refused(tmp_path):
    path = tmp_path / 'crafted.pth'
    torch.save({'x': _ObjectArray()}, path)
    with pytest.raises(pickle.UnpicklingError, match="kind 'O'"):
        torch.load(path)


class _FlaggedFloatDtype:
    """float64 whose pickled state sets numpy's 'holds objects' flag (applied
    to the dtype after it is built, out of the allow-list's sight)."""

    def __reduce__(self):
        return (np.dtype, ('f8', False, True), (3, '<', None, None, None, -1, -1, 1))


class _FlaggedFloatArray:
    def __reduce__(self):
        return (np.ndarray, ((0,), 'b'), (1, (2,), _FlaggedFloatDtype(), False, bytes(16)))


# numpy 2 then reports, while freeing the refused array, that it has no clear
# loop for a float64 flagged as holding objects: it frees nothing as objects.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_dtype_state_that_flags_objects_is_refused_before_its_bytes_are_read(tmp_path):
    """The check runs where the bytes are read with the dtype, after its pickled
    state was applied: the 16 raw bytes never become object pointers."""
    path = tmp_path / 'flagged.pth'
    torch.save({'message_hub': {'x': [_FlaggedFloatArray()]}}, path)
    with pytest.raises(pickle.UnpicklingError, match='object flag True'):
        torch.load(path)


class _FlaggedFloatScalar:
    def __reduce__(self):
        return (multiarray_scalar(), (_FlaggedFloatDtype(), bytes(8)))


def multiarray_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    return scalar


def test_scalar_of_a_flagged_dtype_is_refused(tmp_path):
    path = tmp_path / 'flagged_scalar.pth'
    torch.save({'x': _FlaggedFloatScalar()}, path)
    with pytest.raises(pickle.UnpicklingError, match='numpy scalar'):
        torch.load(path)


@pytest.mark.parametrize('spec', ['O8', 'U3', 'S2', 'V4', [('a', 'f4'), ('b', 'O')],
                                  ('i8', [('a', 'U2')]), ('f8', (2,))])
def test_arrays_and_scalars_refuse_non_numeric_dtypes(spec):
    dtype = np.dtype(spec)
    with pytest.raises(pickle.UnpicklingError, match='only plain numeric dtypes'):
        NumericArray((2,), dtype)
    with pytest.raises(pickle.UnpicklingError, match='only plain numeric dtypes'):
        numeric_scalar(dtype, bytes(dtype.itemsize))


@pytest.mark.parametrize('spec', ['f8', 'f4', 'f2', 'i8', 'u1', 'b1', '>f4'])
def test_arrays_and_scalars_of_numeric_dtypes_load(spec, tmp_path):
    value = np.arange(3).astype(spec)
    path = tmp_path / 'numeric.pth'
    torch.save({'array': value, 'scalar': value[1]}, path)
    loaded = torch.load(path, weights_only=True)
    # As plain pickle gives them back (numpy unpickles arrays in native byte order).
    want = pickle.loads(pickle.dumps({'array': value, 'scalar': value[1]}))
    np.testing.assert_array_equal(loaded['array'], want['array'])
    assert loaded['array'].dtype == want['array'].dtype
    assert loaded['scalar'] == want['scalar'] and loaded['scalar'].dtype == want['scalar'].dtype


def test_getattr_stand_in_resolves_only_statistics():
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='__init__'):
        history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError, match='system'):
        history_buffer_getattr(os, 'system')


def test_registration_is_idempotent():
    before = torch.serialization.get_safe_globals()
    register_mmengine_safe_globals()
    assert torch.serialization.get_safe_globals() == before
    assert all(entry in before for entry in mmengine_checkpoint_globals())
