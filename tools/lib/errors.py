"""User errors: :func:`run` prints a :class:`UserError` as ``<tool>: error: <message>``, one line
on stderr, exit status 2 (argparse's form); any other exception keeps its traceback. Standard
library only: tools/lib/sweep/settings.py runs before the project's environment exists."""
import argparse
import os.path as osp
import sys
import warnings
from typing import Any, Callable, NoReturn, Optional, Sequence


def ignore_known_warnings() -> None:
    """Call before mmengine's import: its pkg_resources warning would bury a one-line error."""
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what to change."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`UserError` (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return ' '.join(str(text).split())


def run(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None,
        prog: Optional[str] = None) -> None:
    """Call ``main(argv)``; report a :class:`UserError` as ``prog`` (the script's) and exit 2."""
    try:
        main(argv)
    except UserError as error:
        print(f'{prog or osp.basename(sys.argv[0])}: error: {one_line(error)}', file=sys.stderr,
              flush=True)
        sys.exit(2)
