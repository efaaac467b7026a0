"""Inference-aware sizing (Sardana et al. 2024, 'Beyond Chinchilla-Optimal', arXiv:2401.00448).

Among all (N, D) reaching the compute-optimal plan's predicted loss L*, pick the one that
minimises lifetime FLOPs 6 N D + 2 N T for T inference tokens: a smaller model trained longer.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["tokens_for_loss", "inference_optimal"]


def tokens_for_loss(predict, N: float, target: float, d_hint: float) -> float:
    """Tokens D with predict(N, D) == target (inf when N cannot reach it at any D). ``predict`` is
    the law as a function of (N, D), unique tokens and all, so repeated data are priced in."""
    f = lambda logd: predict(N, math.exp(logd)) - target
    lo, hi = math.log(d_hint) - 2.0, math.log(d_hint) + 2.0
    while f(hi) > 0:
        hi += 2.0
        if hi > math.log(d_hint) + 60:
            return math.inf
    while f(lo) < 0:
        lo -= 2.0
    for _ in range(80):  # bisection in log D; the loss falls monotonically with D
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return math.exp(hi)


def inference_optimal(predict, N_opt: float, D_opt: float, T: float) -> tuple[float, float]:
    """(N, D) at the loss of (N_opt, D_opt) minimising 6 N D + 2 N T; N searched below N_opt.
    ``predict(N, D)`` is the loss law (see :func:`tokens_for_loss`)."""
    target = predict(N_opt, D_opt)

    def lifetime(logn):
        n = math.exp(logn)
        d = tokens_for_loss(predict, n, target, D_opt * N_opt / n)
        return 6 * n * d + 2 * n * T, d

    grid = np.linspace(math.log(N_opt) - 4.0, math.log(N_opt), 81)
    costs = [lifetime(g)[0] for g in grid]
    k = int(np.argmin(costs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section refinement in log N
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if lifetime(a)[0] < lifetime(b)[0]:
            hi = b
        else:
            lo = a
    n = math.exp(0.5 * (lo + hi))
    return n, lifetime(math.log(n))[1]
