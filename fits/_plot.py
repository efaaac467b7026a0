"""Lazy matplotlib access: plotting is optional and never imported at module load."""
from __future__ import annotations

__all__ = ["get_axes", "pyplot"]


def pyplot():
    """Import and return matplotlib.pyplot, or fail loudly with an install hint."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib, which is not installed: pip install 'scaling-planner[plot]'"
        ) from exc
    return plt


def get_axes(ax=None):
    """Return ``ax``, or the Axes of a new figure when it is None."""
    if ax is None:
        _, ax = pyplot().subplots(figsize=(6.4, 4.4))
    return ax
