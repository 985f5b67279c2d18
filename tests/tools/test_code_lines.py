"""tools/dev/code_lines.py: what counts as a code line."""
import subprocess
import sys
from pathlib import Path

from tools.dev.code_lines import count, python_lines, shell_lines

SCRIPT = Path(__file__).resolve().parents[2] / 'tools' / 'dev' / 'code_lines.py'

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


def test_a_folder_that_is_not_there_is_one_line_naming_it(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / 'nope')],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == (f"code_lines.py: error: FOLDER must be a folder, got "
                             f"'{tmp_path / 'nope'}'\n")
    ok = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.endswith('0 in all (0 files)\n')
