"""Inference-aware sizing for T tokens served over the model's life.

Two questions, two answers:

* :func:`best_within_budget` (the plan's answer for a team whose training budget C is fixed): the
  model on the budget's isoFLOP line that minimises its serving FLOPs 2 N T plus the price of its
  lost quality, priced as training compute: C - C*(L), where C*(L) is the compute a compute-optimal
  run needs to reach loss L. Serving nothing, that is the compute-optimal model; serving much, a
  smaller model trained on more tokens, within the same training budget.
* :func:`inference_optimal` (Sardana et al. 2024, 'Beyond Chinchilla-Optimal', arXiv:2401.00448):
  among all (N, D) reaching the compute-optimal plan's loss L*, the one minimising lifetime
  FLOPs 6 N D + 2 N T: a smaller model trained longer, at more than the budget.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["tokens_for_loss", "inference_optimal", "best_within_budget"]


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


def best_within_budget(predict, C: float, T: float, n_opt: float) -> float:
    """N of the model that spends training budget ``C`` (D = C / 6N) and is lifetime-optimal for
    its own loss with ``T`` tokens served: along its iso-loss curve, training + serving FLOPs
    6ND + 2NT are stationary, 6D + 2T = 6D (dL/dlnN) / (dL/dlnD) (Sardana et al.'s condition, read
    at a fixed training budget). With T = 0 it is the compute-optimal N; more serving, a smaller
    model trained on more tokens. ``predict(N, D)`` is the loss law; N is searched below ``n_opt``.

    >>> L = lambda n, d: 1.7 + 400 / n ** 0.34 + 410 / d ** 0.28
    >>> n0 = best_within_budget(L, 1e21, 0.0, 1e11)
    >>> n1 = best_within_budget(L, 1e21, 1e13, n0)
    >>> 0.05 < n1 / n0 < 0.8
    True
    """
    h = 1e-3

    def g(logn):
        n = math.exp(logn)
        d = C / (6.0 * n)
        dl_n = (predict(n * math.exp(h), d) - predict(n * math.exp(-h), d)) / (2 * h)
        dl_d = (predict(n, d * math.exp(h)) - predict(n, d * math.exp(-h))) / (2 * h)
        if not dl_d < 0:
            return -math.inf
        return 6.0 * d + 2.0 * T - 6.0 * d * dl_n / dl_d

    hi = math.log(n_opt)
    if T <= 0 or g(hi) <= 0:  # already lifetime-optimal at the compute-optimal size
        if T <= 0:
            lo = math.log(n_opt) - 10.0
            hi = math.log(n_opt) + 10.0
        else:
            return n_opt
    else:
        lo = hi - 2.0
        while g(lo) > 0 and lo > hi - 14.0:
            lo -= 2.0
    for _ in range(80):  # bisection in log N: g falls as N shrinks
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if g(mid) > 0 else (mid, hi)
    return math.exp(0.5 * (lo + hi))
