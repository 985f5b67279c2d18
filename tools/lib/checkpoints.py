"""Checkpoints given to the tools: readable, holding weights, fitting the model. mmengine loads
weights with ``strict=False`` (another model's only log a warning); the tools first load them
strictly and stop with one line naming the first mismatched keys, unless --allow-partial-weights."""
import os.path as osp
import re
from typing import Any, Dict, Mapping, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, find_latest_checkpoint, load_state_dict

from tools.lib.errors import UserError, one_line
from tools.lib.recipe import loss_difference, parse_config_text

KEYS_SHOWN = 3  # keys named in a mismatch message before "(N in all)"


def read_checkpoint(path: str) -> Any:
    """What mmengine's loader reads from ``path``; a file it cannot read: :class:`UserError`."""
    if '://' not in path and not osp.isfile(path):
        raise UserError(f'no such checkpoint: {path}')
    try:
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except Exception as error:  # what torch raises on a file it did not write (any pickle)
        refused = re.search(r'WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)', str(error), re.S)
        reason = one_line(error).split('. ')[0]
        if refused:
            reason = f'the weights-only unpickler refuses it ({one_line(refused.group(1))})'
        elif isinstance(error, OSError):  # permission, I/O, a URL that cannot be fetched
            reason = error.strerror or one_line(error)
        elif not isinstance(error, RuntimeError):  # torch's own are worded; EOFError is empty
            named = f'{type(error).__name__}: {reason}'.rstrip(': ')
            reason = f'not a file torch.save wrote ({named})'
        raise UserError(f'checkpoint {path} cannot be read: {reason}') from error


def weights_of(checkpoint: Any, path: str) -> dict[str, torch.Tensor]:
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


def _first(items: list[str], separator: str) -> str:
    return separator.join(items[:KEYS_SHOWN]) + (
        f' ({len(items)} in all)' if len(items) > KEYS_SHOWN else '')


def check_weights_fit(model: torch.nn.Module, path: str, allow_partial: bool) -> None:
    """``path``'s weights load into ``model`` strictly (the runner then loads them as usual)."""
    weights = weights_of(read_checkpoint(path), path)
    if allow_partial:
        return
    try:
        load_state_dict(model.module if is_model_wrapper(model) else model, weights,
                        strict=True)
    except RuntimeError as error:  # mmengine's lines after its header, each list cut short
        parts, sizes = [], []
        for line in filter(None, map(str.strip, str(error).splitlines()[1:])):
            label, _, keys = line.partition(': ')
            if line.startswith('size mismatch'):
                sizes.append(line.rstrip('.'))
            else:  # 'missing keys in source state_dict: a, b', or another message
                parts.append(f'{label}: {_first(keys.split(", "), ", ")}'
                             if label.endswith('state_dict') else line)
        raise UserError(f'checkpoint {path} does not fit the model: '
                        f'{"; ".join(parts + ([_first(sizes, "; ")] if sizes else []))}; '
                        '--allow-partial-weights loads it anyway') from error


def check_resume_checkpoint(work_dir: str, checkpoint: Optional[str],
                            config: Optional[Mapping[str, Any]] = None) -> None:
    """The checkpoint --resume continues from (given, else the work dir's latest) is readable
    and, with ``config`` (the one to resume with), was trained with the same classifier
    loss, as the config mmengine saved in it (``meta['cfg']``) says."""
    checkpoint = checkpoint or find_latest_checkpoint(work_dir)
    if checkpoint is None:  # else mmengine trains from scratch (and says so)
        return
    try:
        state = read_checkpoint(checkpoint)
    except UserError as error:
        raise UserError(f'{str(error).rstrip(".")}; --resume cannot continue from it (give '
                        'another checkpoint, or train without --resume)') from error
    saved = saved_config(state, checkpoint)
    difference = loss_difference(saved, config) if saved and config is not None else None
    if difference is not None:
        raise UserError(f'--resume: the run in {checkpoint} was trained with another loss '
                        f'({difference.describe("its checkpoint", "this config")}); resuming '
                        'would continue it with this one, and its results would be labelled '
                        'by it: resume with the config it was trained with, or train this one '
                        'in another --work-dir')


def saved_config(state: Any, path: str) -> Optional[Dict[str, Any]]:
    """The config mmengine saved with the checkpoint (``meta['cfg']``), read as data; None
    when it holds none that can be read so."""
    meta = state.get('meta') if isinstance(state, dict) else None
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return parse_config_text(text, f"{path} (meta['cfg'])")
    except UserError:
        return None
