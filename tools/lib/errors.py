"""User errors: :func:`run` prints a :class:`UserError` as ``<tool>: error: <message>``, one line
on stderr, exit status 2 (argparse's form); any other exception keeps its traceback. Standard
library only: tools/lib/sweep/settings.py runs before the project's environment exists."""
import argparse
import contextlib
import math
import os.path as osp
import sys
import warnings
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence, Union


def ignore_known_warnings() -> None:
    """Call before mmengine's import: its pkg_resources warning would bury a one-line error."""
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what to change."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are :class:`UserError` (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def number(kind: type = int, low: Optional[float] = None, high: Optional[float] = None,
           what: Optional[str] = None) -> Callable[[str], Union[int, float]]:
    """An argparse ``type``: a decimal integer (``kind=int``) or a finite number (``kind=float``)
    in [``low``, ``high``] (either bound may be None; NaN and infinities are out of range).
    A bad value is argparse's error for the flag: ``argument --seed: expected an integer from
    0 to 9, got '-1'``, or ``expected an integer, got 'x'`` for a value that is no number;
    ``what`` names the value (default 'an integer' or 'a finite number').

        parser.add_argument('--seed', type=number(int, 0, 2**32 - 1))
        parser.add_argument('--wait-time', type=number(float, low=0, what='a number of seconds'))
    """
    what = what or ('an integer' if kind is int else 'a finite number')
    bound = (f' from {low} to {high}' if low is not None and high is not None else
             f' >= {low}' if low is not None else f' <= {high}' if high is not None else '')

    def parse(text: str) -> Union[int, float]:
        try:
            value = int(text, 10) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
        if not math.isfinite(value) or (low is not None and value < low) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f'expected {what}{bound}, got {text!r}')
        return value
    return parse


@contextlib.contextmanager
def writing(out: str, what: str = 'the dataset to ') -> Iterator[None]:
    """An ``OSError`` in the block is a :class:`UserError`: ``cannot write <what><out>:
    <reason>: <file>`` (the file the system names, else ``out``)."""
    try:
        yield
    except OSError as error:
        raise UserError(f'cannot write {what}{out}: {error.strerror or error}: '
                        f'{error.filename or out}') from None


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
