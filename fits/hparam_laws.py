"""The laws across cells of an lr x batch sweep (:mod:`fits.hparams`): power laws through the
per-cell optima (two-stage), and the joint fit of every run near each cell's optimum to a loss bowl
whose centre follows the laws."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _log_linear(logN, logD, log_k, a_N, a_D):
    """log y = log_k + a_N log N + a_D log D (a power law in log space)."""
    return log_k + a_N * logN + a_D * logD


def _fit_law(cells: pd.DataFrame, target: str, use_N: bool, use_D: bool) -> dict:
    """Power law of ``target`` in N and/or D through lmfit (parameters, stderr, AIC)."""
    import lmfit

    model = lmfit.Model(_log_linear, independent_vars=["logN", "logD"])
    p = model.make_params(log_k=0.0, a_N=0.0, a_D=0.0)
    p["a_N"].set(vary=use_N)
    p["a_D"].set(vary=use_D)
    res = model.fit(np.log(cells[target].to_numpy()), p, logN=np.log(cells["N"].to_numpy()),
                    logD=np.log(cells["D"].to_numpy()))
    return {"log_k": res.params["log_k"].value, "a_N": res.params["a_N"].value, "a_D": res.params["a_D"].value,
            "aic": float(res.aic), "rmse": float(np.sqrt(np.mean(res.residual ** 2))) if len(cells) else float("nan")}


def _laws(cells: pd.DataFrame) -> dict:
    n_var, d_var = cells["N"].nunique() > 1, cells["D"].nunique() > 1
    lr = _fit_law(cells, "lr_opt", n_var, d_var)
    b_d = _fit_law(cells, "batch_opt", False, d_var)
    b_nd = _fit_law(cells, "batch_opt", n_var, d_var) if n_var and len(cells) > 3 else None
    return {"lr": lr, "batch": b_d, "batch_with_N": b_nd}


JOINT_WINDOW = 2  # grid steps either side of a cell's best run, in lr and batch, read by the joint fit
MIN_WINDOW = 3.0  # ... and at least this factor (irregular grids)


def _local_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each cell's runs within ``JOINT_WINDOW`` grid steps (and at least a factor ``MIN_WINDOW``, for
    irregular grids) of its best run in lr and in batch, with a ``cell`` index: near the optimum a
    smooth bowl describes the loss; far up the high-lr wall (divergence, spikes) it does not."""
    parts = []
    for _, g in runs.groupby(["N", "D"]):
        if g["lr"].nunique() < 2:
            continue
        best = g.loc[g["loss"].idxmin()]
        keep = np.ones(len(g), dtype=bool)
        for col in ("lr", "batch"):
            x = np.log(g[col].to_numpy())
            steps = np.diff(np.unique(x))
            half = max(JOINT_WINDOW * float(np.median(steps)) if len(steps) else 0.0, math.log(MIN_WINDOW))
            keep &= np.abs(x - math.log(best[col])) <= half + 1e-9
        parts.append(g[keep].assign(cell=len(parts)))
    return pd.concat(parts, ignore_index=True)


MIN_BOOTSTRAP_CELLS = 4  # fewer cells: no bootstrap interval
NEAR_OPTIMUM = 0.02  # a run this far (relative loss) above its cell's best counts ~1/sqrt(2) as much
ROBUST_SCALE = 0.01  # relative residual beyond which a run counts less (soft L1): spikes, half-diverged runs


_JOINT_NAMES = ("lr_log_k", "lr_a_N", "lr_a_D", "b_log_k", "b_a_D",
                "c_lo", "c_hi", "c3_lo", "c3_hi", "c_vv", "c_vvv", "c_uv", "k_N", "k_D")


def _bowl(p, u, v):
    """Relative excess loss of a run u = log(lr / lr*), v = log(B / B*) from its cell's optimum:
    quadratic plus cubic in u, separately on each side (the high-lr side usually rises faster), and
    quadratic plus cubic in v with an lr x batch tilt. Its minimum is (0, 0) whenever the
    curvatures are positive, so the optimum stays on the laws."""
    lo, hi = np.minimum(u, 0.0), np.maximum(u, 0.0)
    return (p[5] * lo * lo + p[6] * hi * hi - p[7] * lo ** 3 + p[8] * hi ** 3
            + p[9] * v * v + p[10] * v ** 3 + p[11] * u * v)


def _joint_fit(local: pd.DataFrame, start: dict, free: dict) -> np.ndarray:
    """All runs near every cell's optimum fitted at once:

        loss = L_c (1 + (N/N0)^k_N (D/D0)^k_D bowl(u, v)),
        u = log lr - log lr*(N, D),  lr* = exp(lr_log_k) N^lr_a_N D^lr_a_D,
        v = log B - log B*(D),       B* = exp(b_log_k) D^b_a_D,

    with a level L_c per cell (solved in closed form at every step), the shape of :func:`_bowl`
    shared by all cells, and its depth a power law in N and D (a short run's bowl can be deeper
    than a long one's; N0, D0: the data's geometric means). The optimum of every cell lies on the
    laws by construction, so cells share the laws' strength instead of each cell's noisy quadratic
    standing alone. Runs far above their cell's best count less (``NEAR_OPTIMUM``), and a soft-L1
    loss damps spikes (``ROBUST_SCALE``).
    ``free`` names the parameters that vary. Returns the parameters in ``_JOINT_NAMES`` order."""
    from scipy.optimize import least_squares

    x0 = np.array([start[k] for k in _JOINT_NAMES], float)
    idx = np.array([i for i, k in enumerate(_JOINT_NAMES) if free.get(k, True)])
    logN, logD = np.log(local["N"].to_numpy(float)), np.log(local["D"].to_numpy(float))
    x, y = np.log(local["lr"].to_numpy(float)), np.log(local["batch"].to_numpy(float))
    loss, cell = local["loss"].to_numpy(float), local["cell"].to_numpy()
    n_cells = int(cell.max()) + 1
    lo = {"c_lo": 1e-6, "c_hi": 1e-6, "c3_lo": 0.0, "c3_hi": 0.0, "c_vv": 0.0, "c_vvv": -1.0, "c_uv": -1.0,
          "k_N": -2.0, "k_D": -2.0}
    hi = {"c_lo": 10.0, "c_hi": 10.0, "c3_lo": 10.0, "c3_hi": 10.0, "c_vv": 10.0, "c_vvv": 1.0, "c_uv": 1.0,
          "k_N": 2.0, "k_D": 2.0}
    cN, cD = logN - logN.mean(), logD - logD.mean()
    # runs far up a cell's bowl count less: near its optimum a smooth bowl describes the loss well
    best = pd.Series(loss).groupby(cell).transform("min").to_numpy()
    weight = 1.0 / np.sqrt(1.0 + ((loss / best - 1.0) / NEAR_OPTIMUM) ** 2)

    def resid(z):
        p = x0.copy()
        p[idx] = z
        u = x - (p[0] + p[1] * logN + p[2] * logD)
        v = y - (p[3] + p[4] * logD)
        g = (1 + np.exp(p[12] * cN + p[13] * cD) * _bowl(p, u, v)) / loss
        level = np.bincount(cell, g * weight ** 2, n_cells) / np.maximum(
            np.bincount(cell, (g * weight) ** 2, n_cells), 1e-300)
        return (1.0 - level[cell] * g) * weight

    names = [_JOINT_NAMES[i] for i in idx]
    bounds = ([lo.get(k, -np.inf) for k in names], [hi.get(k, np.inf) for k in names])
    z0 = np.clip(x0[idx], np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    res = least_squares(resid, z0, bounds=bounds, x_scale="jac", method="trf", loss="soft_l1", f_scale=ROBUST_SCALE)
    out = x0.copy()
    out[idx] = res.x
    return out


_BOWL_BOUNDS = {"c_lo": (1e-6, 10.0), "c_hi": (1e-6, 10.0), "c3_lo": (0.0, 10.0), "c3_hi": (0.0, 10.0),
                "c_vv": (0.0, 10.0), "c_vvv": (-1.0, 1.0), "c_uv": (-1.0, 1.0)}
JOINT_AGREEMENT = 0.5  # grid steps: the joint lr* may sit at most this far from the per-cell optima (median)


def _joint_problems(theta: np.ndarray, local: pd.DataFrame, cells: pd.DataFrame, b_var: bool) -> str:
    """Why a joint fit cannot stand ("" when it can): bowl terms on their bounds (its shape is held by the
    bounds, not the runs), a bowl whose minimum over the sampled window is not at u = v = 0 (the laws
    would not be its optimum), or a joint lr* more than ``JOINT_AGREEMENT`` grid steps (median over cells)
    from the cells' own optima."""
    p = dict(zip(_JOINT_NAMES, theta))
    out = []
    used = [k for k in _BOWL_BOUNDS if b_var or k not in ("c_vv", "c_vvv", "c_uv")]
    tol = {k: 1e-4 * (b - a) for k, (a, b) in _BOWL_BOUNDS.items()}
    # on the upper bound, or on the lower one where that is not a natural 0 (no cubic, no batch curvature)
    on = [f"{k} = {p[k]:.3g}" for k in used if p[k] >= _BOWL_BOUNDS[k][1] - tol[k]
          or (k not in ("c3_lo", "c3_hi", "c_vv") and p[k] <= _BOWL_BOUNDS[k][0] + tol[k])]
    if on:
        out.append("bowl terms on their bounds: " + ", ".join(on))
    logN, logD = np.log(local["N"].to_numpy(float)), np.log(local["D"].to_numpy(float))
    u = np.log(local["lr"].to_numpy(float)) - (p["lr_log_k"] + p["lr_a_N"] * logN + p["lr_a_D"] * logD)
    v = np.log(local["batch"].to_numpy(float)) - (p["b_log_k"] + p["b_a_D"] * logD) if b_var else np.zeros(len(local))
    U, V = np.meshgrid(np.linspace(u.min(), u.max(), 41), np.linspace(v.min(), v.max(), 41) if b_var else [0.0])
    b = _bowl(theta, U, V)
    if b.min() < -1e-6:
        i = np.unravel_index(np.argmin(b), b.shape)
        out.append(f"the bowl's minimum is off its centre (u {U[i]:.2f}, v {V[i]:.2f} in log units, depth {b[i]:.2g})")
    lr_joint = np.exp(p["lr_log_k"] + p["lr_a_N"] * np.log(cells["N"]) + p["lr_a_D"] * np.log(cells["D"]))
    steps = [np.median(np.diff(np.unique(np.log(g["lr"])))) for _, g in local.groupby("cell") if g["lr"].nunique() > 1]
    step = float(np.median(steps)) if steps else math.log(2.0)
    gap = float(np.median(np.abs(np.log(lr_joint / cells["lr_opt"])))) / step
    if gap > JOINT_AGREEMENT:
        out.append(f"its lr* sits {gap:.2f} grid steps from the per-cell optima (median; limit {JOINT_AGREEMENT:g}): "
                   f"{float(np.median(lr_joint)):.3g} vs {float(cells['lr_opt'].min()):.3g}-{float(cells['lr_opt'].max()):.3g}")
    return "; ".join(out)


def _joint_laws(local: pd.DataFrame, two_stage: dict, n_var: bool, d_var: bool, b_var: bool,
                start: np.ndarray | None = None) -> np.ndarray:
    lr, b = two_stage["lr"], two_stage["batch"]
    s = (dict(zip(_JOINT_NAMES, start)) if start is not None else
         {"lr_log_k": lr["log_k"], "lr_a_N": lr["a_N"], "lr_a_D": lr["a_D"], "b_log_k": b["log_k"],
          "b_a_D": b["a_D"], "c_lo": 0.02, "c_hi": 0.02, "c3_lo": 0.0, "c3_hi": 0.0,
          "c_vv": 0.01 if b_var else 0.0, "c_vvv": 0.0, "c_uv": 0.0, "k_N": 0.0, "k_D": 0.0})
    free = {"lr_a_N": n_var, "lr_a_D": d_var, "b_a_D": d_var and b_var, "b_log_k": b_var, "c_vv": b_var,
            "c_vvv": b_var, "c_uv": b_var, "k_N": n_var, "k_D": d_var}
    return _joint_fit(local, s, free)
