"""What limits trust in a fit, as named diagnostics: parameters on their bounds (and whether the data push
beyond them), no interior compute-optimal N, too few sizes, exponents that trade off, isoFLOP curves too
flat or off-grid, and the N x D bend the form lacks. Each returns plain-words lines for
:attr:`fits.surface.LossSurfaceFit.diagnostics`."""
from __future__ import annotations

import math

import numpy as np

from .forms import Form

__all__ = ["residual_interaction", "interaction_warned", "INTERACTION_WARN"]


def _edge_cause(law: Form, params: dict, N: float) -> str:
    """The parameters that make a law's isoFLOP loss fall without limit, in words."""
    if law.name == "beta_n":
        from .forms import BETA_N_REF

        e = params["beta"] + params["kappa"] * math.log10(N / BETA_N_REF)
        return (f"its data exponent beta + kappa log10(N/1e9) = {params['beta']:.3g} {params['kappa']:+.3g} "
                f"log10(N/1e9) is {e:.3g} at N = {N:.3g}, so the data term stops decaying")
    if law.name == "farseer":
        up = [p for p in ("f2", "g2", "h2") if params[p] > 0]
        if up:
            return f"{', '.join(up)} > 0: a Farseer term falls faster than any power of N"
        return "its fitted G(N) and H(N) let the data term shrink faster in N than D's loss grows"
    return "its fitted exponents give no interior minimum"


# what a bound that the data push against does to a plan, for the bounds that shape the optimum
_BOUND_EFFECT = {
    "f2": "the floor would fall faster than a power law in N, and N_opt beyond the runs would run higher",
    "g2": "the data coefficient would fall without limit in N, and N_opt would run to the search's edge",
    "h2": "the data exponent would fall without limit in N, and N_opt would run to the search's edge",
    "kappa": "the data exponent would move faster with N, moving N_opt and the loss beyond the runs",
    "E": "the floor would sit lower, and losses far beyond the runs would be lower",
}


def _diagnose(form: Form, params: dict, frame, fixed, data=None, delta: float = 1e-3) -> list[str]:
    """Parameters on a bound: pinned by the bound because the data push beyond it (the objective
    falls when the parameter steps outward: a bound that binds), or on it because the data do not
    pin it (flat); the E floor, and the sweep's span."""
    from ._engine import objective

    out = []
    lo, hi = form.theta_bounds()
    theta = form.to_theta(params)
    base = objective(form, theta, data, delta) if data is not None else math.nan
    for j, p in enumerate(form.param_names):
        if p in fixed or p not in form.bounds:
            continue
        span = (hi[j] - lo[j]) if np.isfinite(hi[j] - lo[j]) else 1.0
        at_lo, at_hi = abs(theta[j] - lo[j]) < 1e-3 * span, abs(theta[j] - hi[j]) < 1e-3 * span
        if not (at_lo or at_hi):
            continue
        a, b = form.bounds[p]
        slope = math.nan
        if np.isfinite(base):  # the objective's slope outward, per unit of the fitted coordinate
            h = 1e-4 * span
            out_theta = theta.copy()
            out_theta[j] += h if at_hi else -h
            with np.errstate(all="ignore"):
                slope = (objective(form, out_theta, data, delta) - base) / h
        if np.isfinite(slope) and slope * h < -1e-9 * max(base, 1e-300):  # a step outward lowers the objective
            out.append(f"at_bound: {p} = {params[p]:.4g} is held by its bound [{a}, {b}]: the data push beyond it "
                       f"(the objective falls {-slope:.2g} per unit outward), so the bound, not the data, sets it"
                       + (f"; freed, {_BOUND_EFFECT[p]}" if p in _BOUND_EFFECT else "")
                       + ": read allocations beyond the runs as conditional on this bound")
        else:
            out.append(f"at_bound: {p} = {params[p]:.4g} sits on its bound [{a}, {b}]: the data do not "
                       "pin it; treat derived allocations as unreliable")
    if "E" in params and "E" not in fixed and params["E"] < 0.01 * frame["loss"].min():
        out.append(f"E_not_identified: E = {params['E']:.3g} is near 0: the runs do not reach the loss floor, so the "
                   "irreducible loss (and any prediction far beyond the data) is not identified")
    for col, what in (("N", "model size N"), ("D", "token count D")):
        span = math.log10(frame[col].max() / frame[col].min())
        if span < 1.0:
            out.append(f"narrow_span: {what} spans only {span:.2f} decades (< 1): its exponent is barely "
                       "identifiable; widen the sweep")
    return out


# An N x D bend of the residuals is warned of when it would move a prediction one decade beyond the data in
# both N and D by more than this (log loss) and lies 3 standard errors from 0. Against the Chinchilla form it
# is -0.012 on Chinchilla's own table, -0.025 on Farseer's, -0.08 on the default CPU probes
# (benchmarks/results/interaction.json).
INTERACTION_WARN = 0.02


def residual_interaction(N, D, log_resid) -> dict:
    """The N x D interaction left in a fit's residuals (log observed - log predicted): the coefficient
    ``gamma`` of (log10 N - mean)(log10 D - mean) in a least-squares fit with an intercept and both main
    effects, its standard error ``se``, and ``share``, the part of the residual variance it explains
    beyond the other three terms. gamma < 0: larger models gain more from more data than the form
    allows, so losses beyond the data in both N and D fall below its predictions."""
    n, d, r = np.log10(np.asarray(N, float)), np.log10(np.asarray(D, float)), np.asarray(log_resid, float)
    n, d = n - n.mean(), d - d.mean()
    X = np.column_stack([np.ones_like(n), n, d, n * d])
    coef, *_ = np.linalg.lstsq(X, r, rcond=None)
    ssr = float(((r - X @ coef) ** 2).sum())
    base, *_ = np.linalg.lstsq(X[:, :3], r, rcond=None)
    ssr0 = float(((r - X[:, :3] @ base) ** 2).sum())
    dof = max(len(r) - 4, 1)
    cov = ssr / dof * np.linalg.pinv(X.T @ X)
    return {"gamma": float(coef[3]), "se": float(math.sqrt(max(cov[3, 3], 0.0))),
            "share": float(1 - ssr / ssr0) if ssr0 > 0 else 0.0}


def _interaction_of(frame, log_resid) -> dict | None:
    """:func:`residual_interaction` of a fit's rows with the centre it is measured about (log10 N, log10 D
    means), or None when the table is too small to tell (under 8 rows, or under 3 sizes or token counts)."""
    if len(frame) < 8 or frame["N"].nunique() < 3 or frame["D"].nunique() < 3:
        return None
    return {**residual_interaction(frame["N"], frame["D"], log_resid),
            "log10_N_centre": float(np.log10(frame["N"]).mean()), "log10_D_centre": float(np.log10(frame["D"]).mean())}


def interaction_warned(bend: dict | None) -> bool:
    """Whether a residual bend is large enough (> ``INTERACTION_WARN``) and sure enough (3 se) to warn of."""
    return bool(bend) and abs(bend["gamma"]) > INTERACTION_WARN and abs(bend["gamma"]) >= 3 * bend["se"]


def _diagnose_interaction(form: Form, bend: dict | None) -> list[str]:
    if not interaction_warned(bend):
        return []
    g = bend["gamma"]
    return [f"nd_interaction: the residuals bend with N x D ({g:+.3f} log loss per decade of N per decade of D, "
            f"se {bend['se']:.3f}; {bend['share']:.0%} of the variance the other terms leave), a term the {form.name} "
            f"form lacks: one decade beyond the data in both N and D the loss would run ~{abs(g):.1%} "
            f"{'below' if g < 0 else 'above'} this fit's prediction; a form with an N-D term (farseer, given "
            "enough runs) can follow it"]


EDGE_CHECK_MULTIPLES = (1.0, 10.0, 100.0, 1000.0)  # budgets (x the largest fitted) a fit checks for an optimum


def _diagnose_edge(law: Form, params: dict, c_max: float) -> list[str]:
    """``no_interior_optimum`` where the law's isoFLOP loss has no minimum at the largest fitted budget
    or up to 1000x beyond it (the allocation would run to its search's edge)."""
    if law.variables:
        return []
    C = c_max * np.asarray(EDGE_CHECK_MULTIPLES)
    N, _, edge = law.optimal(C, params, with_edge=True)
    if not edge.any():
        return []
    k = int(np.argmax(edge))
    return [f"no_interior_optimum: from {EDGE_CHECK_MULTIPLES[k]:g}x the largest fitted budget ({C[k]:.3g} FLOPs) "
            f"the law's loss keeps falling along the isoFLOP line to the search's edge ({_edge_cause(law, params, float(N[k]))}): "
            "plans there have no compute-optimal N and are refused"]


def _diagnose_samples(form: Form, boot, frame) -> list[str]:
    """Identifiability read off the data's shape and the bootstrap: too few distinct sizes or token
    counts for the form, and exponents that trade off (bootstrap correlation near +-1)."""
    out = []
    from .selection import MIN_SIZES

    need = MIN_SIZES.get(form.name, 3)
    if frame["N"].nunique() < need:
        out.append(f"too_few_sizes: {frame['N'].nunique()} distinct model sizes; the {form.name} form needs "
                   f"{need} to place its N terms")
    if boot is not None and {"alpha", "beta"} <= set(form.param_names):
        j, k = form.param_names.index("alpha"), form.param_names.index("beta")
        ok = np.isfinite(boot[:, j]) & np.isfinite(boot[:, k])
        if ok.sum() > 10 and np.std(boot[ok, j]) > 0 and np.std(boot[ok, k]) > 0:
            r = float(np.corrcoef(boot[ok, j], boot[ok, k])[0, 1])
            if abs(r) > 0.95:
                out.append(f"exponent_tradeoff: alpha and beta trade off (bootstrap correlation {r:+.2f}): the "
                           "data pin a combination of them, not each; N_opt's exponent beta/(alpha+beta) is loose")
    return out


def _diagnose_isoflops(form: Form, params: dict, frame, groups) -> list[str]:
    """IsoFLOP checks where the table has isoFLOP budgets (3+ sizes at one budget): curves too flat
    or off-grid to place their minimum, and the Approach 2 bias of the sampled grid (a parabola fitted
    to the law's own predictions on the grid, against the law's optimum: alpha != beta makes the
    curve asymmetric in log N, and an off-centre grid turns that into a shifted vertex)."""
    from .isoflop import vertex_check

    if form.variables:
        return []
    checks, biases = {}, []
    for g in np.unique(groups):
        sub = frame[groups == g]
        if sub["N"].nunique() < 3:
            continue
        ln = np.log(sub["N"].to_numpy())
        _, check = vertex_check(ln, sub["loss"].to_numpy())
        checks.setdefault(check, []).append(float(sub["C"].median()))
        C = float(np.exp(np.log(sub["C"]).mean()))
        with np.errstate(all="ignore"):
            model = form(np.exp(ln), C / (6.0 * np.exp(ln)), params)
            v = vertex_check(ln, np.asarray(model, float))[0]
            n_law = float(form.optimal(C, params)[0][0])
        if v is not None and np.isfinite(n_law) and n_law > 0:
            biases.append((C, math.exp(v[0]) / n_law - 1.0))
    out = []
    for check, what in (("flat", "are too flat to place their minimum (they rise less than twice their scatter)"),
                        ("off_grid", "have their minimum outside the sampled sizes (the parabola extrapolates)")):
        if checks.get(check):
            out.append(f"{check}_isoflops: {len(checks[check])} isoFLOP curve(s) {what}: budgets "
                       + ", ".join(f"{c:.3g}" for c in checks[check]))
    worst = max(biases, key=lambda b: abs(b[1]), default=None)
    if worst is not None and abs(worst[1]) > 0.1:
        out.append(f"approach2_bias: on the sampled grid at {worst[0]:.3g} FLOPs an isoFLOP parabola puts the "
                   f"optimum {worst[1]:+.0%} off the law's own (alpha != beta or an off-centre grid): read isoFLOP "
                   "vertices from this table with that bias")
    return out
