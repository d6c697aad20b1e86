"""Errors a user can act on, and the command-line wrapper that prints them as one line.

Every bad file, value, genotype or config field raises a :class:`UserError` (or a subclass) whose message
names the offending item.  :func:`run_cli` turns it (and an ``OSError`` of the environment: permission
denied, no such directory) into ``error: <message>`` on stderr and exit code 2; ``--debug`` on the command
line shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Type, Union

__all__ = ['UserError', 'UnreadableFileError', 'MissingFileError', 'DiskFullError', 'run_cli', 'describe_file',
           'user_errors', 'EXIT_USER_ERROR']

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input from the user: a file, a value, a genotype or a config field (the message names it)."""

    def one_line(self) -> str:
        """The message on one line, as the command line prints it after ``error:``."""
        return _one_line(self)


def _one_line(err: BaseException) -> str:
    return ' '.join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


class UnreadableFileError(UserError):
    """A file that is missing, empty, truncated, random bytes, a pickle with code, or not the expected kind."""


class MissingFileError(UnreadableFileError, FileNotFoundError):
    """The file does not exist (also a ``FileNotFoundError``, for callers that catch that)."""


class DiskFullError(UserError, OSError):
    """No space left while writing; the message names the target and whether the previous file is intact."""


def describe_file(path: Union[str, 'os.PathLike[str]']) -> str:
    """``'<path> (<n> bytes)'``, ``'<path> (missing)'`` or ``'<path> (a directory)'`` for error messages."""
    p = Path(path)
    if p.is_dir():
        return f'{p} (a directory)'
    try:
        return f'{p} ({p.stat().st_size} bytes)'
    except OSError:
        return f'{p} (missing)'


@contextlib.contextmanager
def user_errors(*kinds: Type[BaseException]) -> Iterator[None]:
    """Re-raise ``kinds`` (e.g. a library's ``ValueError`` about a value the user gave) as :class:`UserError`."""
    try:
        yield
    except UserError:
        raise
    except kinds as err:
        raise UserError(str(err)) from err


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)``; a :class:`UserError` or ``OSError`` becomes one ``error: ...`` line and exit code 2.

    ``--debug`` anywhere in ``argv`` (default ``sys.argv[1:]``) re-raises instead, showing the traceback;
    the flag is removed before ``main`` sees it.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in args
    args = [a for a in args if a != '--debug']
    try:
        return int(main(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of the input
        raise
    except (UserError, OSError) as err:
        if debug:
            raise
        message = err.one_line() if isinstance(err, UserError) else _one_line(err)
        print(f'error: {message}', file=sys.stderr)
        return EXIT_USER_ERROR
