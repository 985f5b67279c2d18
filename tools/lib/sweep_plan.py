"""The plan behind ``tools/sweep.py``: which runs an epsilon sweep has, where
each one stands, and the commands that train and test it.

A run is one (loss, seed): the Poly-1 config at one epsilon, or the baseline
config, with ``randomness.seed`` set. Its work dir holds a marker,
``.sweep-run.json``, with the run's key (a hash of its resolved config and of
any ``--key-files``) and its state: ``training`` (started), ``trained``,
``tested``. From the marker and the work dir a run is

- ``new``: nothing there yet, or retrained on request;
- ``resume``: training started, a checkpoint exists: ``--resume``;
- ``test``: trained, not yet tested;
- ``done``: tested with the same key: skipped.

A finished run whose key differs (the config or a key file changed) is an
error unless the caller asked to retrain such runs, and so is a work dir the
sweep did not write (no marker) unless the caller forces retraining: the
sweep never deletes a run of its own accord that it did not make.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tools.lib.cli import apply_cfg_options, parse_cfg_options, read_config
from tools.lib.errors import UserError
from tools.lib.run_lock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[2]
MARKER = '.sweep-run.json'
#: How the sweep runs train.py and test.py: here, one process or torchrun; or
#: as a Slurm job array (tools/lib/cli.py's LAUNCHERS are what the tools accept).
SWEEP_LAUNCHERS = ('none', 'pytorch', 'slurm')
#: Losses whose ``epsilon`` the sweep sets.
POLY1_LOSSES = ('Poly1FocalLoss', 'Poly1CrossEntropyLoss')
_EPSILON_IN_NAME = re.compile(r'eps[+-]?[0-9.]+')


@dataclass
class Run:
    """One (loss setting, seed) of the sweep."""
    name: str
    config: str
    work_dir: Path
    options: List[str]  # --cfg-options for train and test
    key: str = ''
    state: str = 'new'  # new, resume, test, done

    def marker(self) -> Dict[str, str]:
        path = self.work_dir / MARKER
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def write_marker(self, state: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.work_dir / (MARKER + '.tmp')
        temporary.write_text(json.dumps({'key': self.key, 'state': state}) + '\n')
        os.replace(temporary, self.work_dir / MARKER)


@dataclass
class Launcher:
    """How the local driver starts train.py and test.py: directly or with torchrun
    (``--launcher slurm`` submits job arrays instead: ``tools/lib/sweep_slurm.py``)."""
    kind: str = 'none'
    gpus: int = 1
    python: str = sys.executable
    env: Dict[str, str] = field(default_factory=dict)

    def train(self, run: Run, resume: bool) -> List[str]:
        args = ['--cfg-options', *run.options] + (['--resume'] if resume else [])
        if self.kind == 'pytorch':
            return ['bash', str(ROOT / 'tools/dist_train.sh'), run.config, str(self.gpus),
                    '--work-dir', str(run.work_dir), *args]
        return [self.python, str(ROOT / 'tools/train.py'), run.config,
                '--work-dir', str(run.work_dir), *args]

    def test(self, run: Run, checkpoint: str) -> List[str]:
        args = ['--work-dir', str(run.work_dir), '--cfg-options', *run.options]
        if self.kind == 'pytorch':
            return ['bash', str(ROOT / 'tools/dist_test.sh'), run.config, checkpoint,
                    str(self.gpus), *args]
        return [self.python, str(ROOT / 'tools/test.py'), run.config, checkpoint, *args]

    def environment(self) -> Dict[str, str]:
        """The environment of the launched commands (PYTHON for the shell scripts)."""
        return dict(os.environ, PYTHON=self.python, **self.env)


def with_options(cfg, options: Sequence[str]):
    """A copy of ``cfg`` with ``options`` (KEY=VALUE words) applied by the rules of
    the tools' --cfg-options (``tools.lib.cli``: a key must exist, ``+key`` adds one)."""
    parsed = parse_cfg_options(options)
    cfg = copy.deepcopy(cfg)
    apply_cfg_options(cfg, parsed)
    return cfg


def poly_loss_key(model: Dict) -> str:
    """The config key of the classifier's Poly-1 loss (``model.<...>.loss_cls``)."""
    roi = (model.get('roi_head') or {}).get('bbox_head')
    for path, head in (('roi_head.bbox_head', roi), ('bbox_head', model.get('bbox_head'))):
        loss = head.get('loss_cls') if isinstance(head, dict) else None
        if isinstance(loss, dict) and loss.get('type') in POLY1_LOSSES:
            return f'model.{path}.loss_cls'
    found = [h.get('loss_cls', {}).get('type') for h in (roi, model.get('bbox_head'))
             if isinstance(h, dict)]
    raise UserError(f'the sweep config needs a {" or ".join(POLY1_LOSSES)} as its box '
                    f'classifier loss, found {[t for t in found if t] or "none"}; give the '
                    'focal or cross-entropy config as --baseline')


def run_name(config: str, epsilon: Optional[str], seed: int) -> str:
    """``<config name>`` with its ``eps...`` part set to the run's epsilon (or
    ``_eps<e>`` appended), and ``_seed<N>`` for seeds other than 0."""
    name = Path(config).stem
    if epsilon is not None:
        name = (_EPSILON_IN_NAME.sub(f'eps{epsilon}', name, count=1)
                if _EPSILON_IN_NAME.search(name) else f'{name}_eps{epsilon}')
    return name if seed == 0 else f'{name}_seed{seed}'


def file_digest(paths: Sequence[str], missing_ok: bool = False) -> str:
    """One hash of the files' contents, in order. With ``missing_ok`` (a dry run,
    before the files are made) a missing file hashes as its name, so the plan
    shows the runs it would invalidate; otherwise it is an error."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            digest.update(Path(path).read_bytes())
        except OSError as error:
            if not (missing_ok and isinstance(error, FileNotFoundError)):
                raise UserError(f'--key-files: cannot read {path!r}: {error.strerror}') from error
            digest.update(f'<missing {path}>'.encode())
    return digest.hexdigest()


def plan_runs(config: str, epsilons: Sequence[str], seeds: Sequence[int],
              baseline: Optional[str], root: Path, options: Sequence[str],
              key_files: Sequence[str], dry_run: bool = False) -> List[Run]:
    """Every (loss, seed) run, baseline first, each with its key (not its state).
    A dry run accepts ``key_files`` that do not exist yet (see ``file_digest``).

    ``epsilons`` are names as ``run_settings.parse_epsilons`` gives them (-1, +0.5).
    """
    loaded = {path: read_config(path) for path in filter(None, (config, baseline))}
    loss_key = poly_loss_key(with_options(loaded[config], options).model)
    for option in options:
        if option.split('=', 1)[0].lstrip('+') in ('randomness.seed', f'{loss_key}.epsilon'):
            raise UserError(f'--cfg-options {option!r}: the sweep sets this for each run '
                            '(use --seeds / --epsilons)')
    extra = file_digest(key_files, missing_ok=dry_run)
    settings = ([(baseline, None)] if baseline else []) + [(config, e) for e in epsilons]
    runs = []
    for seed in seeds:
        for path, epsilon in settings:
            run_options = [f'randomness.seed={seed}', *options]
            if epsilon is not None:
                run_options.insert(1, f'{loss_key}.epsilon={float(epsilon)!r}')
            name = run_name(path, epsilon, seed)
            resolved = with_options(loaded[path], run_options).pretty_text
            key = hashlib.sha256((resolved + extra).encode()).hexdigest()[:16]
            runs.append(Run(name, path, root / name, run_options, key))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f'two runs would share a work dir: {sorted(names)}; give the baseline '
                        'and the Poly-1 config different names')
    return runs


def assess(run: Run, force: bool, retrain_changed: bool) -> None:
    """Set ``run.state`` from its work dir (nothing is changed there)."""
    marker = run.marker()
    if not marker and not force and _holds_files(run.work_dir):
        raise UserError(f'{run.work_dir} holds files the sweep did not write (no {MARKER}), '
                        'perhaps a run of tools/train.py; --force (FORCE=1 for '
                        'tools/run_demo.sh) replaces it, or choose another --work-dir-root')
    if force or not marker:
        run.state = 'new'
    elif marker.get('key') != run.key:
        if not retrain_changed:
            raise UserError(f'{run.work_dir} holds a run of other settings (its config or a '
                            '--key-files file changed); --retrain-changed retrains it, '
                            '--force retrains every run, or choose another --work-dir-root')
        run.state = 'new'
    else:
        run.state = {'tested': 'done', 'trained': 'test'}.get(marker.get('state'), 'resume')
        if run.state == 'resume' and not (run.work_dir / 'last_checkpoint').is_file():
            run.state = 'new'  # stopped before its first checkpoint: start over
        else:
            _check_checkpoint(run)


def _holds_files(path: Path) -> bool:
    """Anything at ``path`` but a directory that is empty (or holds only a run lock)."""
    return path.exists() and not (path.is_dir() and all(
        entry.name == LOCK_NAME for entry in path.iterdir()))


def _check_checkpoint(run: Run) -> None:
    """A trained run still has the checkpoint it ended with, and a started one the
    checkpoint it would resume from (neither deleted by hand): else an error that
    says which file is missing and that ``--force`` retrains the run (a resume
    would fail on it again and again)."""
    try:
        last = (run.work_dir / 'last_checkpoint').read_text().strip()
    except OSError:
        damage = 'no last_checkpoint file'
    else:
        damage = '' if osp.isfile(last) and osp.getsize(last) else f'{last} is missing or empty'
    if damage:
        what = 'finished run' if run.state in ('done', 'test') else \
            'started run (it would resume from that checkpoint)'
        raise UserError(f'the {what} in {run.work_dir} is damaged ({damage}); --force '
                        '(FORCE=1 for tools/run_demo.sh) retrains it')


def clear_for_training(run: Run) -> None:
    """A ``new`` run starts from an empty work dir: what an earlier run left is
    removed (its checkpoints would otherwise be resumed or reported), all but the
    run's lock file (``tools/lib/run_lock.py``), which the caller holds."""
    if run.state != 'new' or not run.work_dir.exists():
        return
    for entry in run.work_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def final_checkpoint(run: Run) -> str:
    """The checkpoint training ended with (named in the work dir's ``last_checkpoint``)."""
    try:
        path = (run.work_dir / 'last_checkpoint').read_text().strip()
    except OSError as error:
        raise UserError(f'{run.name}: training left no last_checkpoint in {run.work_dir}') \
            from error
    if not osp.isfile(path):
        raise UserError(f'{run.name}: last_checkpoint names {path!r}, which does not exist')
    return path
