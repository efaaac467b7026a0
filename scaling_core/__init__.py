"""The floor of the house: what probes, fits and planner all stand on.

* the compute model: model shapes with exact parameter and FLOP counts (:mod:`scaling_core.shape`),
  accelerators (:mod:`scaling_core.hardware`) and budgets in FLOPs, hours or dollars
  (:mod:`scaling_core.budget`);
* the plumbing: the error type for bad input (:mod:`scaling_core.errors`), atomic file writes and
  JSON-safe conversion (:mod:`scaling_core.io`), and the command-line guard that turns bad input into
  one line and exit status 2 (:mod:`scaling_core.cli`).

It imports numpy (and click for the CLI guard) and nothing of the project above it.
"""
from .errors import InputError

__all__ = ["InputError"]
