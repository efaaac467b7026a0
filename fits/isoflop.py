"""IsoFLOP analyses (Hoffmann et al. 2022, Approaches 1 and 2) as cross-checks of a surface fit.

Approach 2: at each compute budget fit a parabola of loss in log N; its vertex is that budget's
compute-optimal N; power laws N_opt ~ C^a and D_opt ~ C^b through the vertices.
Approach 1: the lower envelope of loss against compute; with one final loss per run, that is
the best run of each budget, and power laws through those runs.
Intervals come from bootstrap resampling of runs within each budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import budget_groups, budget_of, read_table, surface_data
from .errors import InputError

__all__ = ["IsoflopResult", "isoflop_analysis", "parabola_vertex"]


def parabola_vertex(log_n: np.ndarray, loss: np.ndarray) -> tuple[float, float] | None:
    """Vertex (log N*, L*) of a least-squares parabola of loss in log N; None unless convex.

    >>> x = np.log([1e8, 3e8, 1e9, 3e9]); v = parabola_vertex(x, (x - np.log(5e8))**2 + 2)
    >>> f"{np.exp(v[0]):.3g} {v[1]:.3g}"
    '5e+08 2'
    """
    if len(np.unique(log_n)) < 3:
        return None
    x0 = np.mean(log_n)
    c2, c1, c0 = np.polyfit(log_n - x0, loss, 2)
    if not c2 > 0:
        return None
    xv = -c1 / (2 * c2)
    return float(x0 + xv), float(c0 - c1 * c1 / (4 * c2))


def vertex_check(log_n: np.ndarray, loss: np.ndarray) -> tuple[tuple[float, float] | None, str]:
    """The parabola vertex of one isoFLOP curve and whether it can be read: "ok"; "too_few_sizes"
    (< 3 distinct sizes); "flat" (not convex, or the curve rises from its vertex to the grid's edges
    by less than twice its scatter: the minimum is not placed); "off_grid" (the vertex lies outside
    the sampled sizes: the parabola extrapolates, and with alpha != beta a symmetric parabola is
    biased there; re-centre the grid on it).

    >>> x = np.log([1e8, 2e8, 4e8]); vertex_check(x, (x - np.log(1e9))**2)[1]
    'off_grid'
    """
    v = parabola_vertex(log_n, loss)
    if len(np.unique(log_n)) < 3:
        return None, "too_few_sizes"
    if v is None:
        return None, "flat"
    x0 = np.mean(log_n)
    c = np.polyfit(log_n - x0, loss, 2)
    resid = loss - np.polyval(c, log_n - x0)
    dof = max(len(loss) - 3, 1)
    scatter = float(np.sqrt(np.sum(resid**2) / dof)) if len(loss) > 3 else 0.0
    rise = c[0] * (0.5 * (log_n.max() - log_n.min())) ** 2
    if rise <= 2.0 * scatter:
        return v, "flat"
    if not log_n.min() <= v[0] <= log_n.max():
        return v, "off_grid"
    return v, "ok"


def _power_law(logc: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of log y = slope log C + intercept (NaN with < 2 budgets)."""
    if len(logc) < 2:
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(logc, logy, 1)
    return float(slope), float(icpt)


def _optima(frame: pd.DataFrame, groups: np.ndarray, idx_by_group: dict) -> pd.DataFrame:
    rows = []
    for g, idx in idx_by_group.items():
        sub = frame.iloc[idx]
        C = float(np.exp(np.mean(np.log(sub["C"]))))
        best = sub.iloc[int(np.argmin(sub["loss"].to_numpy()))]
        rows.append({"approach": 1, "budget": g, "flops": float(best["C"]), "params_opt": float(best["N"]),
                     "tokens_opt": float(best["D"]), "loss_opt": float(best["loss"]), "n_runs": len(sub)})
        v, check = vertex_check(np.log(sub["N"].to_numpy()), sub["loss"].to_numpy())
        if v is not None:
            n_opt = float(np.exp(v[0]))
            rows.append({"approach": 2, "budget": g, "flops": C, "params_opt": n_opt,
                         "tokens_opt": C / (6 * n_opt), "loss_opt": v[1], "n_runs": len(sub),
                         "sizes_min": float(sub["N"].min()), "sizes_max": float(sub["N"].max()), "vertex": check})
    out = pd.DataFrame(rows)
    if "vertex" not in out.columns:
        out["vertex"] = None
    out.loc[out["approach"] == 1, "vertex"] = "best run"
    return out


def _usable(opt: pd.DataFrame) -> pd.DataFrame:
    """Approach 1 rows, and Approach 2 vertices that can be read (see :func:`vertex_check`); when
    fewer than two vertices can, all of them (the result then carries a warning)."""
    a2 = opt[opt["approach"] == 2]
    ok = a2[a2["vertex"] == "ok"]
    return pd.concat([opt[opt["approach"] == 1], ok if len(ok) >= 2 else a2])


def _exponents(opt: pd.DataFrame) -> dict:
    out = {}
    for ap, sub in _usable(opt).groupby("approach"):
        logc = np.log(sub["flops"].to_numpy())
        a, ka = _power_law(logc, np.log(sub["params_opt"].to_numpy()))
        b, kb = _power_law(logc, np.log(sub["tokens_opt"].to_numpy()))
        out[int(ap)] = {"a": a, "b": b, "log_k_params": ka, "log_k_tokens": kb, "n_budgets": len(sub)}
    return out


@dataclass(frozen=True, eq=False)
class IsoflopResult:
    """Per-budget optima and the power laws through them, for Approaches 1 and 2."""

    budgets: pd.DataFrame
    exponents: pd.DataFrame
    runs: pd.DataFrame
    level: float

    def predict(self, C, approach: int = 2) -> pd.DataFrame:
        """N_opt and D_opt at budgets C from one approach's power laws."""
        if approach not in self.exponents.index:
            raise InputError(f"approach: must be one of {list(self.exponents.index)}; got {approach!r}")
        e = self.exponents.loc[approach]
        C = np.atleast_1d(np.asarray(C, dtype=float))
        N = np.exp(e["log_k_params"]) * C ** e["a"]
        D = np.exp(e["log_k_tokens"]) * C ** e["b"]
        return pd.DataFrame({"flops": C, "params": N, "tokens": D, "tokens_per_param": D / N})

    def to_frame(self) -> pd.DataFrame:
        return self.exponents.copy()

    @property
    def warnings(self) -> list[str]:
        """Named checks that limit what the exponents mean: off-grid or flat vertices, too few
        budgets, exponents outside (0, 1)."""
        out = []
        a2 = self.budgets[self.budgets["approach"] == 2]
        for _, r in a2[a2["vertex"] != "ok"].iterrows():
            what = {"off_grid": f"its vertex N*={r['params_opt']:.4g} lies outside the sampled sizes "
                                f"{r['sizes_min']:.4g}-{r['sizes_max']:.4g}: the parabola extrapolates (and a "
                                "symmetric parabola is biased when alpha != beta); re-centre the grid on it",
                    "flat": "the curve is too flat to place its minimum (it rises less than twice its scatter "
                            "across the grid); widen the grid"}.get(r["vertex"], r["vertex"])
            used = (a2["vertex"] == "ok").sum() >= 2
            out.append(f"{r['vertex']}: budget {r['flops']:.3g}: {what}"
                       + ("; left out of the power law" if used else "; kept, as fewer than two vertices can be read"))
        n_ok = int((a2["vertex"] == "ok").sum())
        if n_ok < 3:
            out.append(f"too_few_budgets: {n_ok} readable isoFLOP vertices; a power law through fewer than "
                       "three has no check on its own fit")
        if 2 in self.exponents.index:
            a = float(self.exponents.loc[2, "a"])
            if not 0.0 < a < 1.0:
                out.append(f"implausible_exponent: Approach 2 gives N_opt ~ C^{a:.3g} (outside 0-1: N and D "
                           "cannot both grow with compute); do not use it")
        return out

    def report(self) -> str:
        warns = self.warnings
        lines = (["WARNINGS (read these first):"] + [f"  - {w}" for w in warns] + [""] if warns else []) + [
                 "IsoFLOP analysis (Hoffmann et al. 2022): N_opt ~ C^a, D_opt ~ C^b",
                 self.exponents.to_string(float_format=lambda v: f"{v:.4g}"), "",
                 "Per-budget optima:", self.budgets.to_string(float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        return "<b>IsoFLOP analysis</b>" + self.exponents.to_html()

    def plot(self, ax=None):
        """IsoFLOP curves: loss against N per budget, the parabolas and their vertices."""
        from ._plot import get_axes

        ax = get_axes(ax)
        for k, (g, sub) in enumerate(self.runs.groupby("budget")):
            color = f"C{k % 10}"
            ax.scatter(sub["N"], sub["loss"], s=10, color=color)
            x = np.log(sub["N"].to_numpy())
            if len(np.unique(x)) >= 3:
                c = np.polyfit(x, sub["loss"], 2)
                xs = np.linspace(x.min(), x.max(), 50)
                ax.plot(np.exp(xs), np.polyval(c, xs), color=color, lw=1,
                        label=f"C={np.exp(np.mean(np.log(sub['C']))):.2g}")
        v = self.budgets[self.budgets["approach"] == 2]
        ax.scatter(v["params_opt"], v["loss_opt"], marker="*", s=80, color="k", label="vertices", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("loss")
        ax.legend(fontsize="x-small", ncol=2)
        return ax


def isoflop_analysis(df, n: str = "params", d: str | None = "tokens", loss: str = "loss",
                     flops: str | None = None, budget: str | None = None,
                     budget_width: float = 0.25, bootstrap: int = 200, level: float = 0.9,
                     seed: int = 0) -> IsoflopResult:
    """IsoFLOP Approaches 1 and 2 with bootstrap intervals.

    Parameters
    ----------
    df, n, d, loss, flops : as in :func:`fits.fit_loss_surface`.
    budget : column labelling each run's compute budget; default: :func:`fits.budget_groups`
        with bins ``budget_width`` decades wide when budgets vary continuously.
    bootstrap : refits resampling runs within each budget (0 for none).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rows = [(n, c / (6 * n), 1.8 + 480 / n**0.34 + 2000 / (c / (6 * n))**0.37)
    ...         for c in (1e18, 1e19, 1e20) for n in np.logspace(7, 9.5, 9)]
    >>> r = isoflop_analysis(pd.DataFrame(rows, columns=["params", "tokens", "loss"]), bootstrap=0)
    >>> round(float(r.exponents.loc[2, "a"]), 2)
    0.49
    """
    table = read_table(df)  # read once: the budget column comes from the same table
    frame = surface_data(table, n=n, d=d, loss=loss, flops=flops, min_points=3)
    if budget is not None:
        if budget not in table.columns:
            raise InputError(f"budget: column {budget!r} not found; columns are {list(table.columns)}")
        groups = pd.factorize(table[budget].to_numpy())[0][: len(frame)]
    else:
        groups = budget_groups(budget_of(frame), budget_width)
    frame = frame.assign(budget=groups)
    idx = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    opt = _optima(frame, groups, idx)
    if (opt["approach"] == 2).sum() < 2:
        raise InputError("df: Approach 2 needs at least two budgets with three or more distinct "
                         "model sizes and a convex loss curve; the table has "
                         f"{int((opt['approach'] == 2).sum())}")
    point = _exponents(opt)

    rng = np.random.default_rng(seed)
    samples = {1: [], 2: []}
    per_budget = []
    for _ in range(bootstrap):
        ridx = {g: rng.choice(i, size=len(i), replace=True) for g, i in idx.items()}
        o = _optima(frame, groups, ridx)
        per_budget.append(o.assign(sample=_))
        for ap, e in _exponents(o).items():
            if e["n_budgets"] >= 2:
                samples[ap].append((e["a"], e["b"]))
    q = ((1 - level) / 2, (1 + level) / 2)
    rows = {}
    for ap, e in point.items():
        row = {"a": e["a"], "b": e["b"]}
        if samples[ap]:
            s = np.array(samples[ap])
            row["a_low"], row["a_high"] = np.nanquantile(s[:, 0], q)
            row["b_low"], row["b_high"] = np.nanquantile(s[:, 1], q)
        else:
            row["a_low"] = row["a_high"] = row["b_low"] = row["b_high"] = float("nan")
        row.update({"log_k_params": e["log_k_params"], "log_k_tokens": e["log_k_tokens"],
                    "n_budgets": e["n_budgets"]})
        rows[ap] = row
    exps = pd.DataFrame.from_dict(rows, orient="index")
    exps.index.name = "approach"
    if per_budget:
        allb = pd.concat(per_budget)
        lims = allb.groupby(["approach", "budget"])["params_opt"].quantile(list(q)).unstack()
        lims.columns = ["params_low", "params_high"]
        opt = opt.merge(lims.reset_index(), on=["approach", "budget"], how="left")
    return IsoflopResult(budgets=opt, exponents=exps, runs=frame, level=level)
