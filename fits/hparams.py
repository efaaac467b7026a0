"""Learning-rate and batch-size laws from lr x batch sweeps, the lr/B temperature, and the
critical batch size.

Per (N, D) cell, the loss surface in (log lr, log B) is fitted with a quadratic through the
runs within one grid step of the best run; its minimum is the cell's optimum (the best run when
the quadratic is not convex or its minimum lies outside the sampled box). Across cells, power laws lr_opt = k N^a_N D^a_D and B_opt = k D^b_D (and
with an N term, to test whether B needs one) are fitted in log space with lmfit, with bootstrap
intervals over cells.

The temperature (Smith & Le 2018): SGD noise scales with lr/B, so below the critical batch the
optimal lr should grow linearly with B (lr/B constant); for Adam the square-root rule
(Malladi et al. 2022) predicts lr ~ sqrt(B). The slope of log lr_ridge against log B along the
optimum ridge says which the data follow.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._data import final_rows, read_table
from .hparam_axes import WeightDecayFit, critical_batch, critical_batch_law, fit_weight_decay, noise_scale_batch
from scaling_core.io import atomic_write_text, read_json, to_jsonable
from .errors import InputError
from .hparam_laws import MIN_BOOTSTRAP_CELLS, _JOINT_NAMES, _joint_laws, _joint_problems, _laws, _local_runs, _log_linear

__all__ = ["HyperparameterFit", "fit_hyperparameters", "load_hparams", "critical_batch", "critical_batch_law",
           "lr_horizon_backtest", "fit_weight_decay", "WeightDecayFit",
           "noise_scale_batch", "deepseek_prior", "step_law_prior"]

SCHEMA = "scaling-planner/hyperparameter-fit"


def deepseek_prior(N, D):
    """DeepSeek LLM 2024 (arXiv:2401.02954): lr = 0.3118 C^-0.125, B = 0.2920 C^0.3271 tokens,
    here with C ~ 6 N D (N non-embedding)."""
    C = 6.0 * np.asarray(N, float) * np.asarray(D, float)
    return 0.3118 * C ** -0.1250, 0.2920 * C ** 0.3271


def step_law_prior(N, D):
    """Step Law 2025 (arXiv:2503.04715): lr = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571 tokens."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return 1.79 * N ** -0.713 * D ** 0.307, 0.58 * D ** 0.571


# --- one cell -------------------------------------------------------------------------------

def _quadratic_cell(x, y, loss):
    """Fit loss ~ quadratic in (x, y) (or in x alone with one batch size). Returns a dict with the
    optimum and curvature, or None when it is not a convex bowl inside the sampled box."""
    one_b = len(np.unique(y)) < 3
    if one_b:
        if len(np.unique(x)) < 3:
            return None
        X = np.column_stack([np.ones_like(x), x, x * x])
    else:
        if len(np.unique(x)) < 3 or len(x) < 6:
            return None
        X = np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y])
    coef, *_ = np.linalg.lstsq(X, loss, rcond=None)
    if one_b:
        c0, c1, c3 = coef
        if c3 <= 0:
            return None
        xs = -c1 / (2 * c3)
        ys = float(np.mean(y))
        H = np.array([[2 * c3, 0.0], [0.0, np.nan]])
        f = lambda a, b: c0 + c1 * a + c3 * a * a
    else:
        c0, c1, c2, c3, c4, c5 = coef
        H = np.array([[2 * c3, c5], [c5, 2 * c4]])
        if np.any(np.linalg.eigvalsh(H) <= 0):
            return None
        xs, ys = np.linalg.solve(H, [-c1, -c2])
        f = lambda a, b: c0 + c1 * a + c2 * b + c3 * a * a + c4 * b * b + c5 * a * b
    pad = 0.5 * np.log(2.0)
    if not (x.min() - pad <= xs <= x.max() + pad) or (not one_b and not (y.min() - pad <= ys <= y.max() + pad)):
        return None
    return {"x": float(xs), "y": float(ys), "f": f, "H": H, "coef": coef, "one_b": one_b}


def _neighbourhood(g: pd.DataFrame, best: int) -> pd.DataFrame:
    """Runs within one grid step of the best run in lr and in batch (a 3 x 3 block at most):
    a quadratic describes a loss bowl near its minimum, not across a 16x lr range where the
    high-lr side rises far more steeply than the low side."""
    keep = np.ones(len(g), dtype=bool)
    for col in ("lr", "batch"):
        values = np.sort(g[col].unique())
        i = int(np.searchsorted(values, g[col].iloc[best]))
        near = values[max(0, i - 1):i + 2]
        keep &= g[col].isin(near).to_numpy()
    return g[keep]


def _cell_optimum(g: pd.DataFrame) -> dict:
    x, y, L = np.log(g["lr"].to_numpy()), np.log(g["batch"].to_numpy()), g["loss"].to_numpy()
    best = int(np.argmin(L))
    local = _neighbourhood(g, best)
    q = _quadratic_cell(np.log(local["lr"].to_numpy()), np.log(local["batch"].to_numpy()), local["loss"].to_numpy())
    row = {"n_runs": len(g), "best_loss": float(L[best]), "best_lr": float(np.exp(x[best])),
           "best_batch": float(np.exp(y[best]))}
    row["lr_at_edge"] = bool(g["lr"].iloc[best] in (g["lr"].min(), g["lr"].max()))
    row["batch_at_edge"] = bool(g["batch"].nunique() > 1 and g["batch"].iloc[best] in (g["batch"].min(), g["batch"].max()))
    if q is not None:
        f = q["f"]
        # with fewer than three batch sizes near the best run, the batch optimum is that run's batch
        ymin = math.log(row["best_batch"]) if q["one_b"] else q["y"]
        row.update(lr_opt=math.exp(q["x"]), batch_opt=math.exp(ymin), loss_opt=float(f(q["x"], ymin)),
                   method="quadratic")
        base = f(q["x"], ymin)
        row["penalty_lr_2x"] = float(max(f(q["x"] + math.log(2), ymin), f(q["x"] - math.log(2), ymin)) / base - 1)
        row["penalty_batch_2x"] = (float("nan") if q["one_b"] else
                                   float(max(f(q["x"], ymin + math.log(2)), f(q["x"], ymin - math.log(2))) / base - 1))
    else:
        row.update(lr_opt=row["best_lr"], batch_opt=row["best_batch"], loss_opt=row["best_loss"], method="best-run",
                   penalty_lr_2x=float("nan"), penalty_batch_2x=float("nan"))
    for pct in (0.25, 1.0):
        near = g[L <= L[best] * (1 + pct / 100)]
        tag = str(pct).replace(".", "p").rstrip("0").rstrip("p")
        row[f"lr_band{tag}_low"], row[f"lr_band{tag}_high"] = float(near["lr"].min()), float(near["lr"].max())
        row[f"batch_band{tag}_low"], row[f"batch_band{tag}_high"] = float(near["batch"].min()), float(near["batch"].max())
    # the ridge: the best lr at each batch size (parabola in log lr within that batch)
    ridge = []
    for b, gb in g.groupby("batch"):
        if gb["lr"].nunique() >= 3:
            from .transfer import parabola_optimum
            xr, lr_loss, _ = parabola_optimum(np.log(gb["lr"].to_numpy()), gb["loss"].to_numpy())
            ridge.append((float(b), math.exp(xr), lr_loss))
    row["ridge"] = ridge
    return row


@dataclass(frozen=True, eq=False)
class HyperparameterFit:
    """Fitted lr_opt(N, D) and B_opt(D) laws with bootstrap samples, per-cell optima and checks."""

    lr_law: dict
    batch_law: dict
    batch_with_N: dict | None
    samples: np.ndarray  # (bootstrap, 5): lr log_k, a_N, a_D, batch log_k, b_D
    cell_optima: pd.DataFrame
    temperature: dict
    priors: pd.DataFrame
    n_term_needed: bool
    data_range: dict
    level: float = 0.9
    notes: tuple = ()
    provenance: dict = field(default_factory=dict)
    b_crit_law: dict | None = None
    method: str = "cells"
    bowl: dict = field(default_factory=dict)
    wd_law: dict | None = None
    unfitted: dict = field(default_factory=dict)

    def predict(self, N, D, level: float | None = None) -> pd.DataFrame:
        """lr_opt and batch_opt (tokens) at (N non-embedding params, D tokens), with intervals."""
        level = self.level if level is None else level
        N, D = np.broadcast_arrays(np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float)))
        lr = np.exp(_log_linear(np.log(N), np.log(D), self.lr_law["log_k"], self.lr_law["a_N"], self.lr_law["a_D"]))
        b = np.exp(self.batch_law["log_k"] + self.batch_law["a_D"] * np.log(D))
        out = pd.DataFrame({"N": N, "D": D, "lr_opt": lr, "batch_opt": b})
        if len(self.samples):
            s = self.samples
            lrs = np.exp(s[:, 0, None] + s[:, 1, None] * np.log(N) + s[:, 2, None] * np.log(D))
            bs = np.exp(s[:, 3, None] + s[:, 4, None] * np.log(D))
            q = ((1 - level) / 2, (1 + level) / 2)
            for name, draws in (("lr_opt", lrs), ("batch_opt", bs)):  # the interval holds its own estimate
                lo, hi = np.quantile(draws, q, axis=0)
                out[f"{name}_low"], out[f"{name}_high"] = np.minimum(lo, out[name]), np.maximum(hi, out[name])
        return out

    def predict_point(self, N: float, D: float):
        """(lr, batch, lr source, batch source, intervals) for the planner."""
        p = self.predict(N, D).iloc[0]
        r = self.data_range
        src = (f"fitted hyperparameter law ({len(self.cell_optima)} cells, N {r['N_min']:.3g}..{r['N_max']:.3g}, "
               f"D {r['D_min']:.3g}..{r['D_max']:.3g}): lr = exp({self.lr_law['log_k']:.3g}) N^{self.lr_law['a_N']:.3g} "
               f"D^{self.lr_law['a_D']:.3g}")
        if len(self.samples) and "lr_horizon" not in self.unfitted:
            a = self.ci().loc["lr_a_D"]
            src += (f"; scaled to this run's horizon: lr ~ D^{a['value']:.3g} [{a['low']:.3g}, {a['high']:.3g}] "
                    "(Bjorck et al. 2025)")
        bsrc = f"fitted: B = exp({self.batch_law['log_k']:.3g}) D^{self.batch_law['a_D']:.3g} tokens"
        iv = {k: float(p[k]) for k in ("lr_opt_low", "lr_opt_high", "batch_opt_low", "batch_opt_high") if k in p}
        iv = {k.replace("_opt", ""): v for k, v in iv.items()}
        return float(p["lr_opt"]), float(p["batch_opt"]), src, bsrc, iv

    def report(self) -> str:
        lr, b = self.lr_law, self.batch_law
        how = ("joint fit of every run near each cell's optimum" if self.method == "joint"
               else "power laws through per-cell quadratic optima")
        lines = [
            f"Hyperparameter laws ({how})",
            f"  lr_opt = exp({lr['log_k']:.4g}) N^{lr['a_N']:.4g} D^{lr['a_D']:.4g}",
        ]
        if len(self.samples) and "lr_horizon" not in self.unfitted:
            a = self.ci().loc["lr_a_D"]
            lines.append(f"  horizon: lr* ~ D^{a['value']:.3g} [{a['low']:.3g}, {a['high']:.3g}] at fixed N "
                         f"({'longer runs want a smaller lr' if a['high'] < 0 else 'no clear horizon trend'})")
        if "batch" not in self.unfitted:
            lines.append(f"  B_opt  = exp({b['log_k']:.4g}) D^{b['a_D']:.4g} tokens"
                         + ("   (an N term improves the fit: see batch_with_N)" if self.n_term_needed
                            else "   (no N term needed)"))
        lines.append(f"  temperature: {self.temperature.get('verdict', 'n/a')}")
        bc = self.b_crit_law
        if bc:
            lines.append(f"  B_crit = exp({bc['log_k']:.4g}) D^{bc['b']:.4g} tokens (D: tokens to the target at the "
                         f"smallest batch; b in [{bc['b_low']:.3g}, {bc['b_high']:.3g}], {bc['n_targets']} targets)")
        w = self.wd_law
        if w:
            lines.append(f"  AdamW timescale tau* = {math.exp(w['log_k']):.3g} (D/N)^{w['p']:.3g} of the run "
                         f"({w['n_cells']} cells, D/N {w['tpp_min']:.3g}..{w['tpp_max']:.3g}): wd = B / (lr tau* D)")
        lines += [f"  not fitted: {k}: {why}" for k, why in self.unfitted.items()]
        if len(self.samples):
            ci = self.ci()
            lines.append("  intervals (bootstrap over cells):")
            lines += ["    " + l for l in ci.to_string(float_format=lambda v: f"{v:.4g}").splitlines()]
        flagged = self.priors[self.priors["flag"]]
        if len(flagged):
            lines.append(f"  {len(flagged)} cell(s) disagree with a published prior by more than 2x (see .priors)")
        lines += [f"  note: {n}" for n in self.notes]
        lines += ["", self.cell_optima.drop(columns=[c for c in self.cell_optima.columns if "band" in c or c == "ridge"])
                  .to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        return "<pre>" + self.report() + "</pre>"

    def ci(self, level: float | None = None) -> pd.DataFrame:
        level = self.level if level is None else level
        names = ["lr_log_k", "lr_a_N", "lr_a_D", "batch_log_k", "batch_a_D"]
        vals = [self.lr_law["log_k"], self.lr_law["a_N"], self.lr_law["a_D"], self.batch_law["log_k"],
                self.batch_law["a_D"]]
        q = ((1 - level) / 2, (1 + level) / 2)
        lo, hi = (np.quantile(self.samples, q, axis=0) if len(self.samples) else (np.full(5, np.nan),) * 2)
        return pd.DataFrame({"value": vals, "low": lo, "high": hi}, index=pd.Index(names, name="parameter"))

    def plot(self, ax=None):
        """Optimal lr against N per D (points: cells; lines: the law)."""
        from ._plot import get_axes

        ax = get_axes(ax)
        c = self.cell_optima
        for k, (d, g) in enumerate(c.groupby("D")):
            ax.scatter(g["N"], g["lr_opt"], color=f"C{k % 10}", label=f"D={d:.2g}")
            Ns = np.logspace(np.log10(g["N"].min()) - 0.2, np.log10(g["N"].max()) + 0.2, 20)
            ax.plot(Ns, self.predict(Ns, d)["lr_opt"], color=f"C{k % 10}", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("optimal learning rate")
        ax.legend(fontsize="small")
        return ax

    def plot_horizon(self, ax=None):
        """Optimal lr against the token horizon D per model size (points: cells; lines: the law):
        under muP a longer run still wants a smaller lr (Bjorck et al. 2025)."""
        from ._plot import get_axes

        ax = get_axes(ax)
        c = self.cell_optima
        a = self.ci().loc["lr_a_D"]
        for k, (n, g) in enumerate(c.groupby("N")):
            ax.scatter(g["D"], g["lr_opt"], color=f"C{k % 10}", label=f"N={n:.3g}")
            Ds = np.geomspace(g["D"].min() / 1.5, g["D"].max() * 1.5, 20)
            ax.plot(Ds, self.predict(n, Ds)["lr_opt"], color=f"C{k % 10}", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="training tokens D (horizon)", ylabel="optimal learning rate",
               title=f"lr* ~ D^{a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}]")
        ax.legend(fontsize="small")
        return ax

    def to_dict(self) -> dict:
        return to_jsonable({
            "schema": SCHEMA, "lr_law": self.lr_law, "batch_law": self.batch_law, "batch_with_N": self.batch_with_N,
            "samples": self.samples, "cell_optima": self.cell_optima.drop(columns=["ridge"], errors="ignore")
            .to_dict(orient="list"), "temperature": self.temperature,
            "priors": self.priors.to_dict(orient="list"), "n_term_needed": self.n_term_needed,
            "data_range": self.data_range, "level": self.level, "notes": list(self.notes),
            "provenance": self.provenance, "b_crit_law": self.b_crit_law, "method": self.method, "bowl": self.bowl,
            "wd_law": self.wd_law, "unfitted": self.unfitted})

    def to_json(self, path):
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


def load_hparams(path) -> HyperparameterFit:
    """Load a fit written by :meth:`HyperparameterFit.to_json`."""
    d = read_json(path, "hparams")
    if d.get("schema") != SCHEMA:
        raise InputError(f"hparams: {str(path)!r} is not a hyperparameter fit (schema {d.get('schema')!r})")
    try:
        return HyperparameterFit(
            lr_law=d["lr_law"], batch_law=d["batch_law"], batch_with_N=d.get("batch_with_N"),
            samples=np.asarray(d["samples"], float).reshape(-1, 5), cell_optima=pd.DataFrame(d["cell_optima"]),
            temperature=d.get("temperature", {}), priors=pd.DataFrame(d["priors"]),
            n_term_needed=bool(d["n_term_needed"]), data_range=d["data_range"], level=float(d.get("level", 0.9)),
            notes=tuple(d.get("notes", ())), provenance=d.get("provenance", {}), b_crit_law=d.get("b_crit_law"),
            method=d.get("method", "cells"), bowl=d.get("bowl", {}), wd_law=d.get("wd_law"),
            unfitted=d.get("unfitted", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"hparams: malformed hyperparameter fit {str(path)!r} ({exc})") from None


def _temperature(cells: pd.DataFrame) -> dict:
    pts = [(np.log(b), np.log(lr), i) for i, ridge in enumerate(cells["ridge"]) for b, lr, _ in ridge]
    if len({p[0] for p in pts}) < 2:
        return {"verdict": "needs at least two batch sizes with three or more learning rates each"}
    slopes = []
    for i, ridge in enumerate(cells["ridge"]):
        if len(ridge) >= 2:
            b, lr = np.log([r[0] for r in ridge]), np.log([r[1] for r in ridge])
            slopes.append(float(np.polyfit(b, lr, 1)[0]))
    s = float(np.median(slopes))
    verdict = ("lr/B constant (linear scaling, Smith & Le 2018)" if abs(s - 1) < 0.25 else
               "lr/sqrt(B) constant (square-root rule, Malladi et al. 2022)" if abs(s - 0.5) < 0.25 else
               f"neither: the optimal lr scales as B^{s:.2f} (above the critical batch, lr stops growing)")
    ridge_rows = [{"cell": i, "batch": b, "lr_ridge": lr, "lr_over_B": lr / b, "lr_over_sqrtB": lr / math.sqrt(b)}
                  for i, ridge in enumerate(cells["ridge"]) for b, lr, _ in ridge]
    return {"slope_median": s, "slopes": slopes, "verdict": verdict, "ridge": ridge_rows}


def fit_hyperparameters(df, n: str = "params", d: str = "tokens", lr: str = "lr", batch: str = "batch_tokens",
                        loss: str = "val_loss", bootstrap: int = 200, seed: int = 0,
                        level: float = 0.9, method: str = "joint", wd: str = "weight_decay") -> HyperparameterFit:
    """Fit learning-rate and batch-size laws to an lr x batch sweep.

    Parameters
    ----------
    df : DataFrame or CSV path, one row per run (a probes export with ``final`` rows works).
    n, d, lr, batch, loss : column names (N non-embedding parameters, D tokens, B tokens).
    bootstrap : resamples of cells for the laws' intervals.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rows = []
    >>> for N in (1e6, 4e6, 16e6):
    ...     for D in (1e8, 4e8):
    ...         lo, bo = np.log(0.5 * N**-0.3 * D**0.05), np.log(0.3 * D**0.5)
    ...         for l in np.log(2.0) * np.arange(-3, 4) + lo:
    ...             for b in np.log(2.0) * np.arange(-2, 3) + bo:
    ...                 rows.append((N, D, np.exp(l), np.exp(b), 3 + 0.02 * (l - lo)**2 + 0.01 * (b - bo)**2))
    >>> hp = fit_hyperparameters(pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "val_loss"]))
    >>> round(hp.lr_law["a_N"], 3), round(hp.batch_law["a_D"], 3)
    (-0.3, 0.5)
    """
    if method not in ("joint", "cells"):
        raise InputError(f"method: must be 'joint' (every run near each cell's optimum fitted at once) or 'cells' "
                         f"(one quadratic per cell, then power laws through the cell optima); got {method!r}")
    t = read_table(df)
    b_crit_law, b_crit_note = None, None
    if {"target_loss", "step", batch} <= set(t.columns):
        try:
            b_crit_law = critical_batch_law(critical_batch(t, batch=batch), bootstrap=bootstrap, seed=seed)
        except InputError as exc:
            b_crit_note = f"B_crit(D) not fitted: {exc}"
    t = final_rows(t)
    for name, col in (("n", n), ("d", d), ("lr", lr), ("batch", batch), ("loss", loss)):
        if col not in t.columns:
            raise InputError(f"{name}: column {col!r} not found; columns are {list(t.columns)}")
    runs = pd.DataFrame({k: pd.to_numeric(t[c], errors="coerce") for k, c in
                         (("N", n), ("D", d), ("lr", lr), ("batch", batch), ("loss", loss))})
    if "diverged" in t.columns:
        runs = runs[~t["diverged"].fillna(False).astype(bool).to_numpy()]
    runs = runs[np.isfinite(runs).all(axis=1) & (runs[["N", "D", "lr", "batch", "loss"]] > 0).all(axis=1)]
    unfitted, wd_law = {}, None
    if wd in t.columns and pd.to_numeric(t[wd], errors="coerce").nunique() > 1:
        try:
            w = fit_weight_decay(t, n=n, d=d, lr=lr, batch=batch, wd=wd, loss=loss)
            wd_law = {**w.law, "notes": list(w.notes), "cells": w.cells.to_dict(orient="records")}
        except InputError as exc:
            unfitted["weight_decay"] = str(exc)
        # the lr and batch laws read each (lr, batch) at its best weight decay
        runs = runs.groupby(["N", "D", "lr", "batch"], as_index=False)["loss"].min()
    else:
        unfitted["weight_decay"] = (f"the sweep has one weight decay (column {wd!r}); sweep 3+ values at one lr "
                                    "to fit the AdamW timescale")
    cells = []
    for (N, D), g in runs.groupby(["N", "D"]):
        if g["lr"].nunique() < 2:
            continue
        cells.append({"N": N, "D": D, **_cell_optimum(g)})
    if len(cells) < 2:
        raise InputError(f"df: need at least two (N, D) cells with two or more learning rates each; got {len(cells)}")
    cells = pd.DataFrame(cells)
    laws = _laws(cells)
    n_var, d_var = cells["N"].nunique() > 1, cells["D"].nunique() > 1
    b_var = bool(runs.groupby(["N", "D"])["batch"].nunique().max() >= 3)
    rng = np.random.default_rng(seed)
    samples = []
    if len(cells) < MIN_BOOTSTRAP_CELLS:  # resampling two or three cells gives a spuriously tight interval
        bootstrap = 0
    two_stage = laws["lr"]
    fallback = None
    if method == "joint":
        local = _local_runs(runs)
        theta = _joint_laws(local, laws, n_var, d_var, b_var)
        fallback = _joint_problems(theta, local, cells, b_var)
        if fallback:  # the shared bowl is not identified: the per-cell laws stand in, and the fit says why
            method = "cells"
    if method == "joint":
        laws = {**laws, "lr": {**laws["lr"], "log_k": float(theta[0]), "a_N": float(theta[1]), "a_D": float(theta[2])}}
        if b_var:
            laws["batch"] = {**laws["batch"], "log_k": float(theta[3]), "a_D": float(theta[4])}
        bowl = dict(zip(_JOINT_NAMES[5:], (float(v) for v in theta[5:])))
        by_cell = {c: g for c, g in local.groupby("cell")}
        for _ in range(bootstrap):
            pick = rng.integers(0, len(by_cell), len(by_cell))
            sub = pd.concat([by_cell[c].assign(cell=i) for i, c in enumerate(pick)], ignore_index=True)
            if (d_var and sub["D"].nunique() < 2) or (n_var and sub["N"].nunique() < 2):
                continue
            th = _joint_laws(sub, laws, n_var, d_var, b_var, start=theta)
            samples.append([*th[:3], *(th[3:5] if b_var else (laws["batch"]["log_k"], laws["batch"]["a_D"]))])
    else:
        bowl = {}
        for _ in range(bootstrap):
            pick = cells.iloc[rng.integers(0, len(cells), len(cells))]
            if (d_var and pick["D"].nunique() < 2) or (n_var and pick["N"].nunique() < 2):
                continue
            lw = _laws(pick)
            samples.append([lw["lr"]["log_k"], lw["lr"]["a_N"], lw["lr"]["a_D"], lw["batch"]["log_k"],
                            lw["batch"]["a_D"]])
    samples = np.asarray(samples, float).reshape(-1, 5)
    # an N term is needed when it improves the fit (AIC by > 2) and matters: it moves B_opt by more
    # than 25% across the sampled model sizes
    bn = laws["batch_with_N"]
    n_term = bool(bn is not None and bn["aic"] < laws["batch"]["aic"] - 2
                  and abs(bn["a_N"]) * np.log(cells["N"].max() / cells["N"].min()) > np.log(1.25))
    lr_ds, b_ds = deepseek_prior(cells["N"], cells["D"])
    lr_sl, b_sl = step_law_prior(cells["N"], cells["D"])
    priors = pd.DataFrame({"N": cells["N"], "D": cells["D"], "lr_fit": cells["lr_opt"], "lr_deepseek": lr_ds,
                           "lr_steplaw": lr_sl, "batch_fit": cells["batch_opt"], "batch_deepseek": b_ds,
                           "batch_steplaw": b_sl})
    ratios = np.column_stack([priors["lr_fit"] / priors["lr_deepseek"], priors["lr_fit"] / priors["lr_steplaw"],
                              priors["batch_fit"] / priors["batch_deepseek"], priors["batch_fit"] / priors["batch_steplaw"]])
    priors["flag"] = np.any((ratios > 2) | (ratios < 0.5), axis=1)
    notes = []
    if fallback:
        notes.append(f"the joint fit was not used ({fallback}); the per-cell optima's power laws stand in "
                     "(method 'cells')")
    if len(cells) < MIN_BOOTSTRAP_CELLS:
        notes.append(f"{len(cells)} cells: too few to bootstrap, so the laws carry no interval")
    if cells["N"].nunique() < 2:
        notes.append("a single model size: the lr law's N exponent is held at 0")
    if cells["D"].nunique() < 2:
        notes.append("a single token count: the D exponents are held at 0")
    for col, what in (("lr_at_edge", "learning rate"), ("batch_at_edge", "batch size")):
        if cells[col].any():
            notes.append(f"the best {what} sits on the edge of the grid in {int(cells[col].sum())} cell(s): "
                         f"extend the {what} grid there")
    if (cells["method"] == "best-run").any():
        notes.append(f"{int((cells['method'] == 'best-run').sum())} cell(s) were not a convex bowl; their best run stands in")
    rng_ = {"N_min": float(cells["N"].min()), "N_max": float(cells["N"].max()),
            "D_min": float(cells["D"].min()), "D_max": float(cells["D"].max())}
    if b_crit_law is None:
        unfitted["b_crit"] = b_crit_note or ("the sweep has no steps-to-target rows (set train.target_losses and "
                                            "sweep 3+ batch sizes)")
    if not d_var:
        unfitted["lr_horizon"] = "a single token count: lr* is not fitted against the horizon D"
    if method == "joint":  # the joint fit assumes one bowl shape; per-cell optima do not
        for a, what in (("a_N", "N"), ("a_D", "D")):
            gap = abs(laws["lr"][a] - two_stage[a])
            if gap > 0.1:
                notes.append(f"the joint fit and the per-cell optima disagree on the lr's {what} exponent "
                             f"({laws['lr'][a]:.3g} vs {two_stage[a]:.3g}): the loss bowl changes shape across "
                             "cells; compare method='cells' before extrapolating far")
    if not b_var:
        unfitted["batch"] = "fewer than three batch sizes in every cell: B_opt is not fitted"
    return HyperparameterFit(lr_law=laws["lr"], batch_law=laws["batch"], batch_with_N=laws["batch_with_N"],
                             samples=samples, cell_optima=cells, temperature=_temperature(cells), priors=priors,
                             n_term_needed=n_term, data_range=rng_, level=level, notes=tuple(notes),
                             b_crit_law=b_crit_law, method=method, bowl=bowl, wd_law=wd_law, unfitted=unfitted)


def lr_horizon_backtest(df, n: str = "params", d: str = "tokens", lr: str = "lr", batch: str = "batch_tokens",
                        loss: str = "val_loss", method: str = "joint", bootstrap: int = 100) -> pd.DataFrame:
    """Fit the lr law on every horizon but the longest and predict the optimal lr at the longest.

    One row per model size: the optimum measured at the longest horizon (the cell's quadratic),
    the law's prediction with its interval, the optimum at the longest horizon it was fitted on
    (what applying the probes' lr at any horizon would give), and both errors in grid steps
    (the sweep's own lr ratio)."""
    t = read_table(df)
    t = final_rows(t)
    if d not in t.columns:
        raise InputError(f"d: column {d!r} not found; columns are {list(t.columns)}")
    horizons = np.sort(pd.to_numeric(t[d], errors="coerce").dropna().unique())
    if len(horizons) < 3:
        raise InputError(f"df: a horizon backtest needs three or more token horizons; got {len(horizons)}")
    cols = dict(n=n, d=d, lr=lr, batch=batch, loss=loss)
    measured = fit_hyperparameters(t, bootstrap=0, method="cells", **cols).cell_optima
    fit = fit_hyperparameters(t[t[d] < horizons[-1]], bootstrap=bootstrap, method=method, **cols)
    rows = []
    for _, cell in measured[measured["D"] == horizons[-1]].iterrows():
        g = t[(t[n] == cell["N"]) & (t[d] == horizons[-1])]
        step = float(np.exp(np.median(np.diff(np.log(np.sort(g[lr].unique()))))))
        p = fit.predict(cell["N"], cell["D"]).iloc[0]
        shorter = measured[(measured["N"] == cell["N"]) & (measured["D"] == horizons[-2])]["lr_opt"]
        base = float(shorter.iloc[0]) if len(shorter) else float("nan")
        rows.append({"N": cell["N"], "D": cell["D"], "lr_measured": cell["lr_opt"], "lr_predicted": p["lr_opt"],
                     "lr_predicted_low": p.get("lr_opt_low", np.nan), "lr_predicted_high": p.get("lr_opt_high", np.nan),
                     "lr_shorter_horizon": base, "grid_step": step,
                     "grid_steps_off": math.log(p["lr_opt"] / cell["lr_opt"]) / math.log(step),
                     "grid_steps_off_without_horizon": math.log(base / cell["lr_opt"]) / math.log(step),
                     "a_D": fit.lr_law["a_D"], "fitted_on": f"D {horizons[0]:.3g}..{horizons[-2]:.3g}"})
    return pd.DataFrame(rows)
