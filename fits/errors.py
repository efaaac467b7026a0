"""The error type for bad user input; it lives in :mod:`scaling_core.errors` (shared by probes,
fits and planner) and is re-exported here as ``fits.InputError``."""
from scaling_core.errors import InputError

__all__ = ["InputError"]
