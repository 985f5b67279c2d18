"""tools/dev/code_lines.py: what counts as a code line."""
from tools.dev.code_lines import count, python_lines, shell_lines

SOURCE = '''"""A module docstring
over two lines."""
import os  # a comment


def f(x):
    """A docstring."""
    # a comment line

    help = ("a value over "
            "two lines")
    text = """a multi-line
string value"""
    return os.sep, help, text
'''


def test_docstrings_comments_and_blank_lines_are_not_code():
    # import, def, help (2 lines), text (2 lines), return
    assert python_lines(SOURCE) == 7


def test_shell_lines_leave_out_comments_and_blank_lines():
    assert shell_lines('#!/bin/sh\n# a comment\n\nset -e\n  echo hi  # said\n') == 2


def test_count_reads_python_and_shell_files_only(tmp_path):
    (tmp_path / 'a.py').write_text(SOURCE)
    (tmp_path / 'b.sh').write_text('echo 1\n')
    (tmp_path / 'c.txt').write_text('not code\n')
    assert sorted((n, p.name) for n, p in count([tmp_path])) == [(1, 'b.sh'), (7, 'a.py')]
