"""Helpers shared by the command-line tools: clean errors with exit status 2."""
from __future__ import annotations

import functools
import sys

import click

from .errors import InputError

__all__ = ["guarded", "fail"]


def fail(message: str) -> None:
    """Print ``Error: message`` to stderr and exit with status 2 (bad input), no traceback."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def guarded(func):
    """Turn InputError (bad user input) into a one-line message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except ImportError as exc:  # an optional dependency (matplotlib) that is not installed
            fail(f"{exc}")

    return wrapper
