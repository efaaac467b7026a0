"""Choosing among loss-surface forms by the data's own extrapolation backtests.

Every candidate form is fitted on rolling origins along three axes: in compute (fit the budgets
below budget k, score budget k's runs), in model size and in token count (likewise), for the
largest few k. The form with the lowest mean held-out error is chosen; a form with
fewer parameters that comes within :data:`PARSIMONY` of it is preferred (a law that is right need
not lose to a more flexible one). How much the credible forms (backtest error within
:data:`CREDIBLE` x the best) disagree is model uncertainty: :class:`fits.LossSurfaceFit` carries
their full-data fits and widens its intervals by their spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import budget_groups, budget_of
from .errors import InputError
from .forms import get_form
from .isoflop import vertex_check

__all__ = ["CANDIDATES", "FormComparison", "score_forms", "extrapolation_folds", "plot_forms"]

#: forms ``form="auto"`` weighs, simplest first (the order breaks ties)
CANDIDATES = ("chinchilla", "beta_n", "interaction", "kaplan", "farseer")
PARSIMONY = 0.10   # a simpler form within 10% of the best backtest error is preferred
CREDIBLE = 2.0     # forms within 2x the best error count in the model-uncertainty spread
MIN_SIZES = {"farseer": 5}   # distinct model sizes a form needs in its training set (default 3)
# a form whose backtests put N_opt more than this (relative) off the held-out isoFLOP minimum, i.e.
# beyond a factor 2, is not chosen to allocate, however well it predicts the loss
N_OPT_TOLERANCE = 1.0


@dataclass(frozen=True, eq=False)
class FormComparison:
    """Backtest scores of candidate forms: ``table`` (one row per form), ``folds`` (one row per form
    and held-out fold), the chosen form, why, and the credible forms' weights."""

    table: pd.DataFrame
    folds: pd.DataFrame
    chosen: str
    reason: str
    weights: dict

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def to_dict(self) -> dict:
        return {"table": self.table.reset_index().to_dict("records"), "chosen": self.chosen,
                "reason": self.reason, "weights": self.weights}

    def report(self) -> str:
        show = self.table.copy()
        for c in ("mean_abs_rel_error", "worst_abs_rel_error", "n_opt_abs_rel_error", "coverage"):
            show[c] = show[c].map(lambda v: "-" if not np.isfinite(v) else f"{v:.2%}")
        return "\n".join(["Form selection by extrapolation backtest (rolling origins in compute, model size and "
                          "tokens; 90% prediction-interval coverage)", show.to_string(), "", f"chosen: {self.reason}"])

    def __str__(self) -> str:
        return self.report()

    def plot(self, ax=None):
        """Held-out error of each form, fold by fold."""
        from ._plot import get_axes

        ax = get_axes(ax)
        for k, (form, sub) in enumerate(self.folds.groupby("form", sort=False)):
            ax.plot(np.arange(len(sub)), 100 * sub["mean_abs_rel_error"], "o-", color=f"C{k}", label=form)
        first = self.folds[self.folds["form"] == self.folds["form"].iloc[0]]
        ax.set_xticks(np.arange(len(first)), [f"{a} {h}" for a, h in zip(first["axis"], first["holdout"])],
                      rotation=30, fontsize="x-small")
        ax.set_ylabel("held-out mean |relative error| (%)")
        ax.set_title(f"backtests; chosen: {self.chosen}", fontsize="small")
        ax.legend(fontsize="small")
        return ax


def extrapolation_folds(frame: pd.DataFrame, max_folds: int = 3, axes=("compute", "size", "tokens"),
                        first_compute: int = 2):
    """Rolling origins along each axis: (axis, label, train mask, test mask) for the largest
    ``max_folds`` levels of compute budget, model size and token count (levels as
    :func:`fits.budget_groups` labels them), each fitted on the levels below it. An axis needs
    five levels (``first_compute`` + 1 for compute: a budget step is the basic extrapolation)."""
    out = []
    levels = {"compute": budget_groups(budget_of(frame)), "size": budget_groups(frame["N"].to_numpy(), 0.05),
              "tokens": budget_groups(frame["D"].to_numpy(), 0.05)}
    col = {"compute": "C", "size": "N", "tokens": "D"}
    for axis in axes:
        g = levels[axis]
        top = int(g.max())
        first = first_compute if axis == "compute" else 4
        for k in range(max(first, top - max_folds + 1), top + 1):
            test = g == k
            mid = float(np.exp(np.log(frame[col[axis]][test]).mean()))
            out.append((axis, f"{col[axis]}~{mid:.3g}", g < k, test))
    return out


def _observed_n_opt(test: pd.DataFrame) -> float:
    v, check = vertex_check(np.log(test["N"].to_numpy()), test["loss"].to_numpy())
    return math.exp(v[0]) if check == "ok" else math.nan


def score_forms(frame: pd.DataFrame, refit, forms=CANDIDATES, delta: float = 1e-3, seed: int = 0,
                max_folds: int = 3, bootstrap: int = 30, level: float = 0.9) -> FormComparison:
    """Score each of ``forms`` on rolling-origin backtests of a tidy frame (columns N, D, C, loss,
    optionally budget) and choose one; see the module docstring. ``refit`` fits a subset of the
    frame (:func:`fits.fitting.refit_frame`; :func:`fits.fitting.compare_forms` passes it)."""

    forms = [get_form(f).name for f in forms]
    if not forms:
        raise InputError("forms: give at least one candidate form")
    bad = [f for f in forms if get_form(f).variables]
    if bad:
        raise InputError(f"forms: {bad} need extra data columns and cannot be compared automatically")
    folds = extrapolation_folds(frame, max_folds)
    rows = []
    for form in forms:
        law = get_form(form)
        need = MIN_SIZES.get(form, 3)
        for axis, label, tr, te in folds:
            train, test = frame[tr], frame[te]
            row = {"form": form, "axis": axis, "holdout": label, "n_test": int(te.sum())}
            if train["N"].nunique() < need or train["D"].nunique() < 2 or len(train) <= len(law.param_names) + 1:
                rows.append({**row, "note": f"training set too small for {form} ({train['N'].nunique()} sizes, "
                                            f"{len(train)} runs)"})
                continue
            try:
                sub = refit(train, form=law, delta=delta, bootstrap=bootstrap, seed=seed, calibrate=False,
                                  group=None)
            except InputError as exc:
                rows.append({**row, "note": str(exc)})
                continue
            obs = test["loss"].to_numpy()
            N, D = test["N"].to_numpy(), test["D"].to_numpy()
            if bootstrap:
                pred, lo, hi = sub.interval(N, D, level=level)
                cover = float(np.mean((obs >= lo) & (obs <= hi)))
            else:
                pred, cover = sub.predict(N, D), math.nan
            err = np.abs(pred - obs) / obs
            n_err = math.nan
            alloc = sub.allocation(float(test["C"].median()), level=None)
            edge = bool(alloc["at_edge"][0])
            if axis == "compute" and not edge:
                n_obs = _observed_n_opt(test)
                if np.isfinite(n_obs):
                    n_err = abs(float(alloc["params"][0]) / n_obs - 1.0)
            rows.append({**row, "mean_abs_rel_error": float(err.mean()), "max_abs_rel_error": float(err.max()),
                         "coverage": cover, "n_opt_abs_rel_error": n_err, "at_edge": edge,
                         "status": sub.status, "note": ""})
    fold_df = pd.DataFrame(rows)
    for c in ("mean_abs_rel_error", "max_abs_rel_error", "coverage", "n_opt_abs_rel_error", "at_edge"):
        if c not in fold_df.columns:
            fold_df[c] = math.nan
    table = []
    for form in forms:
        f = fold_df[fold_df["form"] == form]
        scored = f.dropna(subset=["mean_abs_rel_error"])
        complete = len(scored) == len(f) and len(f) > 0
        w = scored["n_test"].to_numpy(float)
        table.append({
            "form": form, "n_params": len(get_form(form).param_names), "folds": len(scored),
            "mean_abs_rel_error": float(scored["mean_abs_rel_error"].mean()) if complete else math.nan,
            "worst_abs_rel_error": float(scored["max_abs_rel_error"].max()) if complete else math.nan,
            "n_opt_abs_rel_error": float(scored["n_opt_abs_rel_error"].median()) if complete else math.nan,
            "coverage": float(np.sum(scored["coverage"] * w) / w.sum()) if complete and bootstrap else math.nan,
            "edge_folds": int(scored["at_edge"].fillna(False).astype(bool).sum()),
            "note": "" if complete else (f.loc[f["note"] != "", "note"].iloc[0] if (f["note"] != "").any()
                                         else "no backtest fold"),
        })
    table = pd.DataFrame(table).set_index("form")
    chosen, reason, weights = _choose(table)
    return FormComparison(table=table, folds=fold_df, chosen=chosen, reason=reason, weights=weights)


def _allocation_failures(scored: pd.DataFrame) -> dict:
    """{form: why} for forms whose backtests misplace the compute-optimal N: N_opt more than
    :data:`N_OPT_TOLERANCE` off the held-out isoFLOP minimum, or a fold with no interior optimum."""
    out = {}
    for f, r in scored.iterrows():
        if r.get("edge_folds", 0) > 0:
            out[f] = f"no interior optimum in {int(r['edge_folds'])} backtest fold(s)"
        elif np.isfinite(r["n_opt_abs_rel_error"]) and r["n_opt_abs_rel_error"] > N_OPT_TOLERANCE:
            out[f] = f"N_opt backtest error {r['n_opt_abs_rel_error']:.0%}"
    return out


def _choose(table: pd.DataFrame) -> tuple[str, str, dict]:
    scored = table.dropna(subset=["mean_abs_rel_error"])
    if scored.empty:
        first = table.index[0]
        return first, (f"{first}: no form could be backtested ({table['note'].iloc[0]}); the first "
                       "candidate is used, unvalidated"), {first: 1.0}
    failed = _allocation_failures(scored)
    dropped = ""
    if failed and len(failed) < len(scored):  # a law that misplaces N_opt cannot be chosen to allocate
        dropped = "; not eligible, their backtests misplace N_opt: " + ", ".join(f"{f} ({w})" for f, w in failed.items())
        scored = scored.drop(index=list(failed))
    err = scored["mean_abs_rel_error"]
    best = err.idxmin()
    near = scored[err <= err[best] * (1.0 + PARSIMONY)]
    chosen = near.sort_values("n_params", kind="stable").index[0]
    others = ", ".join(f"{f} {e:.2%}" for f, e in err.items() if f != chosen)
    if chosen == best:
        reason = (f"{chosen}: lowest extrapolation-backtest error, {err[chosen]:.2%} mean over "
                  f"{int(scored.loc[chosen, 'folds'])} rolling-origin folds (others: {others or 'none'})")
    else:
        reason = (f"{chosen}: backtest error {err[chosen]:.2%}, within {PARSIMONY:.0%} of the best ({best} "
                  f"{err[best]:.2%}) with fewer parameters ({int(scored.loc[chosen, 'n_params'])} vs "
                  f"{int(scored.loc[best, 'n_params'])}) (others: {others})")
    ref = max(err[chosen], 1e-12)
    weights = {f: float((ref / max(e, 1e-12)) ** 2) for f, e in err.items() if e <= CREDIBLE * ref}
    total = sum(weights.values())
    return chosen, reason + dropped, {f: w / total for f, w in weights.items()}


def plot_forms(fit, data: pd.DataFrame | None = None, target: float | None = None, ax=None, level: float = 0.9):
    """Each candidate form's compute-optimal loss from the fitted budgets out to ``target`` (default
    100x the largest), with the chosen form's interval, the runs (columns C, loss) and the fitted
    range: where the laws part is where an extrapolation stops resting on the data."""
    from ._plot import get_axes

    ax = get_axes(ax)
    r = fit.data_range
    hi = target if target is not None else 100.0 * r["C_max"]
    C = np.logspace(math.log10(r["C_min"]), math.log10(max(hi, r["C_max"])) + 0.1, 60)
    weights = (fit.options.get("selection") or {}).get("weights") or {}
    forms = {fit.form: fit.params, **(fit.options.get("alternatives") or {})}
    ys = []
    for k, (form, params) in enumerate(forms.items()):
        law = get_form(form)
        N, D = law.optimal(C, params)
        loss = law(N, D, params)
        ys.append(loss)
        chosen = form == fit.form
        ax.plot(C, loss, color=f"C{k}", lw=2.2 if chosen else 1.2, ls="-" if weights.get(form, 0) > 0 else "--",
                label=f"{form}{' (chosen)' if chosen else ''}: backtest weight {weights.get(form, 0):.0%}")
        if chosen and fit.n_bootstrap:
            _, lo, hi_ = fit.interval(N, D, level=level)
            ax.fill_between(C, lo, hi_, color=f"C{k}", alpha=0.15, label=f"{level:.0%} interval ({form}, with "
                            "the credible forms' spread)")
    ax.axvspan(r["C_min"], r["C_max"], color="0.92", zorder=0, label="fitted budgets")
    if data is not None:
        ax.scatter(data["C"], data["loss"], s=6, color="k", alpha=0.4, label="runs")
    if target is not None:
        ax.axvline(target, color="k", ls=":", lw=1, label=f"target {target:.3g} FLOPs")
    y = np.concatenate([np.ravel(v) for v in ys] + ([data["loss"].to_numpy()] if data is not None else []))
    y = y[np.isfinite(y)]
    pad = 0.1 * (y.max() - y.min())
    ax.set_ylim(y.min() - pad, y.max() + pad)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("loss (compute-optimal frontier)")
    ax.set_title("candidate laws beyond the data", fontsize="small")
    ax.legend(fontsize="x-small")
    return ax
