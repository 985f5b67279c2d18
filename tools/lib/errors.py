"""User errors in the tools: one line on stderr, exit status 2, no traceback.

A tool raises :class:`UserError` for anything the user can fix (a bad flag, a
config that does not exist, a checkpoint that does not fit the model) and runs
its ``main`` through :func:`run`, which prints ``<tool>: error: <message>``
(argparse's format) and exits with status 2, argparse's status for a usage
error. :class:`ArgumentParser` reports its own errors the same way, in one
line (the usage is left to ``--help``). Any other exception is a bug and keeps
its traceback.

Only the standard library: ``tools/lib/run_settings.py`` uses this before the
project's environment exists.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import warnings
from typing import Any, Callable, NoReturn, Optional, Sequence

#: Exit status of a user error (argparse's for a usage error).
USER_ERROR_STATUS = 2


def ignore_known_warnings() -> None:
    """Silence start-up warnings no user can act on, which would bury a one-line
    error: mmengine 0.10.7 imports the deprecated ``pkg_resources`` (pytest
    filters it too, in pyproject.toml). Call before importing mmengine."""
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                            category=UserWarning)


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what to change."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`UserError`."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return ' '.join(str(text).split())


def report(prog: str, error: BaseException) -> None:
    """Print ``<prog>: error: <message>`` to stderr, as one line."""
    print(f'{prog}: error: {one_line(str(error))}', file=sys.stderr, flush=True)


def run(main: Callable[[Optional[Sequence[str]]], Any],
        argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> None:
    """Call ``main(argv)``; on a :class:`UserError`, report it and exit with status 2.

    ``prog`` defaults to the script's file name, as argparse's does.
    """
    try:
        main(argv)
    except UserError as error:
        report(prog or osp.basename(sys.argv[0]), error)
        sys.exit(USER_ERROR_STATUS)
