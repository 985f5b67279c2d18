"""The docs point at what exists: every test they cite as evidence (``test_x.py::test_name``,
or ``::test_name`` after a test file on the same line) is a test in that file, and every
relative link and ``#anchor`` resolves."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
_FILE = re.compile(r'(?<![\w/])((?:[\w.-]+/)*test_\w+\.py)')
_CITED = re.compile(r'((?:[\w.-]+/)*test_\w+\.py)?::(test_\w+)')
_LINK = re.compile(r'\]\(([^)\s]+)\)')


def _test_file(name: str) -> Path:
    """The test file a page names (``tests/tools/x.py``, ``tools/x.py`` or just ``x.py``)."""
    found = sorted(p for p in (ROOT / 'tests').rglob(Path(name).name)
                   if p.as_posix().endswith(name.removeprefix('tests/')))
    assert found, f'no test file {name}'
    return found[0]


def _citations(page: Path):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        for match in _CITED.finditer(line):
            before = _FILE.findall(line[:match.start()])
            named = match[1] or (before[-1] if before else None)
            if named is not None:
                yield f'{page.name}:{number}', named, match[2]


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_every_cited_test_exists(page):
    missing = [f'{where}: {name}::{test}' for where, name, test in _citations(page)
               if not re.search(rf'^(?:async )?def {test}\b', _test_file(name).read_text(), re.M)]
    assert not missing, missing


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in _LINK.findall(page.read_text()):
        if '://' in target or target.startswith('mailto:'):
            continue
        path, _, anchor = target.partition('#')
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == '.md':
            headings = re.findall(r'^#+ (.+)$', linked.read_text(), re.M)
            if anchor not in {_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, broken
