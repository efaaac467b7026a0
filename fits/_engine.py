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

__all__ = ["FitData", "huber", "robust_fit", "objective", "batched_refits", "STATUSES"]


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
