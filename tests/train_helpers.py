"""Shared by the end-to-end tests that run tools/*.py in subprocesses on a
tiny generated copy of the demo dataset."""
import contextlib
import importlib
import io
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from tools.datasets.shapes import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600

# A few iterations on 16 images; no dataloader workers (start-up dominates).
FAST = [
    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1', 'param_scheduler.0.end=2',
    'randomness.seed=0', 'model.test_cfg.nms_pre=100',
    'model.test_cfg.max_per_img=20',
    # After 4 iterations no score passes the config's 0.05, and CocoMetric
    # logs no mAP for an empty result; keep every box instead.
    'model.test_cfg.score_thr=0.0'
] + [
    f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                     'test_dataloader')
    for key in ('batch_size=4', 'num_workers=0', 'persistent_workers=False')
]


def make_workspace(root: Path, num_train: int = 16, num_val: int = 8) -> Path:
    """``root`` as a cwd with data/polyloss_shapes, where the demo configs look."""
    generate(str(root / 'data' / 'polyloss_shapes'),
             SyntheticConfig(seed=1, num_train=num_train, num_val=num_val))
    return root


def run(args: List[str], cwd: Path, **env) -> str:
    """Run a command; fail the test with its output if it fails."""
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        env=dict(os.environ, **env))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


def load_tool(name: str):
    """The module of the script tools/<name>.py (its ``main`` not run)."""
    return importlib.import_module(f'tools.{name}')


def run_in_process(main: Callable[[Optional[Sequence[str]]], object], argv: List[str],
                   prog: str) -> subprocess.CompletedProcess:
    """A tool's ``main`` called as its ``__main__`` block calls it (tools/lib/errors.run),
    in this process: its exit status, stdout and stderr, as ``subprocess.run`` gives
    them, without a new interpreter importing torch and mmdet (seconds a call)."""
    from tools.lib import errors
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            errors.run(main, argv, prog=prog)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess([prog, *argv], status, out.getvalue(), err.getvalue())


def strip_scope(node: Any, scope: str) -> Any:
    """``node`` without the ``_scope_=scope`` keys mmengine adds to dicts inherited through
    ``scope::``; that package's configs build in that scope anyway."""
    if isinstance(node, dict):
        return {k: strip_scope(v, scope) for k, v in node.items()
                if not (k == '_scope_' and v == scope)}
    if isinstance(node, (list, tuple)):
        return type(node)(strip_scope(v, scope) for v in node)
    return node


def resolved_config(path: Path, scope: str) -> Dict[str, Any]:
    """The config at ``path`` as a dict (its default scope ``scope``), scope keys dropped."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(path)).to_dict()
    assert cfg.get('default_scope') == scope
    return strip_scope(cfg, scope)

