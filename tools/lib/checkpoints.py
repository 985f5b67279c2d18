"""Checkpoints the tools are given: readable, holding weights, and fitting the model.

mmengine loads ``load_from`` and a tested checkpoint with ``strict=False``: a
checkpoint of another model (other classes, another head) only logs a warning
and the run trains or evaluates partly random weights. The tools check the
weights first with mmengine's own loader and ``strict=True`` (missing,
unexpected and mis-shaped keys), and stop with one line naming the file and the
first keys; ``--allow-partial-weights`` leaves mmengine's warning behaviour.
A file torch cannot read (empty, cut short, text) stops them the same way,
before any work, instead of a traceback from inside the runner.
"""
from __future__ import annotations

import os.path as osp
import pickle
import re
from typing import Any, Dict, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, find_latest_checkpoint, load_state_dict

from tools.lib.errors import UserError, one_line

#: How a file written by ``torch.save`` starts: a zip archive, or (legacy) a pickle.
TORCH_SAVE_MAGIC = (b'PK\x03\x04', b'\x80')
#: Keys named in a mismatch message before "(N in all)".
KEYS_SHOWN = 3


def read_checkpoint(path: str) -> Any:
    """What ``torch.load`` (weights-only, as mmengine calls it) reads from ``path``.

    Raises:
        UserError: no such file, an empty or foreign file, or one torch cannot read.
    """
    if '://' not in path:
        if not osp.isfile(path):
            raise UserError(f'no such checkpoint: {path}')
        with open(path, 'rb') as f:
            head = f.read(8)
        if not head:
            raise UserError(f'checkpoint {path} is empty')
        if not head.startswith(TORCH_SAVE_MAGIC):
            raise UserError(f'checkpoint {path} is not a file torch.save wrote (it starts with '
                            f'{head!r}, not a zip archive or a pickle)')
    try:
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except pickle.UnpicklingError as error:
        refused = re.search(r'WeightsUnpickler error: (.*?)\. ', str(error))
        reason = (f'the weights-only unpickler refuses it ({refused.group(1)})' if refused
                  else one_line(error))
        raise UserError(f'checkpoint {path} cannot be read: {reason}') from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first_sentence = one_line(error).split('. ')[0]
        raise UserError(f'checkpoint {path} cannot be read: {first_sentence}') from error


def weights_of(checkpoint: Any, path: str) -> Dict[str, torch.Tensor]:
    """The state dict in ``checkpoint`` (its ``state_dict`` entry, or itself),
    with mmengine's ``module.`` prefix removed."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) \
        else checkpoint
    if not isinstance(state, dict):
        raise UserError(f'checkpoint {path} holds a {type(state).__name__}, not model weights '
                        '(a state dict, or a dict with one as state_dict)')
    weights = {re.sub(r'^module\.', '', str(key)): value for key, value in state.items()
               if isinstance(value, torch.Tensor)}
    if not weights:
        raise UserError(f'checkpoint {path} holds no weights: no tensors in it '
                        f'(keys: {", ".join(map(str, state))})')
    return weights


def summarize_mismatch(message: str) -> str:
    """mmengine's strict-load message in one line, each list cut to its first keys."""
    parts = []
    for line in message.splitlines()[1:]:  # the first says "do not match exactly"
        label, _, keys = line.partition(': ')
        names = [key for key in keys.split(', ') if key] if 'keys' in label or 'key in' in label \
            else []
        if names:
            more = f' ({len(names)} in all)' if len(names) > KEYS_SHOWN else ''
            parts.append(f'{label}: {", ".join(names[:KEYS_SHOWN])}{more}')
        elif line.strip():
            parts.append(line.strip())
    sizes = [p for p in parts if p.startswith('size mismatch')]
    rest = [p for p in parts if not p.startswith('size mismatch')]
    more = f' ({len(sizes)} in all)' if len(sizes) > KEYS_SHOWN else ''
    return '; '.join(rest + [s.rstrip('.') for s in sizes[:KEYS_SHOWN]]) + more


def check_weights_fit(model: torch.nn.Module, path: str, allow_partial: bool) -> None:
    """Load ``path``'s weights into ``model`` with mmengine's loader, strictly
    unless ``allow_partial``; a mismatch is a :class:`UserError`.

    The runner loads the checkpoint again as usual afterwards (its hooks see it).
    """
    weights = weights_of(read_checkpoint(path), path)
    if allow_partial:
        return
    try:
        load_state_dict(model.module if is_model_wrapper(model) else model, weights,
                        strict=True)
    except RuntimeError as error:
        raise UserError(f'checkpoint {path} does not fit the model: '
                        f'{summarize_mismatch(str(error))}; --allow-partial-weights loads it '
                        'anyway') from error


def check_resume_checkpoint(work_dir: str, checkpoint: Optional[str]) -> None:
    """--resume: the checkpoint it continues from (the one given, else the work
    dir's latest) must be readable; mmengine would fail deep inside training."""
    checkpoint = checkpoint or find_latest_checkpoint(work_dir)
    if checkpoint is None:
        return  # nothing to resume: mmengine trains from scratch (and says so)
    try:
        read_checkpoint(checkpoint)
    except UserError as error:
        raise UserError(f'{str(error).rstrip(".")}; --resume cannot continue from it (give '
                        'another checkpoint, or train without --resume)') from error
