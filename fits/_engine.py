"""The fitting engine: variable-projection starts and a robust (Huber) polish in log space.

Objective (Besiroglu et al. 2024, after Hoffmann et al. 2022): the sum over points of
Huber_delta(log L_pred - log L_obs). For the Chinchilla form and fixed exponents
(alpha, beta) the model is linear in (E, A, B), so a grid over the exponents with a
non-negative linear solve at each node maps the objective over the exponents; a second map, the
exact Huber profile (a few Newton steps in (E, A, B) at every node, all nodes at once), catches
the basins the linear approximation hides on small noisy tables. Every distinct basin of both
maps (their local minima) gets a short damped-Newton pass on the exact objective, the best four
a full polish, and L-BFGS-B follows a flat valley where Newton steps shrink. A fit is called
converged only when a first-order test passes (the Newton decrement, with parameters at a bound
held, below ``1e-10`` of the objective; no slope along flat directions); otherwise its status
says why (see :data:`STATUSES`). Bootstrap refits run as one vectorised batch. scipy
``least_squares`` with ``loss="huber"`` (the same objective) serves forms without an analytic
Jacobian.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from .forms import STATUSES, Form

__all__ = ["FitData", "huber", "start_points", "robust_fit", "objective", "batched_refits", "STATUSES"]


@dataclass(frozen=True)
class FitData:
    """Arrays the optimiser reads: N, D, their logs, extra variables and log loss."""

    arrays: dict

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, variables=()) -> "FitData":
        a = {"N": frame["N"].to_numpy(float), "D": frame["D"].to_numpy(float)}
        a["logN"], a["logD"] = np.log(a["N"]), np.log(a["D"])
        for v in variables:
            a[v] = frame[v].to_numpy(float)
        a["logL"] = np.log(frame["loss"].to_numpy(float))
        return cls(a)

    def take(self, idx: np.ndarray) -> "FitData":
        return FitData({k: v[idx] for k, v in self.arrays.items()})

    def __getitem__(self, key):
        return self.arrays[key]

    def __len__(self):
        return len(self.arrays["logL"])


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r^2/2 for |r| <= delta, delta (|r| - delta/2) beyond (scipy.special.huber)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


# --- start points ---------------------------------------------------------------------------

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


# --- polish ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    cost: float
    success: bool
    message: str
    nfev: int
    status: str = "converged"
    grad_norm: float = float("nan")


def objective(form: Form, theta, data: FitData, delta: float) -> float:
    """The fitted objective: sum over points of Huber_delta(log L_pred - log L_obs)."""
    r = form.log_predict(np.asarray(theta, float), data.arrays) - data["logL"]
    c = float(huber(r, delta).sum())
    return c if np.isfinite(c) else np.inf


# objective per point below which it is exact to rounding (log residuals ~1e-10): the relative
# first-order test is taken against this floor when the data fit exactly
_COST_FLOOR = 1e-20


def _derivatives(form, theta, data, delta, free):
    """(cost, residuals, gradient, Hessian) of the Huber objective in the free coordinates.

    The Hessian is exact where the form gives the curvature of its log prediction
    (``log_curvature``): J^T diag(psi') J + sum_i psi_i Hess(log L_i); otherwise it is the
    Gauss-Newton matrix with iteratively-reweighted outliers (a majoriser of the objective).
    """
    r = form.log_predict(theta, data.arrays) - data["logL"]
    cost = float(huber(r, delta).sum())
    J = form.log_jacobian(theta, data.arrays)
    psi = np.clip(r, -delta, delta)
    g = J.T @ psi
    inl = np.abs(r) <= delta
    curv = getattr(form, "log_curvature", None)
    if curv is not None:
        H = (J[inl].T @ J[inl]) + curv(theta, data.arrays, psi)
    else:
        w = np.where(inl, 1.0, delta / np.maximum(np.abs(r), delta))
        H = (J * w[:, None]).T @ J
    G = J.T @ J  # Gauss-Newton metric: the (affine-invariant) damping of the polish
    return cost, r, g[free], H[np.ix_(free, free)], G[np.ix_(free, free)]


def _first_order(g: np.ndarray, H: np.ndarray, cost_ref: float, rtol: float):
    """The first-order optimality test on the free, not bound-held coordinates.

    Passes when H has no negative curvature, the Newton decrement over its curved directions,
    0.5 sum (v.g)^2 / lambda, is below ``rtol`` of the objective, and along flat directions
    (eigenvalue below 1e-10 of the largest: a term the data do not see) the slope is below 1e-9
    of the objective per unit step. Returns (passed, decrement, has_flat_direction).
    """
    if g.size == 0:
        return True, 0.0, False
    lam, V = np.linalg.eigh(H)
    scale = max(float(np.max(np.abs(lam))), 1e-300)
    gv = V.T @ g
    flat = np.abs(lam) <= 1e-10 * scale
    if np.any(lam < -1e-10 * scale):
        return False, np.inf, bool(flat.any())
    dec = 0.5 * float(np.sum(gv[~flat] ** 2 / lam[~flat]))
    passed = dec <= rtol * cost_ref and bool(np.all(np.abs(gv[flat]) <= 1e-9 * cost_ref))
    return passed, dec, bool(flat.any())


def _newton_polish(form, data: FitData, theta0, delta, free, lo, hi, max_iter=400, rtol=1e-10):
    """Damped (Levenberg-Marquardt) Newton on the Huber objective, projected onto the bounds.

    Stops when :func:`_first_order` passes (a first-order optimality test, not a small step);
    the status says how: converged, at_bound (a coordinate held on its bound) or not_identified
    (a flat direction), else max_iterations. The damping metric is the Gauss-Newton matrix, so
    steps do not depend on how the parameters are scaled.
    """
    theta = np.asarray(theta0, float).copy()
    x = theta[free]
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    cost, r, g, H, G = _derivatives(form, theta, data, delta, free)
    if not np.isfinite(cost):
        return Optimum(theta, np.inf, False, "objective not finite at the start", 1, "max_iterations")
    lam = 1e-3
    nfev = 1
    decrement = np.inf
    for it in range(max_iter):
        at_lo = (x <= lo + 1e-9 * span) & (g > 0)
        at_hi = (x >= hi - 1e-9 * span) & (g < 0)
        act = ~(at_lo | at_hi)
        ga, Ha = g[act], H[np.ix_(act, act)]
        passed, decrement, flat = _first_order(ga, Ha, max(cost, _COST_FLOOR * len(r)), rtol)
        if passed:
            status = "not_identified" if flat else "at_bound" if (~act).any() else "converged"
            return Optimum(theta, cost, True, f"first-order test passed (Newton decrement {decrement:.2g})",
                           nfev, status, float(np.max(np.abs(ga))) if ga.size else 0.0)
        Ga = G[np.ix_(act, act)]
        Ga = Ga + 1e-12 * np.trace(Ga) * np.eye(len(Ga))
        improved = False
        for _ in range(30):
            try:
                step_a = np.linalg.solve(Ha + lam * Ga, -ga)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            step = np.zeros_like(x)
            step[act] = step_a
            x_new = np.clip(x + step, lo, hi)
            cand = theta.copy()
            cand[free] = x_new
            c_new, r_new, g_new, H_new, G_new = _derivatives(form, cand, data, delta, free)
            nfev += 1
            if np.isfinite(c_new) and c_new <= cost:
                improved = True
                break
            lam *= 10.0
        if not improved:
            break
        theta, x, cost, r, g, H, G = cand, x_new, c_new, r_new, g_new, H_new, G_new
        lam = max(lam / 10.0, 1e-12)
    return Optimum(theta, cost, False, f"first-order test not met (Newton decrement {decrement:.2g})",
                   nfev, "max_iterations", float(np.max(np.abs(g))))


def _identified(form, theta, data, free, status) -> str:
    """Downgrade a converged status to not_identified when the Jacobian's columns are nearly
    collinear (two parameters the data cannot tell apart), which the first-order test allows."""
    if status != "converged" or getattr(form, "log_jacobian", None) is None:
        return status
    J = form.log_jacobian(theta, data.arrays)[:, free]
    sv = np.linalg.svd(J / np.maximum(np.linalg.norm(J, axis=0), 1e-300), compute_uv=False)
    return "not_identified" if sv[-1] < 1e-6 * sv[0] else status


def robust_fit(form: Form, data: FitData, starts: list[np.ndarray], delta: float,
               fixed: dict | None = None) -> Optimum:
    """Polish each start on the Huber objective in log space; return the best optimum.

    Forms with an analytic Jacobian use the Newton polish on every basin (a short pass, then a
    full polish of the best four), and L-BFGS-B follows the best one along a flat valley when
    Newton could not finish; other forms go to scipy ``least_squares`` with ``loss="huber"``
    (the same objective). ``fixed`` maps parameter names to values held constant.
    """
    names = form.param_names
    fixed = fixed or {}
    free = np.array([n not in fixed for n in names])
    fixed_theta = form.to_theta({n: fixed.get(n, 1.0) for n in names})
    lo, hi = form.theta_bounds()
    lo, hi = lo[free], hi[free]
    jac_full = getattr(form, "log_jacobian", None)
    logL = data["logL"]

    def full(x):
        th = fixed_theta.copy()
        th[free] = x
        return th

    def resid(x):
        r = form.log_predict(full(x), data.arrays) - logL
        return np.where(np.isfinite(r), r, 1e3)

    def polish(x0) -> Optimum:
        if jac_full is not None:  # what Newton cannot finish, _valley_finish takes over below
            return _newton_polish(form, data, full(x0), delta, free, lo, hi)
        try:
            with np.errstate(all="ignore"):  # trial points far off can overflow; they are rejected
                res = least_squares(resid, x0, jac="2-point", bounds=(lo, hi), loss="huber", f_scale=delta,
                                    method="trf", x_scale="jac", xtol=1e-15, ftol=1e-15, gtol=1e-12,
                                    max_nfev=2000)
        except ValueError as exc:  # non-finite start, etc.
            return Optimum(full(x0), np.inf, False, str(exc), 0, "max_iterations")
        cost = float(huber(res.fun, delta).sum())
        span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        at_bound = bool(np.any((res.x <= lo + 1e-6 * span) | (res.x >= hi - 1e-6 * span)))
        status = ("at_bound" if at_bound else "converged") if res.success else "max_iterations"
        return Optimum(full(res.x), cost, bool(res.success), str(res.message), int(res.nfev), status,
                       float(res.optimality))

    starts = [np.clip(np.asarray(th0, float)[free], lo + 1e-9, hi - 1e-9) for th0 in starts]
    if jac_full is not None and len(starts) > 2:
        # a short pass over every basin, then a full polish of the four best
        quick = [_newton_polish(form, data, full(x0), delta, free, lo, hi, max_iter=100) for x0 in starts]
        order = np.argsort([q.cost for q in quick])[:4]
        done = [quick[i] for i in order if quick[i].status != "max_iterations"]
        starts = [quick[i].theta[free] for i in order if quick[i].status == "max_iterations"]
    else:
        done = []
    for x0 in starts:
        done.append(polish(x0))
    best = min(done, key=lambda o: o.cost)
    if jac_full is not None and best.status != "converged":
        # a degenerate fit (a term the data barely see) ends in a flat valley: walk its ends too
        for x0 in _valley_ends(form, data, best.theta, free, lo, hi):
            cand = _newton_polish(form, data, full(x0), delta, free, lo, hi, max_iter=150)
            if cand.cost < best.cost:
                best = cand
        best = _valley_finish(form, data, best, delta, free, lo, hi)
    return replace(best, status=_identified(form, best.theta, data, free, best.status))


def _valley_ends(form, data, theta, free, lo, hi) -> list[np.ndarray]:
    """Starts at the ends of the flat valleys of a Chinchilla fit: E on its floor, and each
    power-law term with its exponent near 0 or at its bound, its coefficient rescaled so that the
    term keeps its value at the centre of the data."""
    if form.name != "chinchilla":
        return []
    mN, mD = float(np.mean(data["logN"])), float(np.mean(data["logD"]))
    x = theta[free]
    ends = []
    names = [n for n, f in zip(form.param_names, free) if f]
    for ex, co, m in (("alpha", "A", mN), ("beta", "B", mD)):
        if ex not in names or co not in names:
            continue
        i, j = names.index(ex), names.index(co)
        for e in (lo[i] + 1e-3, 0.5 * (lo[i] + hi[i]), hi[i] - 1e-3):
            y = x.copy()
            y[j] = x[j] + (e - x[i]) * m  # log coef - exponent * log centre stays the same
            y[i] = e
            ends.append(y)
    if "E" in names:
        y = x.copy()
        y[names.index("E")] = lo[names.index("E")] + 1e-6
        ends.append(y)
    return [np.clip(y, lo, hi) for y in ends]


def _valley_finish(form, data, opt: Optimum, delta, free, lo, hi) -> Optimum:
    """Follow a flat valley (a term the data barely see, a parameter drifting to its bound) with
    L-BFGS-B on the same objective, where Newton steps shrink; keep it only if it is lower, and
    re-apply the first-order test there."""
    from scipy.optimize import minimize

    theta = opt.theta.copy()
    logL = data["logL"]
    scale = 1.0 / max(opt.cost, 1e-300)  # objective scaled to ~1, so tolerances are relative

    def f(x):
        th = theta.copy()
        th[free] = x
        r = form.log_predict(th, data.arrays) - logL
        c = float(huber(r, delta).sum())
        if not np.isfinite(c):
            return 1e300, np.zeros_like(x)
        return c * scale, scale * (form.log_jacobian(th, data.arrays)[:, free].T @ np.clip(r, -delta, delta))

    with np.errstate(all="ignore"):
        res = minimize(f, theta[free], jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                       options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20})
    res.fun = res.fun / scale
    if not res.fun < opt.cost:
        return opt
    theta[free] = res.x
    again = _newton_polish(form, data, theta, delta, free, lo, hi, max_iter=100)
    if again.cost <= res.fun:
        return again
    return Optimum(theta, float(res.fun), again.success, again.message, opt.nfev + int(res.nfev), again.status,
                   again.grad_norm)


# --- batched polish for bootstrap refits ------------------------------------------------------

def _chinchilla_batch(theta, logN, logD, logL, wt, delta):
    """Cost, gradient, Hessian and Gauss-Newton metric of the Chinchilla Huber objective for a
    batch of parameter vectors theta (B, 5) on a batch of resampled tables (B, n) whose rows
    carry weights ``wt`` (0 for padding)."""
    e, a, b, alpha, beta = (theta[:, k, None] for k in range(5))
    t = np.stack([a - alpha * logN, b - beta * logD, np.broadcast_to(e, logN.shape)])  # (3, B, n)
    m = t.max(axis=0)
    lse = m + np.log(np.exp(t - m).sum(axis=0))
    r = lse - logL
    cost = (wt * huber(r, delta)).sum(axis=1)
    w = np.exp(t - lse)
    J = np.stack([w[2], w[0], w[1], -w[0] * logN, -w[1] * logD], axis=-1)  # (B, n, 5)
    psi = wt * np.clip(r, -delta, delta)
    Jt = J.transpose(0, 2, 1)  # (B, 5, n): batched matmuls run on BLAS, einsum does not
    g = (Jt @ psi[..., None])[..., 0]
    inl = wt * (np.abs(r) <= delta)
    H = (Jt * (inl - psi)[:, None, :]) @ J
    cw0, cw1 = psi * w[0], psi * w[1]
    H[:, 0, 0] += (psi * w[2]).sum(1)
    H[:, 1, 1] += cw0.sum(1)
    H[:, 1, 3] -= (cw0 * logN).sum(1)
    H[:, 3, 3] += (cw0 * logN * logN).sum(1)
    H[:, 2, 2] += cw1.sum(1)
    H[:, 2, 4] -= (cw1 * logD).sum(1)
    H[:, 4, 4] += (cw1 * logD * logD).sum(1)
    H[:, 3, 1], H[:, 4, 2] = H[:, 1, 3], H[:, 2, 4]
    G = (Jt * wt[:, None, :]) @ J
    return cost, g, H, G


def _gauss_newton_batch(form, theta, logN, logD, logL, wt, delta):
    """Cost, gradient, Gauss-Newton Hessian (outliers reweighted) and metric of the Huber objective
    for a batch of parameter vectors (B, p) on resampled tables (B, n): forms without curvature."""
    th = theta.T[:, :, None]  # (p, B, 1): the forms' batched call
    data = {"logN": logN, "logD": logD}
    with np.errstate(all="ignore"):
        r = form.log_predict(th, data) - logL
    cost = (wt * huber(r, delta)).sum(axis=1)
    J = form.log_jacobian(th, data)  # (B, n, p)
    r = np.where(np.isfinite(r), r, 0.0)
    psi = wt * np.clip(r, -delta, delta)
    Jt = J.transpose(0, 2, 1)
    g = (Jt @ psi[..., None])[..., 0]
    w = wt * np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), delta))
    H = (Jt * w[:, None, :]) @ J
    G = (Jt * wt[:, None, :]) @ J
    return np.where(np.isfinite(cost), cost, np.inf), g, H, G


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of A x = b (B, p, p) x (B, p); singular systems get a least-squares x."""
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.array([np.linalg.lstsq(a, v, rcond=None)[0] for a, v in zip(A, b)])


def batched_refits(form: Form, data: FitData, index: np.ndarray, weight: np.ndarray, theta0,
                   delta: float, free: np.ndarray, rtol: float = 1e-8, max_iter: int = 400,
                   first_order_test: bool = True):
    """Polish many resampled tables at once from ``theta0`` (Levenberg-Marquardt Newton, the
    same first-order test as :func:`_newton_polish`, vectorised over resamples).

    ``index`` (B, n) holds each resample's row indices and ``weight`` (B, n) their weights (0
    pads resamples of whole groups to one length). Returns (theta (B, p), cost (B,),
    done (B,) bool): rows not done (no convergence in ``max_iter``) should be refitted singly.
    """
    logN, logD, logL = data["logN"][index], data["logD"][index], data["logL"][index]
    wt = np.asarray(weight, float)
    B, p = len(index), np.shape(theta0)[-1]
    lo, hi = form.theta_bounds()
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    theta0 = np.asarray(theta0, float)
    theta = np.tile(theta0, (B, 1)) if theta0.ndim == 1 else theta0.copy()
    lam = np.full(B, 1e-3)
    done = np.zeros(B, bool)
    stuck = np.zeros(B, bool)
    eye = np.eye(p)
    batch = (_chinchilla_batch if hasattr(form, "log_curvature")
             else lambda *a: _gauss_newton_batch(form, *a))
    cost, g, H, G = batch(theta, logN, logD, logL, wt, delta)
    for _ in range(max_iter):
        held = (~free)[None, :] | ((theta <= lo + 1e-9 * span) & (g > 0)) | ((theta >= hi - 1e-9 * span) & (g < 0))
        ga = np.where(held, 0.0, g)
        keep = ~held[:, :, None] & ~held[:, None, :]
        Ha = np.where(keep, H, 0.0) + held[:, :, None] * eye
        Ga = np.where(keep, G, 0.0) + held[:, :, None] * eye
        Ga = Ga + 1e-12 * np.trace(Ga, axis1=1, axis2=2)[:, None, None] * eye
        if first_order_test:  # (a fixed number of steps suffices where only the map matters)
            with np.errstate(all="ignore"):
                ev = np.linalg.eigvalsh(Ha)
                pd_ok = ev[:, 0] > 1e-13 * np.abs(ev[:, -1])
                dec = 0.5 * np.einsum("bp,bp->b", ga, _solve(np.where(pd_ok[:, None, None], Ha, eye), ga))
            done |= pd_ok & (dec <= rtol * np.maximum(cost, _COST_FLOOR * wt.sum(axis=1)))
        live = ~done & ~stuck
        if not live.any():
            break
        idx = np.flatnonzero(live)
        with np.errstate(all="ignore"):
            step = _solve(Ha[idx] + lam[idx, None, None] * Ga[idx], -ga[idx])
        cand = np.clip(theta[idx] + np.nan_to_num(step), lo, hi)
        c_new, g_new, H_new, G_new = batch(cand, logN[idx], logD[idx], logL[idx], wt[idx], delta)
        ok = np.isfinite(c_new) & (c_new <= cost[idx])
        acc = idx[ok]
        theta[acc], cost[acc], g[acc], H[acc], G[acc] = cand[ok], c_new[ok], g_new[ok], H_new[ok], G_new[ok]
        lam[acc] = np.maximum(lam[acc] / 10.0, 1e-12)
        rej = idx[~ok]
        lam[rej] *= 10.0
        stuck[rej[lam[rej] > 1e14]] = True
    return theta, cost, done
