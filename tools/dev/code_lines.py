#!/usr/bin/env python
"""Code lines of a tree: Python through its tokenizer (no blank, comment or docstring lines;
a multi-line string that is a value counts), shell without blank and comment lines.

    python tools/dev/code_lines.py [FOLDER ...]   # default: tools; per file, then the total
"""
import io
import sys
import tokenize
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set, Tuple

if __name__ == '__main__':  # run as a script: make ``tools`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.lib.errors import UserError, run

_LAYOUT = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT,
           tokenize.ENCODING, tokenize.ENDMARKER}
_STATEMENT_START = {None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def python_lines(text: str) -> int:
    """Lines holding a token of code; a string that is a statement of its own (a docstring)
    is no code."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    lines: Set[int] = set()
    previous = None  # the last token that was not a comment or NL
    for index, token in enumerate(tokens):
        if token.type in _LAYOUT:
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                previous = token.type
            continue
        after = next(t for t in tokens[index + 1:] if t.type not in (tokenize.COMMENT,
                                                                      tokenize.NL))
        if token.type == tokenize.STRING and previous in _STATEMENT_START and \
                after.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            previous = tokenize.STRING
            continue
        previous = token.type
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines)


def shell_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and
               not line.strip().startswith('#'))


def count(folders: Iterable[Path]) -> List[Tuple[int, Path]]:
    """(code lines, file) of every .py and .sh file under ``folders``."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob('*')):
            if path.suffix in ('.py', '.sh') and '__pycache__' not in path.parts:
                text = path.read_text()
                found.append((python_lines(text) if path.suffix == '.py' else shell_lines(text),
                              path))
    return found


def main(argv: Optional[Sequence[str]] = None) -> None:
    folders = [Path(f) for f in (sys.argv[1:] if argv is None else argv) or ['tools']]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise UserError(f'FOLDER must be a folder, got {missing[0]!r}')
    rows = count(folders)
    for lines, path in sorted(rows):
        print(f'{lines:6d} {path}')
    print(f'{sum(lines for lines, _ in rows):6d} in all ({len(rows)} files)')


if __name__ == '__main__':
    run(main, prog='code_lines.py')
