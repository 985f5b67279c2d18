"""The plan of ``tools/sweep.py``: its runs (a config at one epsilon and seed), each with its
name, folder, ``--cfg-options`` and key (a hash of the resolved config, ``--key-files`` and,
beyond one, the number of training processes); the checks made before any run starts."""
from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tools.lib import recipe
from tools.lib.cli import (
    apply_cfg_options,
    check_input_files,
    check_run_settings,
    option_key,
    parse_cfg_options,
    read_config,
)
from tools.lib.errors import UserError
from tools.lib.sweep.run import Run

POLY1_LOSSES = ('Poly1FocalLoss', 'Poly1CrossEntropyLoss')  # whose epsilon the sweep sets
#: A name's epsilon part, ``eps-1`` in ``..._poly1-eps-1_...``: a word of its own, not the
#: ``eps1000`` of ``steps1000``.
_EPSILON_IN_NAME = re.compile(r'(?<![A-Za-z0-9])eps[+-]?[0-9.]+')


def with_options(cfg, options: Sequence[str]):
    """A copy of ``cfg`` with ``options`` applied by the tools' --cfg-options rules."""
    cfg = copy.deepcopy(cfg)
    apply_cfg_options(cfg, parse_cfg_options(options))
    return cfg


def poly_loss_key(model: Dict) -> str:
    """The config key of the classifier's Poly-1 loss (``model.<...>.loss_cls``): in
    the RoI head's box head, the dense head, or mmdet3d's multi-modal ``pts_bbox_head``;
    mmdet3d configs name the loss in mmdet's scope (``'mmdet.Poly1FocalLoss'``)."""
    found = []
    for path, head in (('roi_head.bbox_head', (model.get('roi_head') or {}).get('bbox_head')),
                       ('bbox_head', model.get('bbox_head')),
                       ('pts_bbox_head', model.get('pts_bbox_head'))):
        loss = head.get('loss_cls') if isinstance(head, dict) else None
        loss_type = loss.get('type') if isinstance(loss, dict) else None
        if isinstance(loss_type, str) and loss_type.removeprefix('mmdet.') in POLY1_LOSSES:
            return f'model.{path}.loss_cls'
        if loss_type:
            found.append(loss_type)
    raise UserError(f'the sweep config needs a {" or ".join(POLY1_LOSSES)} as its box '
                    f'classifier loss, found {found or "none"}; give the '
                    'focal or cross-entropy config as --baseline')


def run_name(config: str, epsilon: Optional[str], seed: int) -> str:
    """The config's name with its ``eps...`` part (else ``_eps<e>``), then ``_seed<N>``."""
    name = Path(config).stem
    if epsilon is not None:
        name, found = _EPSILON_IN_NAME.subn(f'eps{epsilon}', name, count=1)
        name += '' if found else f'_eps{epsilon}'
    return name if seed == 0 else f'{name}_seed{seed}'


def plan_runs(config: str, epsilons: Sequence[str], seeds: Sequence[int],
              baseline: Optional[str], root: Path, options: Sequence[str],
              key_files: Sequence[str], dry_run: bool = False,
              processes: int = 1) -> List[Run]:
    """Every (loss, seed) run, baseline first, each with its key (not yet its state).
    ``processes``: each run's training processes (GPUs), part of the key beyond 1: the total
    batch is the config's per-process batch times that."""
    loaded = {path: read_config(path) for path in filter(None, (config, baseline))}
    loss_key = poly_loss_key(with_options(loaded[config], options).model)
    for option in options:
        if option_key(option) in ('randomness.seed', f'{loss_key}.epsilon'):
            raise UserError(f'--cfg-options {option!r}: the sweep sets this for each run '
                            '(use --seeds / --epsilons)')
    if baseline:
        check_comparable(config, baseline, [
            with_options(loaded[path], [f'randomness.seed={seeds[0]}', *options]).to_dict()
            for path in (config, baseline)])
    extra = hashlib.sha256()
    for path in key_files:
        try:
            extra.update(Path(path).read_bytes())
        except OSError as error:  # a dry run may come before the file is made
            if not (dry_run and isinstance(error, FileNotFoundError)):
                raise UserError(f'--key-files: cannot read {path!r}: {error.strerror}') from error
            extra.update(f'<missing {path}>'.encode())
    runs = []
    for seed in seeds:
        for path, epsilon in ([(baseline, None)] if baseline else []) + [
                (config, e) for e in epsilons]:
            run_options = [f'randomness.seed={seed}', *options]
            if epsilon is not None:
                run_options.insert(1, f'{loss_key}.epsilon={float(epsilon)!r}')
            name = run_name(path, epsilon, seed)
            cfg = with_options(loaded[path], run_options)
            check_run_settings(cfg)  # what tools/train.py would refuse, before any step
            trained_by = f'\n{processes} processes' if processes > 1 else ''
            key = hashlib.sha256((cfg.pretty_text + extra.hexdigest() + trained_by).encode())
            key = key.hexdigest()[:16]
            runs.append(Run(name, path, root / name, run_options, key))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f'two runs would share a work dir: {sorted(names)}; give the baseline '
                        'and the Poly-1 config different names')
    return runs


def to_be_emptied(runs: Sequence[Run]) -> List[Run]:
    """The new runs whose folders hold something (``--force``, ``--retrain-changed``): they
    are emptied before their runs start."""
    def needs_clearing(run: Run) -> bool:
        try:
            return run.needs_clearing()
        except OSError:  # an unreadable folder: the step that makes it says so
            return False
    return [run for run in runs if needs_clearing(run)]


def check_inputs_before_clearing(emptied: Sequence[Run]) -> None:
    """The data and pretrained weights the runs read exist, if folders are to be emptied for
    new runs (``emptied``: :func:`to_be_emptied`): else a finished run would be lost to a
    training that cannot start. The runs differ in loss and seed only, so one is checked."""
    if emptied:
        cfg = with_options(read_config(emptied[0].config), emptied[0].options)
        check_input_files(cfg, ['train', *(['val'] if cfg.get('val_cfg') else []), 'test'])


def check_comparable(config: str, baseline: str, resolved: Sequence[Dict]) -> None:
    """The two resolved configs differ only in the classifier loss (and the run's work_dir
    and seed: tools/lib/recipe.py); else the sweep would pair runs that are not comparable."""
    difference = recipe.first_difference(*resolved)
    if difference is not None:
        raise UserError(f'--baseline {baseline} does not differ from {config} in the loss '
                        f'alone: {difference.describe("the sweep config", "the baseline")}; '
                        'a sweep compares runs whose configs differ only in model...loss_cls '
                        '(and work_dir, randomness.seed): give a baseline of the same recipe, '
                        'or set the key with --cfg-options for both')
