"""The error type for bad user input (kept dependency-free so every module can raise it)."""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input: the message names the parameter, the constraint and what was given."""
