"""Helpers shared by the command-line tools: clean errors with exit status 2."""
from __future__ import annotations

import functools
import sys

import click

from .errors import InputError

__all__ = ["guarded", "fail", "check_writable"]


def fail(message: str) -> None:
    """Print ``Error: message`` to stderr and exit with status 2 (bad input), no traceback."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def guarded(func):
    """Turn InputError (bad user input) into a one-line message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import warnings

        import numpy as np

        try:  # numerical warnings on extreme inputs are handled by the code, not shown to the user
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except ImportError as exc:  # an optional dependency (matplotlib) that is not installed
            fail(f"{exc}")

    return wrapper


def check_writable(option: str, path) -> None:
    """Raise InputError naming ``option`` unless a file can be created at ``path`` (its folder
    exists or can be made, is a folder, and takes a new file): checked before any work is written,
    so that a bad destination never leaves other outputs half-replaced."""
    import os
    import tempfile
    from pathlib import Path

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option}: {str(p)!r} is a folder; give a file path")
    parent = p.parent
    for a in (parent, *parent.parents):
        if a.exists() and not a.is_dir():
            raise InputError(f"{option}: cannot write {str(p)!r}: {str(a)!r} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"{option}: cannot write {str(p)!r} ({exc.strerror or exc}); choose a writable path") from None
