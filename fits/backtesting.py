"""Extrapolation backtests: fit on the smaller budgets, predict the largest held-out ones.

This is how a user decides whether to trust an extrapolation: the error of the predicted
loss, the error of the predicted compute-optimal N at the held-out budget, and how often the
held-out runs fell inside their stated prediction intervals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import budget_groups, budget_of, surface_data
from .errors import InputError
from .isoflop import vertex_check
from .fitting import refit_frame
from .surface import LossSurfaceFit

__all__ = ["BacktestResult", "backtest"]


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Held-out points with predictions, per-budget optimum errors, and a summary."""

    points: pd.DataFrame
    budgets: pd.DataFrame
    summary: dict
    fit: LossSurfaceFit

    def to_frame(self) -> pd.DataFrame:
        return self.points.copy()

    def report(self) -> str:
        s = self.summary
        lines = [
            f"Backtest: trained on {s['n_train']} runs up to C={s['train_C_max']:.3g}, "
            f"held out {s['n_test']} runs at {s['n_holdout_budgets']} larger budget(s)",
            f"  loss abs. relative error: mean {s['mean_abs_rel_error']:.3%}, "
            f"median {s['median_abs_rel_error']:.3%}, max {s['max_abs_rel_error']:.3%}",
            f"  {s['level']:.0%} interval coverage of held-out runs: {s['coverage']:.1%} "
            f"({s['interval']})",
        ]
        if np.isfinite(s.get("n_opt_rel_error", np.nan)):
            lines.append(f"  compute-optimal N at held-out budgets: relative error "
                         f"{s['n_opt_rel_error']:+.1%} (predicted vs isoFLOP vertex of held-out runs)")
        lines += ["", self.budgets.to_string(float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        return "<pre>" + self.report() + "</pre>"

    def plot(self, ax=None):
        """Predicted against observed loss for the held-out runs, with interval bars."""
        from ._plot import get_axes

        ax = get_axes(ax)
        p = self.points
        ax.errorbar(p["loss"], p["predicted"], yerr=[p["predicted"] - p["low"], p["high"] - p["predicted"]],
                    fmt="o", ms=3, alpha=0.7, label="held-out runs")
        lims = [min(p["loss"].min(), p["low"].min()), max(p["loss"].max(), p["high"].max())]
        ax.plot(lims, lims, "k--", lw=1, label="y = x")
        ax.set_xlabel("observed loss")
        ax.set_ylabel("predicted loss")
        ax.legend(fontsize="small")
        return ax


def backtest(df, n: str = "params", d: str | None = "tokens", loss: str = "loss",
             flops: str | None = None, form: str = "chinchilla", holdout: int = 1,
             bootstrap: int = 200, level: float = 0.9, seed: int = 0,
             budget_width: float = 0.25, **fit_kwargs) -> BacktestResult:
    """Fit on all but the ``holdout`` largest compute budgets and score the held-out runs.

    Parameters
    ----------
    df, n, d, loss, flops, form : as in :func:`fits.fit_loss_surface`.
    holdout : number of largest budgets (see :func:`fits.budget_groups`) to hold out.
    bootstrap : bootstrap refits of the training fit, for its prediction intervals.
    level : interval level whose coverage is reported.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> rows = [(n, c / (6 * n)) for c in (1e17, 1e18, 1e19, 1e20) for n in np.logspace(6.5, 9, 7)]
    >>> t = pd.DataFrame(rows, columns=["params", "tokens"])
    >>> t["loss"] = (1.8 + 480 / t.params**0.34 + 2000 / t.tokens**0.37) * np.exp(rng.normal(0, .005, len(t)))
    >>> r = backtest(t, bootstrap=50)
    >>> r.summary["mean_abs_rel_error"] < 0.02
    True
    """
    if not isinstance(holdout, (int, np.integer)) or holdout < 1:
        raise InputError(f"holdout: must be a positive integer; got {holdout!r}")
    frame = surface_data(df, n=n, d=d, loss=loss, flops=flops,
                         extra={"U": fit_kwargs["unique_tokens"]} if fit_kwargs.get("unique_tokens") else None)
    groups = budget_groups(budget_of(frame), budget_width)
    n_groups = int(groups.max()) + 1
    if n_groups - holdout < 2:
        raise InputError(f"holdout: the table has {n_groups} budget(s); holding out {holdout} leaves "
                         "fewer than 2 to fit on")
    cut = n_groups - holdout
    train, test = frame[groups < cut], frame[groups >= cut]
    if fit_kwargs.get("unique_tokens"):
        fit_kwargs["unique_tokens"] = "U"
    fit = refit_frame(train, form=form, bootstrap=bootstrap, seed=seed, **fit_kwargs)
    var = {"unique_tokens": test["U"].to_numpy()} if "U" in test else {}
    N, D = test["N"].to_numpy(), test["D"].to_numpy()
    if bootstrap:
        iv = fit.predict_interval(N, D, level=level, **var)
        pred, low, high, kind = iv["loss"].to_numpy(), iv["low"].to_numpy(), iv["high"].to_numpy(), iv["kind"].iloc[0]
    else:
        pred = fit.predict(N, D, **var)
        low = high = np.full_like(pred, np.nan)
        kind = "no interval (bootstrap=0)"
    points = pd.DataFrame({"params": N, "tokens": D, "flops": test["C"].to_numpy(),
                           "budget": groups[groups >= cut], "loss": test["loss"].to_numpy(),
                           "predicted": pred, "low": low, "high": high})
    points["abs_rel_error"] = np.abs(points["predicted"] / points["loss"] - 1.0)
    points["inside"] = (points["loss"] >= points["low"]) & (points["loss"] <= points["high"])

    rows = []
    for g, sub in points.groupby("budget"):
        C = float(np.exp(np.mean(np.log(sub["flops"]))))
        v, check = vertex_check(np.log(sub["params"].to_numpy()), sub["loss"].to_numpy())
        n_ref = float(np.exp(v[0])) if check == "ok" else np.nan  # an off-grid or flat vertex measures nothing
        n_pred = float(fit.optimal_allocation(C, level=None)["params"].iloc[0])
        rows.append({"budget": g, "flops": C, "n_runs": len(sub), "params_opt_predicted": n_pred,
                     "params_opt_observed": n_ref, "vertex": check, "n_opt_rel_error": n_pred / n_ref - 1.0,
                     "mean_abs_rel_error": sub["abs_rel_error"].mean(),
                     "coverage": sub["inside"].mean() if bootstrap else np.nan})
    budgets = pd.DataFrame(rows)
    nerr = budgets["n_opt_rel_error"].dropna()
    summary = {
        "n_train": len(train), "n_test": len(test), "n_holdout_budgets": holdout,
        "train_C_max": float(train["C"].max()),
        "mean_abs_rel_error": float(points["abs_rel_error"].mean()),
        "median_abs_rel_error": float(points["abs_rel_error"].median()),
        "max_abs_rel_error": float(points["abs_rel_error"].max()),
        "coverage": float(points["inside"].mean()) if bootstrap else float("nan"),
        "level": level, "interval": kind,
        "n_opt_rel_error": float(np.exp(np.mean(np.log1p(nerr))) - 1.0) if len(nerr) else float("nan"),
    }
    return BacktestResult(points=points, budgets=budgets, summary=summary, fit=fit)
