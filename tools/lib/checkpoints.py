"""Checkpoints given to the tools: readable, holding weights, and fitting the model.

mmengine loads weights with ``strict=False``: another model's (other classes, another head)
only log a warning and the run uses partly random weights. The tools load them first with
``strict=True`` and stop with one line naming the first mismatched keys, unless
``--allow-partial-weights``; a file torch cannot read stops them the same way."""
import os.path as osp
import pickle
import re
from typing import Any, Dict, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, find_latest_checkpoint, load_state_dict

from tools.lib.errors import UserError, one_line

#: Keys named in a mismatch message before "(N in all)".
KEYS_SHOWN = 3


def read_checkpoint(path: str) -> Any:
    """What mmengine's loader reads from ``path``; a file it cannot read: :class:`UserError`."""
    if '://' not in path:
        if not osp.isfile(path):
            raise UserError(f'no such checkpoint: {path}')
        with open(path, 'rb') as f:
            head = f.read(8)
        if not head:
            raise UserError(f'checkpoint {path} is empty')
        if not head.startswith((b'PK\x03\x04', b'\x80')):  # torch.save's zip, or a pickle
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
    """The tensors of ``checkpoint``'s state_dict (or itself), less the ``module.`` prefix."""
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


def check_weights_fit(model: torch.nn.Module, path: str, allow_partial: bool) -> None:
    """``path``'s weights load into ``model`` strictly (the runner then loads them as usual)."""
    weights = weights_of(read_checkpoint(path), path)
    if allow_partial:
        return
    try:
        load_state_dict(model.module if is_model_wrapper(model) else model, weights,
                        strict=True)
    except RuntimeError as error:
        # mmengine's message after its header line, in one line, each list cut short.
        parts = []
        for line in str(error).splitlines()[1:]:
            label, _, keys = line.partition(': ')
            names = [key for key in keys.split(', ') if key] \
                if 'keys' in label or 'key in' in label else []
            if names:
                more = f' ({len(names)} in all)' if len(names) > KEYS_SHOWN else ''
                parts.append(f'{label}: {", ".join(names[:KEYS_SHOWN])}{more}')
            elif line.strip():
                parts.append(line.strip())
        sizes = [p.rstrip('.') for p in parts if p.startswith('size mismatch')]
        rest = [p for p in parts if not p.startswith('size mismatch')]
        more = f' ({len(sizes)} in all)' if len(sizes) > KEYS_SHOWN else ''
        raise UserError(f'checkpoint {path} does not fit the model: '
                        f'{"; ".join(rest + sizes[:KEYS_SHOWN])}{more}; '
                        '--allow-partial-weights loads it anyway') from error


def check_resume_checkpoint(work_dir: str, checkpoint: Optional[str]) -> None:
    """The checkpoint --resume continues from (given, else the work dir's latest) is readable."""
    checkpoint = checkpoint or find_latest_checkpoint(work_dir)
    if checkpoint is None:
        return  # nothing to resume: mmengine trains from scratch (and says so)
    try:
        read_checkpoint(checkpoint)
    except UserError as error:
        raise UserError(f'{str(error).rstrip(".")}; --resume cannot continue from it (give '
                        'another checkpoint, or train without --resume)') from error
