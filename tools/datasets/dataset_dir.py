"""The folder a dataset tool (tools/make_tree_data.py, tools/make_demo_data.py) writes.

The tool's record of a dataset is its ``meta.json``: a folder is the tool's when that file
is one the tool writes. The tool replaces a folder only when it is the tool's and holds
nothing but the files the tool writes (``meta.json``, ``annotations/instances_<split>.json``,
images named as the tool names them in ``<split>/``); anything else stops it with one line
and nothing changed. The new dataset is written in a fresh folder beside the old one and
swapped in only once complete; a failure removes the new folder and leaves the old one.
A dataset counts as present only when every image its annotation files name is there and
not empty. Standard library only."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

from tools.lib.errors import UserError

RECORD = 'meta.json'


class NotOurs(UserError):
    """The output folder holds something the tool cannot prove it made; nothing was changed."""


@dataclass(frozen=True)
class DatasetKind:
    """What one tool writes: ``is_record`` tells its ``meta.json`` content; ``image_name``
    matches the names of the images it writes in each of ``splits``."""
    tool: str
    is_record: Callable[[Any], bool]
    image_name: re.Pattern
    splits: Tuple[str, ...] = ('train', 'val')

    def read_record(self, folder: Path) -> Optional[Any]:
        """The folder's ``meta.json`` if this tool wrote it, else None."""
        try:
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
            return None
        return record if self.is_record(record) else None

    def foreign_files(self, folder: Path) -> Iterator[str]:
        """The entries of ``folder`` (relative names) this tool does not write."""
        allowed = {'annotations': {f'instances_{s}.json' for s in self.splits},
                   **{split: None for split in self.splits}}  # None: names by image_name
        for entry in sorted(folder.iterdir()):
            if entry.name == RECORD and entry.is_file() and not entry.is_symlink():
                continue
            if entry.name not in allowed or entry.is_symlink() or not entry.is_dir():
                yield entry.name + ('/' if entry.is_dir() else '')
                continue
            names = allowed[entry.name]
            for inner in sorted(entry.iterdir()):
                ours = (inner.name in names if names is not None
                        else self.image_name.fullmatch(inner.name) is not None)
                if not ours or inner.is_symlink() or not inner.is_file():
                    yield f'{entry.name}/{inner.name}'


def target(out_dir: str, argument: str = 'OUT_DIR') -> Path:
    """The folder ``out_dir`` names (a link: the folder it points to); the current folder,
    or one above it, is refused, since the tool swaps a new folder in for it."""
    path = Path(os.path.realpath(out_dir))
    here = Path(os.path.realpath(os.getcwd()))
    if path == here or path in here.parents:
        where = 'the current folder' if path == here else 'a folder above the current one'
        raise NotOurs(f'{argument} {out_dir!r} is {where} ({path}): the dataset is written '
                      f'beside {argument} and swapped in for it, which cannot be done to a '
                      'folder the tool runs in; give a folder inside it, such as '
                      f'{os.path.join(out_dir, "data")}')
    return path


def check_replaceable(folder: Path, kind: DatasetKind) -> None:
    """Raise :class:`NotOurs` unless ``folder`` is missing, empty, or a dataset of ``kind``
    holding only files ``kind`` writes."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise NotOurs(f'{folder} exists and is not a folder; remove it or choose another '
                      'folder')
    if not any(folder.iterdir()):
        return
    if kind.read_record(folder) is None:
        why = (f'no {RECORD}' if not (folder / RECORD).exists() else
               f'its {RECORD} is not one {kind.tool} writes')
        raise NotOurs(f'{folder} exists and does not hold a dataset of this tool ({why}); '
                      'remove it or choose another folder')
    foreign = next(kind.foreign_files(folder), None)
    if foreign is not None:
        raise NotOurs(f'{folder} holds {foreign}, which {kind.tool} does not write, so it '
                      'cannot replace the folder; move that out of it, or choose another '
                      'folder (nothing was changed)')


def incomplete(folder: Path, images: Mapping[str, Optional[int]]) -> str:
    """Why the dataset in ``folder`` is not complete ('' when it is): each split's
    annotation file must be readable, name ``images[split]`` images (None: any number),
    and every image it names must be there and not empty."""
    for split, expected in images.items():
        name = f'annotations/instances_{split}.json'
        try:
            names = [image['file_name'] for image in json.loads(
                (folder / name).read_text())['images']]
        except OSError as error:
            return f'{name} cannot be read ({error.strerror})'
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            return f'{name} is not an annotation file this tool wrote ({type(error).__name__})'
        if expected is not None and len(names) != expected:
            return f'{name} names {len(names)} images, {RECORD} says {expected}'
        missing = [n for n in names if not _non_empty(folder / split / str(n))]
        if missing:
            return (f'{len(missing)} of the {len(names)} {split} images that {name} names are '
                    f'missing or empty ({split}/{missing[0]}, ...)')
    return ''


def _non_empty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _make_parent(folder: Path) -> None:
    """Make ``folder``'s parent; a file on the way is ``NotADirectoryError`` naming it."""
    for above in [folder.parent, *folder.parent.parents]:
        if above.exists():
            if not above.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(above))
            break
    folder.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def written_beside(folder: Path) -> Iterator[Path]:
    """A new empty folder beside ``folder`` to write the dataset in; when the block ends
    without an error it replaces ``folder``, else it is removed and ``folder`` is left as
    it was. The caller has checked ``folder`` with :func:`check_replaceable`."""
    _make_parent(folder)
    built = folder.with_name(f'.{folder.name}.partial-{secrets.token_hex(6)}')
    built.mkdir()  # the umask's mode, as a plain mkdir (tempfile.mkdtemp's is 0o700)
    try:
        yield built
        _swap(built, folder)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _swap(built: Path, folder: Path) -> None:
    """Move ``built`` to ``folder``; an old ``folder`` is moved aside first and removed
    only once ``built`` is in its place (moved back if that fails)."""
    if not folder.exists():
        os.replace(built, folder)
        return
    old = folder.with_name(f'.{folder.name}.replaced-{secrets.token_hex(6)}')
    os.replace(folder, old)
    try:
        os.replace(built, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
