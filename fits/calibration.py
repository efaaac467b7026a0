"""Prediction intervals beyond the runs: the fitted runs' hull and the distance to it, the conformal
quantile, each form's measured error per decade of extrapolation, and the backtests that calibrate an
interval (``_conformal_scores``) and check a fit (``_trust``). The result object that uses them is
:class:`fits.surface.LossSurfaceFit`."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["convex_hull", "hull_distance", "conformal_quantile", "EXTRAPOLATION_ERROR", "extrapolation_error_of"]


def convex_hull(points: np.ndarray) -> list:
    """Vertices, counter-clockwise, of the convex hull of 2-D points (Andrew's monotone chain);
    degenerate sets give their extreme points."""
    pts = sorted(set(map(tuple, np.round(np.asarray(points, dtype=float), 12))))
    if len(pts) <= 2:
        return [list(p) for p in pts]
    cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return [list(p) for p in lower[:-1] + upper[:-1]]


def hull_distance(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Euclidean distance of points (..., 2) to a convex polygon (vertices counter-clockwise);
    0 inside.

    >>> float(hull_distance(np.array([3.0, 0.5]), np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])))
    2.0
    """
    a = hull
    b = np.roll(hull, -1, axis=0)
    p = points[..., None, :]                      # (..., 1, 2) against edges (E, 2)
    ab = b - a
    if len(hull) >= 3:
        inside = np.all(ab[:, 0] * (p[..., 1] - a[:, 1]) - ab[:, 1] * (p[..., 0] - a[:, 0]) >= -1e-12, axis=-1)
    else:
        inside = np.zeros(points.shape[:-1], dtype=bool)
    t = np.clip(np.sum((p - a) * ab, axis=-1) / np.maximum(np.sum(ab * ab, axis=-1), 1e-300), 0.0, 1.0)
    d = np.sqrt(np.min(np.sum((p - (a + t[..., None] * ab)) ** 2, axis=-1), axis=-1))
    return np.where(inside, 0.0, d)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split-conformal quantile with the finite-sample correction ceil((n+1) level) / n."""
    s = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(s) + 1) * level)
    if k > len(s):  # too few scores to certify this level: the honest interval is unbounded
        return math.inf
    return float(s[k - 1])


# sd of a law's log-loss error per decade beyond its fitted runs (hull distance in log10 N, log10 D),
# added in quadrature to every prediction interval: measured per form by benchmarks/bench_extrapolation.py
# on long splits of Farseer's and Chinchilla's runs, the OLMo ladder and the CPU probes (0-1.5 decades out),
# as the largest any table needed for 90% coverage beyond the hull (benchmarks/results/extrapolation.json
# records each table's need and the leave-one-table-out coverage); forms it did not measure take the largest.
EXTRAPOLATION_ERROR = {"chinchilla": 0.055, "beta_n": 0.0225, "interaction": 0.0725, "farseer": 0.0625,
                       "auto": 0.055}


def extrapolation_error_of(form: str) -> float:
    """The measured per-decade extrapolation error of a form (:data:`EXTRAPOLATION_ERROR`)."""
    return EXTRAPOLATION_ERROR.get(form, max(EXTRAPOLATION_ERROR.values()))
TRUST_ERROR = 0.02      # own-backtest mean |relative error| above which a fit is flagged
TRUST_WIDTH = 0.10      # 90% prediction interval (relative full width) at 10x the data above which


def _trust(fit, frame, groups, delta, fixed, seed, *, refit) -> dict:
    """The fit's own extrapolation check: refit without the largest budget and score it, and the
    width of the 90% prediction interval at 3x and 10x the largest budget. Returns a dict with
    the numbers and plain-words warnings. ``refit`` fits a subset of the frame
    (:func:`fits.fitting.refit_frame`, passed in so that this module sits below the pipeline)."""

    out, warns = {}, []
    top = int(groups.max())
    train, test = frame[groups < top], frame[groups == top]
    law = fit.law
    if len(train) > len(law.param_names) and train["N"].nunique() > 1 and train["D"].nunique() > 1:
        sub = refit(train, form=law, fixed=fixed, delta=delta, bootstrap=200, seed=seed, calibrate=False,
                          group=None)
        pred, lo, hi = sub.interval(test["N"].to_numpy(), test["D"].to_numpy(), level=0.9)
        obs = test["loss"].to_numpy()
        err = (pred - obs) / obs
        bt = {"holdout_flops": float(test["C"].median()), "n_test": int(len(test)),
              "mean_abs_rel_error": float(np.mean(np.abs(err))), "max_abs_rel_error": float(np.max(np.abs(err))),
              "coverage": float(np.mean((obs >= lo) & (obs <= hi)))}
        out["backtest"] = bt
        if bt["mean_abs_rel_error"] > TRUST_ERROR or bt["coverage"] < 0.5:
            warns.append(f"own backtest misses: fitted without the largest budget, the fit predicts it with "
                         f"mean |error| {bt['mean_abs_rel_error']:.1%} (worst {bt['max_abs_rel_error']:.1%}) "
                         f"and its 90% interval covers {bt['coverage']:.0%} of those runs")
    widths = {}
    for k in (3.0, 10.0):
        a = fit.allocation(fit.data_range["C_max"] * k, level=0.9)
        w = float((a["loss_high"][0] - a["loss_low"][0]) / a["loss"][0])
        widths[f"{k:g}x"] = w
        if k == 10.0 and (not np.isfinite(w) or w > TRUST_WIDTH):
            warns.append(f"interval explodes: at 10x the largest budget the 90% prediction interval spans "
                         f"{w:.0%} of the predicted loss ([{a['loss_low'][0]:.4g}, {a['loss_high'][0]:.4g}])")
    out["interval_width"] = widths
    out["warnings"] = warns
    return out


LONG_FOLDS = (10.0, 100.0)  # long calibration folds: fit budgets <= C_max / f, score every larger run


def _long_folds(frame, groups, factors=LONG_FOLDS, min_levels: int = 3):
    """(train, test) masks that reach a decade or two: fit the budgets at or below C_max / f, score
    every run above; kept where the training side has ``min_levels`` budgets."""
    out = []
    c_top = float(frame["C"].max())
    level_c = {g: float(np.exp(np.log(frame["C"][groups == g]).mean())) for g in np.unique(groups)}
    for f in factors:
        keep = [g for g, c in level_c.items() if c <= c_top / f]
        if len(keep) >= min_levels:
            tr = np.isin(groups, keep)
            out.append((tr, ~tr))
    return out


def _conformal_scores(law, frame, groups, delta, fixed, seed, max_holdouts=5, max_axis_holdouts=3, boot=100, *,
                      refit):
    """Extrapolation backtests: for each of the largest budgets g (from the fourth), fit on budgets
    < g and score the runs at g; likewise for the largest model sizes and token counts, and the long
    folds (fit budgets up to a tenth and a hundredth of the largest, score everything above). Returns
    (records, number of backtests): one row per held-out run, (|log error|, sd without distance,
    decades beyond the backtest's runs), so that a score |error| / sqrt(sd^2 + (k d)^2) can be
    formed for the law's per-decade error k. ``refit`` as in :func:`_trust`."""
    from .selection import extrapolation_folds

    masks = [(tr, te) for _, _, tr, te in extrapolation_folds(frame, max_holdouts, axes=("compute",), first_compute=3)]
    masks += [(tr, te) for _, _, tr, te in extrapolation_folds(frame, max_axis_holdouts, axes=("size", "tokens"))]
    masks += _long_folds(frame, groups)
    scores = []
    for tr, te in masks:
        train, test = frame[tr], frame[te]
        if len(train) <= len(law.param_names) or train["N"].nunique() < 2 or train["D"].nunique() < 2:
            continue
        sub = refit(train, form=law, fixed=fixed, delta=delta, bootstrap=boot, seed=seed,
                          calibrate=False, unique_tokens="U" if law.variables else None)
        var = {"unique_tokens": test["U"].to_numpy()} if law.variables else {}
        N, D = test["N"].to_numpy(), test["D"].to_numpy()
        center = np.log(sub.predict(N, D, **var))
        Nb, Db, v = sub._inputs(N, D, dict(var))
        sd = np.sqrt(np.nanvar(sub._log_samples(Nb, Db, v), axis=0) + sub.residual_scale**2)
        err = np.abs(np.log(test["loss"].to_numpy()) - center)
        scores.extend(zip(err, sd, sub.extrapolation_decades(N, D)))
    return (np.asarray(scores, dtype=float) if scores else None), len(masks)
