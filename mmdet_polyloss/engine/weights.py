"""Strict model weights: refuse a checkpoint that does not fit the model.

mmengine 0.10's ``load_checkpoint`` (behind a config's ``load_from`` and
mmdet's ``tools/test.py``) loads whatever keys match and only logs a warning
for the rest: a checkpoint without weights, or one for another head, leaves
the model with its random initial weights, and the test still prints a full
table of metrics. :func:`check_weights` reads the checkpoint as mmengine
does and raises :class:`WeightsError` unless every weight of the model is in
it, with the same shape, and it holds nothing else::

    from mmdet_polyloss.engine.weights import check_weights
    check_weights(runner.model, 'epoch_12.pth')  # before runner.test()

What counts as a fit follows mmengine's loader: the weights are the
checkpoint's ``state_dict`` entry, or the checkpoint itself when it has none
(a bare state dict; a ``meta`` entry next to the weights is not a weight);
``module.`` prefixes (DataParallel, DDP) are stripped; model wrappers and
test-time augmentation wrappers are looked through; a missing BatchNorm
``num_batches_tracked`` is not counted; and each module's own loading code
runs, so key renames for old checkpoints (mmdet's FCOS heads, RPN weights in
a single-stage detector) are honoured. That code runs on a copy of the model
whose tensors live on the ``meta`` device, so the model itself is left
untouched and no weights are copied.

The checkpoint is read with torch's weights-only unpickler and the
allow-list of :func:`mmdet_polyloss.engine.checkpoint.mmengine_safe_globals`.
"""
from __future__ import annotations

import copy
import os.path as osp
import re
import warnings
from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from typing import Any, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from .checkpoint import mmengine_safe_globals

#: mmengine's default ``revise_keys``: strip the ``module.`` of (Distributed)DataParallel.
DEFAULT_REVISE_KEYS: Tuple[Tuple[str, str], ...] = ((r'^module\.', ''),)

#: What load-state-dict post hooks receive (as torch's and mmengine's loaders pass it).
IncompatibleKeys = namedtuple('IncompatibleKeys', ['missing_keys', 'unexpected_keys'])


class WeightsError(ValueError):
    """A checkpoint that cannot be read, or holds no model weights."""


class WeightsMismatchError(WeightsError):
    """A checkpoint whose weights do not fit the model; ``mismatch`` says how."""

    def __init__(self, message: str, mismatch: 'WeightsMismatch') -> None:
        super().__init__(message)
        self.mismatch = mismatch


@dataclass(frozen=True)
class WeightsMismatch:
    """How a state dict differs from a model's weights (empty: it fits)."""

    #: Model keys the checkpoint lacks.
    missing: Tuple[str, ...] = ()
    #: Checkpoint keys the model does not have.
    unexpected: Tuple[str, ...] = ()
    #: ``(key, checkpoint shape or type, model shape)`` of the keys in both that differ.
    mis_shaped: Tuple[Tuple[str, str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)

    def describe(self, limit: int = 3) -> str:
        """One line: each kind of difference, with its first ``limit`` keys."""
        shaped = [f'{key}: {theirs} in the checkpoint, {ours} in the model'
                  for key, theirs, ours in self.mis_shaped]
        parts = [_count(self.missing, 'missing key', limit),
                 _count(self.unexpected, 'unexpected key', limit),
                 _count(shaped, 'key with another shape', limit, plural='keys with another shape')]
        return ', '.join(part for part in parts if part) or 'it fits'


def _count(items: Sequence[str], noun: str, limit: int, plural: str = '') -> str:
    """'2 missing keys (a, b)', '5 ... (a, b, c and 2 more)', '' for none."""
    if not items:
        return ''
    shown = ', '.join(items[:limit])
    more = f' and {len(items) - limit} more' if len(items) > limit else ''
    name = noun if len(items) == 1 else (plural or noun + 's')
    return f'{len(items)} {name} ({shown}{more})'


def read_checkpoint(filename: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint file or URL as mmengine's ``Runner`` does, weights only.

    Raises:
        WeightsError: the file does not exist, or torch cannot read it.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    _check_file_start(filename)
    try:
        with mmengine_safe_globals(), warnings.catch_warnings():
            # A plain pickle (not torch.save) has another protocol; it fails below anyway.
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return CheckpointLoader.load_checkpoint(filename, map_location=map_location,
                                                    logger='silent')
    except FileNotFoundError as error:
        raise WeightsError(f'no such checkpoint: {filename}') from error
    except Exception as error:  # torch.load: KeyError, EOFError, RuntimeError, ... by file
        raise WeightsError(f'checkpoint {filename} cannot be read: {_load_failure(error)}') \
            from error


def _check_file_start(filename: str) -> None:
    """A local file must start as torch.save's files do: a zip archive (``PK``),
    or a pickle (``\\x80``) in the legacy format."""
    if '://' in filename or not osp.isfile(filename):
        return  # URLs, and missing files, are mmengine's loader's to report
    with open(filename, 'rb') as f:
        start = f.read(8)
    if not start:
        raise WeightsError(f'checkpoint {filename} is empty')
    if not start.startswith((b'PK', b'\x80')):
        raise WeightsError(f'checkpoint {filename} is not a file torch.save wrote (it starts '
                           f'with {start!r}, not a zip archive or a pickle)')


def _load_failure(error: Exception) -> str:
    """The gist of a ``torch.load`` error, in one line."""
    text = str(error)
    refused = re.search(r'WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)', text, re.S)
    if refused:
        return f'the weights-only unpickler refuses it ({" ".join(refused.group(1).split())})'
    first = re.split(r'(?<=\.)\s', text.strip(), maxsplit=1)[0]
    if isinstance(error, (KeyError, EOFError)) or not first:
        return f'not a file torch.save wrote ({type(error).__name__}{": " if first else ""}' \
               f'{first})'
    return ' '.join(first.split())


def state_dict_of(checkpoint: Any, filename: str = 'the checkpoint') -> 'OrderedDict[str, Any]':
    """The weights in a loaded checkpoint, as mmengine takes them.

    ``checkpoint['state_dict']`` if present, else the checkpoint itself (less
    a ``meta`` entry); torch's ``_metadata`` (module versions) is kept.

    Raises:
        WeightsError: the checkpoint is not a dict, or holds no tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f'checkpoint {filename} holds a {type(checkpoint).__name__}, not '
                           f'model weights (a state dict, or a dict with one as state_dict)')
    where = 'its state_dict' if 'state_dict' in checkpoint else 'it'
    weights = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    if not isinstance(weights, Mapping):
        raise WeightsError(f'checkpoint {filename}: state_dict is a {type(weights).__name__}, '
                           f'not a dict of tensors')
    state = OrderedDict((key, value) for key, value in weights.items()
                        if not (weights is checkpoint and key == 'meta'))
    state._metadata = getattr(weights, '_metadata', OrderedDict())  # type: ignore[attr-defined]
    if not any(torch.is_tensor(value) for value in state.values()):
        keys = ', '.join(map(str, list(weights)[:5])) or 'none'
        raise WeightsError(f'checkpoint {filename} holds no weights: no tensors in {where} '
                           f'(keys: {keys})')
    return state


def compare_weights(model: nn.Module, state_dict: Mapping[str, Any],
                    revise_keys: Sequence[Tuple[str, str]] = DEFAULT_REVISE_KEYS
                    ) -> WeightsMismatch:
    """How ``state_dict`` differs from ``model``'s weights, as mmengine would load it."""
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    state = OrderedDict(state_dict)
    for pattern, replacement in revise_keys:
        state = OrderedDict((re.sub(pattern, replacement, key), value)
                            for key, value in state.items())
    missing: List[str] = []
    unexpected: List[str] = []
    mis_shaped: List[Tuple[str, str, str]] = []
    with warnings.catch_warnings():  # copying into meta tensors: a no-op torch warns about
        warnings.simplefilter('ignore')
        _visit(_meta_copy(_unwrap(model)), state, '', metadata, missing, unexpected,
               mis_shaped)
    return WeightsMismatch(
        missing=tuple(key for key in missing if 'num_batches_tracked' not in key),
        unexpected=tuple(unexpected), mis_shaped=tuple(mis_shaped))


def check_weights(model: nn.Module, filename: str, allow_partial: bool = False,
                  revise_keys: Sequence[Tuple[str, str]] = DEFAULT_REVISE_KEYS
                  ) -> WeightsMismatch:
    """Read ``filename`` and check that its weights fit ``model`` exactly.

    With ``allow_partial``, a checkpoint that fits only in part passes (the
    mismatch is returned); one that cannot be read or holds no weights never
    does. The model is not changed.

    Raises:
        WeightsError: unreadable, or no weights.
        WeightsMismatchError: missing, unexpected or mis-shaped keys.
    """
    state = state_dict_of(read_checkpoint(filename), filename)
    mismatch = compare_weights(model, state, revise_keys)
    if mismatch and not allow_partial:
        raise WeightsMismatchError(
            f'checkpoint {filename} does not fit the model: {mismatch.describe()}', mismatch)
    return mismatch


def _unwrap(module: nn.Module) -> nn.Module:
    """The model inside a model wrapper (DDP, ...) or a test-time augmentation model."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    if is_model_wrapper(module) or isinstance(module, BaseTTAModel):
        return module.module
    return module


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are meta tensors."""
    memo: dict = {}
    for module in model.modules():
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is None or id(tensor) in memo or nn.parameter.is_lazy(tensor):
                continue
            meta = torch.empty_like(tensor, device='meta')
            memo[id(tensor)] = (nn.Parameter(meta, requires_grad=tensor.requires_grad)
                                if isinstance(tensor, nn.Parameter) else meta)
    return copy.deepcopy(model, memo)


def _visit(module: nn.Module, state: 'OrderedDict[str, Any]', prefix: str, metadata: Mapping,
           missing: List[str], unexpected: List[str],
           mis_shaped: List[Tuple[str, str, str]]) -> None:
    """Load ``state`` into ``module`` and its children as mmengine's
    ``load_state_dict`` walks them, recording what does not fit."""
    module = _unwrap(module)
    local_metadata = metadata.get(prefix[:-1], {})
    errors: List[str] = []
    # strict=True: report unexpected keys (mmengine's loader asks for them too).
    module._load_from_state_dict(state, prefix, local_metadata, True, missing, unexpected,
                                 errors)
    own = [*module._parameters.items(),
           *((name, buffer) for name, buffer in module._buffers.items()
             if name not in module._non_persistent_buffers_set)]
    for name, tensor in own:
        key = prefix + name
        if tensor is not None and key in state and not nn.parameter.is_lazy(tensor):
            theirs = state[key]
            if not _fits(theirs, tensor):
                found = (list(theirs.shape) if torch.overrides.is_tensor_like(theirs)
                         else type(theirs).__name__)
                mis_shaped.append((key, str(found), str(list(tensor.shape))))
    for name, child in module._modules.items():
        if child is not None:
            child_prefix = f'{prefix}{name}.'
            _visit(child, OrderedDict((key, value) for key, value in state.items()
                                      if key.startswith(child_prefix)),
                   child_prefix, metadata, missing, unexpected, mis_shaped)
    keys = IncompatibleKeys(missing, unexpected)
    for hook in module._load_state_dict_post_hooks.values():
        hook(module, keys)


def _fits(value: Any, tensor: torch.Tensor) -> bool:
    """Whether torch would copy ``value`` into ``tensor`` (a 1-element vector
    fits a scalar, as torch allows for checkpoints of PyTorch 0.3)."""
    if not torch.overrides.is_tensor_like(value):
        return False
    shape = value.shape
    if tensor.dim() == 0 and tuple(shape) == (1,):
        return True
    return shape == tensor.shape
