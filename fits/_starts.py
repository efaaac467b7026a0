"""Start points for the fitting engine (:mod:`fits._engine`): variable projection over the exponent
grid for Chinchilla-type forms (the linear solve and the exact Huber profile, their basins and
valleys), and the start rules of beta_n, Kaplan and Farseer."""
from __future__ import annotations

import numpy as np

from ._engine import FitData, batched_refits, huber, robust_fit
from .forms import Form

__all__ = ["start_points", "varpro_starts", "beta_n_starts", "farseer_starts"]


def _basins(cost: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Grid nodes that are local minima of ``cost`` over their 8 neighbours, best first (at most k);
    the global best node always comes first."""
    padded = np.pad(cost, 1, constant_values=np.inf)
    G1, G2 = cost.shape
    is_min = np.ones_like(cost, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= cost <= padded[1 + di:1 + di + G1, 1 + dj:1 + dj + G2]
    is_min &= np.isfinite(cost)
    nodes = np.flatnonzero(is_min.ravel())
    nodes = nodes[np.argsort(cost.ravel()[nodes])][:k]
    best = int(np.argmin(cost))
    out = [best] + [int(n) for n in nodes if n != best]
    return [np.unravel_index(n, cost.shape) for n in out[:k]]


def _nnls3(M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Non-negative least squares for every node at once: minimise c'Mc - 2 c'rhs over c >= 0
    for (..., 3, 3) Gram matrices, by enumerating the 7 active sets (exact for a convex QP:
    the best feasible solution of the unconstrained subproblems)."""
    shape = rhs.shape[:-1]
    best = np.zeros(shape + (3,))
    best_val = np.zeros(shape)  # c = 0 is always feasible, with value 0
    for subset in ((0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,)):
        S = list(subset)
        with np.errstate(all="ignore"):
            try:
                c = np.linalg.solve(M[..., S, :][..., :, S], rhs[..., S, None])[..., 0]
            except np.linalg.LinAlgError:
                continue
        ok = np.all(np.isfinite(c) & (c >= 0), axis=-1)
        val = -np.einsum("...i,...i->...", c, rhs[..., S])  # c'Mc - 2c'rhs at the subproblem optimum
        better = ok & (val < best_val)
        if better.any():
            full = np.zeros(shape + (3,))
            full[..., S] = c
            best = np.where(better[..., None], full, best)
            best_val = np.where(better, val, best_val)
    return best


def varpro_starts(data: FitData, delta: float, k: int = 8,
                  grid: np.ndarray | None = None, beta_shift: np.ndarray | None = None) -> list[np.ndarray]:
    """Chinchilla starts (a, b, e, alpha, beta), one per distinct basin of a grid over (alpha, beta).

    At each node (E, A, B) solve a weighted least-squares problem (weights 1/L make linear
    residuals approximate log residuals) with non-negativity; nodes are scored by the true
    Huber objective in log space, and the best ``k`` local minima of that map are returned.
    ``beta_shift`` (one value per row) adds to the data exponent row by row (beta_n's kappa x at a
    fixed kappa); with it, only the linear solve's map is searched.
    """
    # geometric in the exponents: small exponents (a term that acts almost as a constant, trading
    # off against E) form their own narrow basins on small tables
    grid = np.geomspace(0.003, 3.0, 53) if grid is None else grid
    logN, logD, logL = data["logN"], data["logD"], data["logL"]
    L = np.exp(logL)
    # centre N and D so that N^-alpha stays O(1) over the grid; A = A' * Nref^alpha
    nref, dref = np.mean(logN), np.mean(logD)
    Xn = np.exp(-np.outer(grid, logN - nref))  # (G, n)
    shift = 0.0 if beta_shift is None else np.asarray(beta_shift, float) * logD
    Xd = np.exp(-np.outer(grid, logD - dref) - shift)  # D^-(beta + beta_shift) D_ref^beta
    w2 = 1.0 / L**2
    G = len(grid)
    # Gram matrices for every (alpha_i, beta_j): basis [1, Xn_i, Xd_j]
    s11 = np.sum(w2)
    s1n, s1d = Xn @ w2, Xd @ w2
    snn, sdd = (Xn**2) @ w2, (Xd**2) @ w2
    snd = (Xn * w2) @ Xd.T  # (G, G)
    y1, yn, yd = np.sum(w2 * L), Xn @ (w2 * L), Xd @ (w2 * L)
    M = np.empty((G, G, 3, 3))
    M[..., 0, 0] = s11
    M[..., 0, 1] = M[..., 1, 0] = s1n[:, None]
    M[..., 0, 2] = M[..., 2, 0] = s1d[None, :]
    M[..., 1, 1] = snn[:, None]
    M[..., 2, 2] = sdd[None, :]
    M[..., 1, 2] = M[..., 2, 1] = snd
    rhs = np.stack(np.broadcast_arrays(y1, yn[:, None], yd[None, :]), axis=-1)
    coef = _nnls3(M + 1e-12 * np.eye(3) * s11, rhs)
    pred = coef[..., 0, None] + coef[..., 1, None] * Xn[:, None, :] + coef[..., 2, None] * Xd[None, :, :]
    with np.errstate(all="ignore"):
        cost = huber(np.log(np.maximum(pred, 1e-300)) - logL, delta).sum(axis=-1)
    cost[~np.isfinite(cost)] = np.inf
    G = len(grid)
    # a term the linear solve zeroes starts small but visible (1% of the loss at the centre of the
    # data): in log space a term at 0 has no gradient and could never come back
    floor = 1e-2 * float(L.min())
    starts = [(i, j, np.array([np.log(max(coef[i, j, 1], floor)) + grid[i] * nref,
                               np.log(max(coef[i, j, 2], floor)) + grid[j] * dref,
                               np.log(max(coef[i, j, 0], floor)), grid[i], grid[j]]))
              for i, j in _basins(cost, k)]
    # the linear solve approximates the log objective; where it misleads (small noisy tables,
    # a term trading off against E) the map's basins are not the objective's. So on small tables
    # the exact Huber profile is mapped too: Newton steps in (log E, log A, log B) at all nodes at
    # once, and its basins and valleys join the starts.
    if len(logL) > 100 or beta_shift is not None:  # on large tables the linear map is accurate, the profile costly
        return [s for _, _, s in starts]
    sub = np.arange(G)
    Gs = len(sub)
    c3 = np.maximum(coef[np.ix_(sub, sub)], 0.0)
    E_, Ap, Bp = (np.maximum(c3[..., m], floor).ravel() for m in range(3))
    al, be = np.repeat(grid[sub], Gs), np.tile(grid[sub], Gs)
    theta = np.column_stack([np.log(E_), np.log(Ap) + al * nref, np.log(Bp) + be * dref, al, be])
    n = len(logL)
    from .forms import get_form
    theta, prof, _ = batched_refits(get_form("chinchilla"), data, np.tile(np.arange(n), (Gs * Gs, 1)),
                                    np.ones((Gs * Gs, n)), theta, delta,
                                    np.array([True, True, True, False, False]),
                                    max_iter=30, first_order_test=False)
    prof = np.where(np.isfinite(prof), prof, np.inf).reshape(Gs, Gs)
    theta = theta.reshape(Gs, Gs, 5)
    seen = {(i, j) for i, j, _ in starts}
    for i, j in _basins(prof, k) + _valleys(prof):
        if (sub[i], sub[j]) not in seen:
            seen.add((sub[i], sub[j]))
            t = theta[i, j]
            starts.append((sub[i], sub[j], np.array([t[1], t[2], t[0], t[3], t[4]])))
    return [s for _, _, s in starts]


def _valleys(cost: np.ndarray) -> list[tuple[int, int]]:
    """Nodes at the local minima of the map's 1-D profiles (the best alpha for each beta, the
    best beta for each alpha): a long valley running across the grid has no 2-D local minimum
    on the grid, but its floor is a local minimum of these profiles."""
    out = []
    for axis in (0, 1):
        best = np.argmin(cost, axis=axis)       # for each column (row), the best row (column)
        prof = np.min(cost, axis=axis)
        padded = np.pad(prof, 1, constant_values=np.inf)
        for m in np.flatnonzero((prof <= padded[:-2]) & (prof <= padded[2:]) & np.isfinite(prof)):
            out.append((int(best[m]), int(m)) if axis == 0 else (int(m), int(best[m])))
    return out


def start_points(form: Form, data: FitData, delta: float) -> list[np.ndarray]:
    """Candidate optimiser vectors for ``form`` on ``data``."""
    names = form.param_names
    if form.name == "beta_n":
        return beta_n_starts(form, data, delta)
    if set(("E", "A", "B", "alpha", "beta")) <= set(names):
        out = []
        for th in varpro_starts(data, delta):
            p = {**_varpro_params(th), **form.defaults}
            out.append(form.to_theta({n: p[n] for n in names}))
        return out
    if form.name == "kaplan":
        mn, md = np.mean(data["logN"]), np.mean(data["logD"])
        cands = [form.to_theta({"N_c": np.exp(mn + sn), "D_c": np.exp(md + sd),
                                "alpha_N": an, "alpha_D": ad})
                 for sn in (3.0, 10.0, 25.0) for sd in (3.0, 10.0, 25.0)
                 for an in (0.05, 0.15, 0.4) for ad in (0.05, 0.15, 0.4)]
        costs = [huber(form.log_predict(t, data.arrays) - data["logL"], delta).sum() for t in cands]
        costs = np.where(np.isfinite(costs), costs, np.inf)
        return [cands[i] for i in np.argsort(costs)[:12]]  # six let two folds of a Kaplan table end at D_c = 0
    if form.name == "farseer":
        return farseer_starts(data, delta)
    raise NotImplementedError(f"no start-point rule for form {form.name!r}; register one")


def _varpro_params(th: np.ndarray) -> dict:
    """Chinchilla's parameters from a :func:`varpro_starts` vector (log A, log B, log E, alpha, beta)."""
    return {"A": np.exp(th[0]), "B": np.exp(th[1]), "E": np.exp(th[2]), "alpha": th[3], "beta": th[4]}


def beta_n_starts(form: Form, data: FitData, delta: float) -> list[np.ndarray]:
    """beta_n starts: Chinchilla's map at kappa = 0, and the map redone at a few fixed kappas (the data
    exponent shifted by kappa log10(N / 1e9) row by row): a bend can otherwise hide in A and alpha."""
    from .forms import BETA_N_REF

    x = (data["logN"] - np.log(BETA_N_REF)) / np.log(10.0)
    out = []
    for kappa in (0.0, -0.06, -0.02, 0.02, 0.06):
        starts = varpro_starts(data, delta) if kappa == 0 else varpro_starts(data, delta, k=3, beta_shift=kappa * x)
        out += [form.to_theta({**_varpro_params(th), "kappa": kappa}) for th in starts]
    return out


def _box_cox_fit(ln: np.ndarray, y: np.ndarray, lo: float = -1.5, hi: float = 1.5):
    """Best (c0, c1, q) of y ~ c0 + c1 (n^q - 1)/q over a grid of q (linear least squares at each node)."""
    from .forms import box_cox

    best = (float(np.mean(y)), 0.0, 0.0, np.inf)
    for q in np.linspace(lo, hi, 61):
        X = np.column_stack([np.ones_like(ln), box_cox(np.exp(ln), q)])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        sse = float(np.sum((y - X @ coef) ** 2))
        if sse < best[3] - 1e-12 * abs(best[3]):
            best = (float(coef[0]), float(coef[1]), float(q), sse)
    return best[:3]


def farseer_starts(data: FitData, delta: float) -> list[np.ndarray]:
    """Farseer starts (f0, f1, f2, g0, g1, g2, h0, h1, h2).

    From the Chinchilla fit: a floor matched to E + A N^-alpha at N = 1e9 in value and log-log slope
    (curvature -alpha, or 0: a pure power law), with a constant data term B D^-beta; and, where at
    least three model sizes carry four or more token counts each, Farseer's own route: a curve
    L = E_N + B_N D^-beta_N per size, then log E_N, log B_N and log beta_N as c0 + c1 (n^q - 1)/q.
    """
    from scipy.optimize import nnls

    from .forms import FARSEER_N_REF, get_form

    ch = get_form("chinchilla")
    opt = robust_fit(ch, data, start_points(ch, data, delta), delta)
    E, A, B, al, be = (ch.from_theta(opt.theta)[k] for k in ("E", "A", "B", "alpha", "beta"))
    u = A * FARSEER_N_REF ** -al
    starts = [np.array([np.log(E + u), -al * u / (E + u), q, np.log(B), 0.0, 0.0, np.log(be), 0.0, 0.0])
              for q in (-al, 0.0)]
    logN, logD, L = data["logN"], data["logD"], np.exp(data["logL"])
    rows = []
    for n in np.unique(logN):
        m = logN == n
        if len(np.unique(logD[m])) < 4:
            continue
        d, y = logD[m], L[m]
        best = None
        for b in np.geomspace(0.02, 2.0, 50):
            X = np.column_stack([np.ones_like(d), np.exp(-b * (d - d.mean()))]) / y[:, None]
            coef, _ = nnls(X, np.ones_like(y))  # weights 1/L: relative residuals
            r = np.sum((X @ coef - 1.0) ** 2)
            if coef.min() > 0 and (best is None or r < best[0]):
                best = (r, coef[0], coef[1] * np.exp(b * d.mean()), b)
        if best is not None:
            rows.append((n, np.log(best[1]), np.log(best[2]), np.log(best[3])))
    if len(rows) >= 3:
        n, lf, lg, lh = (np.array(c) for c in zip(*rows))
        n = n - np.log(FARSEER_N_REF)
        (f0, f1, f2), (g0, g1, g2), (h0, h1, h2) = (_box_cox_fit(n, v, hi=0.0) for v in (lf, lg, lh))
        starts.append(np.array([f0, f1, f2, g0, g1, g2, h0, h1, h2]))
    return starts


