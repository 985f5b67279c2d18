"""The runs of ``tools/sweep.py`` (a config at one epsilon and seed) and where each stands:
its marker holds its key (a hash of the resolved config and ``--key-files``) and state."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import os.path as osp
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tools.lib import recipe
from tools.lib.cli import apply_cfg_options, parse_cfg_options, read_config
from tools.lib.errors import UserError
from tools.lib.sweep.run import LOCK_NAME, MARKER

POLY1_LOSSES = ('Poly1FocalLoss', 'Poly1CrossEntropyLoss')  # whose epsilon the sweep sets
_EPSILON_IN_NAME = re.compile(r'eps[+-]?[0-9.]+')
_FORCE = '--force (FORCE=1 for tools/run_demo.sh)'


@dataclass
class Run:
    """One (loss setting, seed) of the sweep."""
    name: str
    config: str
    work_dir: Path
    options: List[str]  # --cfg-options for train and test
    key: str = ''
    state: str = 'new'  # new, resume, test, done

    def write_marker(self, state: str) -> None:
        """Atomically, in the work dir that the caller's run lock made."""
        temporary = self.work_dir / (MARKER + '.tmp')
        temporary.write_text(json.dumps({'key': self.key, 'state': state}) + '\n')
        os.replace(temporary, self.work_dir / MARKER)


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
              key_files: Sequence[str], dry_run: bool = False) -> List[Run]:
    """Every (loss, seed) run, baseline first, each with its key (not yet its state)."""
    loaded = {path: read_config(path) for path in filter(None, (config, baseline))}
    loss_key = poly_loss_key(with_options(loaded[config], options).model)
    for option in options:
        if option.split('=', 1)[0].lstrip('+') in ('randomness.seed', f'{loss_key}.epsilon'):
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
            resolved = with_options(loaded[path], run_options).pretty_text
            key = hashlib.sha256((resolved + extra.hexdigest()).encode()).hexdigest()[:16]
            runs.append(Run(name, path, root / name, run_options, key))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f'two runs would share a work dir: {sorted(names)}; give the baseline '
                        'and the Poly-1 config different names')
    return runs


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


def assess(run: Run, force: bool, retrain_changed: bool) -> None:
    """Set ``run.state`` from its work dir: new, resume (started, with a checkpoint), test
    (trained) or done (tested with the same key); a dir the sweep did not write is an
    error unless ``force``, one of another key unless ``force`` or ``retrain_changed``."""
    work_dir = run.work_dir
    try:
        marker = json.loads((work_dir / MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    if not marker and not force and work_dir.exists() and not (
            work_dir.is_dir() and all(e.name == LOCK_NAME for e in work_dir.iterdir())):
        raise UserError(f'{work_dir} holds files the sweep did not write (no {MARKER}), '
                        f'perhaps a run of tools/train.py; {_FORCE} replaces it, or choose '
                        'another --work-dir-root')
    if force or not marker or marker.get('key') != run.key:
        if marker and not force and not retrain_changed:
            raise UserError(f'{work_dir} holds a run of other settings (its config or a '
                            '--key-files file changed); --retrain-changed retrains it, '
                            '--force retrains every run, or choose another --work-dir-root')
        run.state = 'new'
        return
    run.state = {'tested': 'done', 'trained': 'test'}.get(marker.get('state'), 'resume')
    if run.state == 'resume' and not (work_dir / 'last_checkpoint').is_file():
        run.state = 'new'  # stopped before its first checkpoint: start over
        return
    try:  # a checkpoint deleted by hand: a resume or test would fail on it again and again
        path = (work_dir / 'last_checkpoint').read_text().strip()
        damage = '' if osp.isfile(path) and osp.getsize(path) else f'{path} is missing or empty'
    except OSError:
        damage = 'no last_checkpoint file'
    if damage:
        what = 'finished run' if run.state in ('done', 'test') else \
            'started run (it would resume from that checkpoint)'
        raise UserError(f'the {what} in {work_dir} is damaged ({damage}); {_FORCE} retrains it')


def needs_clearing(run: Run) -> bool:
    """Whether a ``new`` run's work dir holds anything :func:`clear_for_training` removes."""
    return run.state == 'new' and run.work_dir.is_dir() and any(
        entry.name != LOCK_NAME for entry in run.work_dir.iterdir())


def clear_for_training(run: Run) -> None:
    """Empty a ``new`` run's work dir but for the lock file, which the caller holds."""
    if run.state != 'new' or not run.work_dir.exists():
        return
    for entry in run.work_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.name != LOCK_NAME:
            entry.unlink()
