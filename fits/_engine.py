"""The fitting engine: variable-projection starts and a robust (Huber) polish in log space.

Objective (Besiroglu et al. 2024, after Hoffmann et al. 2022): the sum over points of
Huber_delta(log L_pred - log L_obs). For the Chinchilla form and fixed exponents
(alpha, beta) the model is linear in (E, A, B), so a grid over the exponents with a
non-negative linear solve at each node finds the basin of the global optimum; a
trust-region polish (scipy ``least_squares`` with ``loss="huber"``, which minimises exactly
this objective) then converges in a handful of iterations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from .forms import Form

__all__ = ["FitData", "huber", "start_points", "robust_fit"]


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

def varpro_starts(data: FitData, delta: float, k: int = 4,
                  grid: np.ndarray | None = None) -> list[np.ndarray]:
    """Best ``k`` Chinchilla starts (a, b, e, alpha, beta) from a grid over (alpha, beta).

    At each node (E, A, B) solve a weighted least-squares problem (weights 1/L make linear
    residuals approximate log residuals) with non-negativity; nodes are ranked by the true
    Huber objective in log space.
    """
    grid = np.linspace(0.02, 2.0, 45) if grid is None else grid
    logN, logD, logL = data["logN"], data["logD"], data["logL"]
    L = np.exp(logL)
    # centre N and D so that N^-alpha stays O(1) over the grid; A = A' * Nref^alpha
    nref, dref = np.mean(logN), np.mean(logD)
    Xn = np.exp(-np.outer(grid, logN - nref))  # (G, n)
    Xd = np.exp(-np.outer(grid, logD - dref))
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
    with np.errstate(all="ignore"):
        try:
            coef = np.linalg.solve(M + 1e-12 * np.eye(3) * s11, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            coef = np.full((G, G, 3), -1.0)
    bad = ~np.all(np.isfinite(coef) & (coef >= 0), axis=-1)
    sw = 1.0 / L
    for i, j in zip(*np.nonzero(bad)):
        X = np.column_stack([np.ones_like(L), Xn[i], Xd[j]]) * sw[:, None]
        coef[i, j], _ = nnls(X, L * sw)
    pred = coef[..., 0, None] + coef[..., 1, None] * Xn[:, None, :] + coef[..., 2, None] * Xd[None, :, :]
    with np.errstate(all="ignore"):
        r = np.log(np.maximum(pred, 1e-300)) - logL
    cost = huber(r, delta).sum(axis=-1)
    cost[~np.isfinite(cost)] = np.inf
    starts = []
    for flat in np.argsort(cost, axis=None)[:k]:
        i, j = np.unravel_index(flat, cost.shape)
        E, Ap, Bp = np.maximum(coef[i, j], 1e-8)
        alpha, beta = grid[i], grid[j]
        starts.append(np.array([np.log(Ap) + alpha * nref, np.log(Bp) + beta * dref,
                                np.log(E), alpha, beta]))
    return starts


def start_points(form: Form, data: FitData, delta: float) -> list[np.ndarray]:
    """Candidate optimiser vectors for ``form`` on ``data``."""
    names = form.param_names
    if set(("E", "A", "B", "alpha", "beta")) <= set(names):
        base = varpro_starts(data, delta)
        out = []
        for th in base:
            p = dict(zip(("A", "B", "E", "alpha", "beta"), (np.exp(th[0]), np.exp(th[1]),
                                                           np.exp(th[2]), th[3], th[4])))
            p.update({k: v for k, v in form.defaults.items() if k not in p})
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
        return [cands[i] for i in np.argsort(costs)[:6]]
    raise NotImplementedError(f"no start-point rule for form {form.name!r}; register one")


# --- polish ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Optimum:
    theta: np.ndarray
    cost: float
    success: bool
    message: str
    nfev: int


def _gn_polish(form, data: FitData, theta0, delta, free, lo, hi, max_iter=60):
    """Damped Gauss-Newton on the Huber objective for warm-started bootstrap refits.

    Gradient J^T psi(r) with psi = clip(r, -delta, delta); curvature from the quadratic
    (inlier) points only, which is the exact Hessian of the Huber part up to second-order model
    terms, so convergence is fast once the inlier set settles. About 10x less overhead per
    iteration than ``least_squares``; returns None when it stalls, so callers fall back.
    """
    theta = np.asarray(theta0, float).copy()
    logL = data["logL"]

    def cost_of(th):
        r = form.log_predict(th, data.arrays) - logL
        return huber(r, delta).sum(), r

    cost, r = cost_of(theta)
    lam = 1e-6
    for it in range(max_iter):
        J = form.log_jacobian(theta, data.arrays)[:, free]
        inl = np.abs(r) <= delta
        g = J.T @ np.clip(r, -delta, delta)
        H = J[inl].T @ J[inl]
        d = np.diag(H) + 1e-12 * max(1.0, np.max(np.diag(H)))
        for _ in range(20):
            try:
                step = np.linalg.solve(H + lam * np.diag(d), -g)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            cand = theta.copy()
            cand[free] = np.clip(theta[free] + step, lo, hi)
            c_new, r_new = cost_of(cand)
            if np.isfinite(c_new) and c_new <= cost:
                break
            lam *= 10.0
        else:
            return None
        done = cost - c_new <= 1e-12 * cost or np.max(np.abs(cand - theta)) < 1e-10
        theta, cost, r = cand, c_new, r_new
        lam = max(lam / 10.0, 1e-9)
        if done:
            return Optimum(theta, float(cost), True, "Gauss-Newton converged", it + 1)
    return None


def robust_fit(form: Form, data: FitData, starts: list[np.ndarray], delta: float,
               fixed: dict | None = None) -> Optimum:
    """Polish each start on the Huber objective in log space; return the best optimum.

    Forms with an analytic Jacobian use the lean Gauss-Newton polish first; any start it
    cannot finish (and every start of other forms) goes to scipy ``least_squares`` with
    ``loss="huber"``, which minimises the same objective. ``fixed`` maps parameter names to
    values held constant.
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

    jac = (lambda x: jac_full(full(x), data.arrays)[:, free]) if jac_full else "2-point"

    def polish(x0) -> Optimum:
        if jac_full is not None:
            opt = _gn_polish(form, data, full(x0), delta, free, lo, hi)
            if opt is not None:
                return opt
        try:
            with np.errstate(all="ignore"):  # trial points far off can overflow; they are rejected
                res = least_squares(resid, x0, jac=jac, bounds=(lo, hi), loss="huber", f_scale=delta,
                                    method="trf", x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-10,
                                    max_nfev=2000)
        except ValueError as exc:  # non-finite start, etc.
            return Optimum(full(x0), np.inf, False, str(exc), 0)
        cost = float(huber(res.fun, delta).sum())
        return Optimum(full(res.x), cost, bool(res.success), str(res.message), int(res.nfev))

    best = None
    for th0 in starts:
        cand = polish(np.clip(np.asarray(th0, float)[free], lo + 1e-9, hi - 1e-9))
        if best is None or cand.cost < best.cost:
            best = cand
    return best
