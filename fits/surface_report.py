"""Views of a loss-surface fit for people: the parameter table, the text and HTML reports, the
form-selection table and the plot (mixed into :class:`fits.surface.LossSurfaceFit`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .forms import STATUSES, get_form

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportMixin"]


class ReportMixin:
    """Tables, reports and plots of :class:`fits.surface.LossSurfaceFit`."""

    @property
    def checks(self) -> "pd.DataFrame":
        """Identifiability checks as a tidy table (check, reason): the fit status when it is not
        ``converged``, then each named diagnostic (at_bound, E_not_identified, narrow_span,
        too_few_sizes, exponent_tradeoff, flat_isoflops, off_grid_isoflops, approach2_bias, nd_interaction)."""
        import pandas as pd

        rows = [] if self.status == "converged" else [(self.status, STATUSES.get(self.status, self.message))]
        for d in self.diagnostics:
            name, sep, reason = d.partition(": ")
            rows.append((name, reason) if sep and name.replace("_", "").isalnum() and " " not in name
                        else ("note", d))
        return pd.DataFrame(rows, columns=["check", "reason"])

    @property
    def selection(self) -> "pd.DataFrame | None":
        """The backtest table that chose this fit's form (``form="auto"``), else None: one row per
        candidate form with its held-out mean and worst error, N_opt error, interval coverage and
        weight in the model-uncertainty spread."""
        sel = self.options.get("selection")
        if not sel:
            return None
        import pandas as pd

        t = pd.DataFrame(sel["table"]).set_index("form")
        for c in t.columns:  # a saved fit stores NaN as null
            if c != "note":
                t[c] = pd.to_numeric(t[c], errors="coerce")
        t["weight"] = [sel["weights"].get(f, 0.0) for f in t.index]
        return t

    @property
    def selection_reason(self) -> str:
        sel = self.options.get("selection")
        if sel:
            return sel["reason"]
        preset = self.provenance.get("preset")
        return f"{self.form}: the form of preset {preset.get('name')}" if preset else f"{self.form}: named in the fit"

    def form_predictions(self, N, D) -> "pd.DataFrame":
        """Each candidate form's predicted loss at (N, D) (columns: form, weight, N, D, loss; weight 0
        for forms whose backtests were too poor to count), the chosen one first: how far the laws
        part at a point is how far to trust an extrapolation."""
        import pandas as pd

        N, D = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))
        weights = (self.options.get("selection") or {}).get("weights") or {self.form: 1.0}
        rows = [pd.DataFrame({"form": f, "weight": weights.get(f, 0.0), "N": N.ravel(), "D": D.ravel(),
                              "loss": np.ravel(get_form(f)(N, D, p))})
                for f, p in {self.form: self.params, **(self.options.get("alternatives") or {})}.items()]
        return pd.concat(rows, ignore_index=True)

    def to_frame(self, level: float = 0.95) -> "pd.DataFrame":
        """Tidy parameter table: value, stderr, low, high, fixed, one row per parameter."""
        import pandas as pd

        out = self.ci(level)
        out.insert(1, "stderr", pd.Series(self.stderr))
        out["fixed"] = [p in self.fixed for p in out.index]
        out["level"] = level
        return out

    def report(self, level: float = 0.95) -> str:
        """A plain-text report: form, data, objective, parameters with intervals, warnings."""
        from ._data import _n_words

        r = self.data_range
        lines = [
            f"Loss-surface fit: {self.form} ({self.law.citation})",
            f"  points: {self.n_points}   budgets: {int(r.get('n_budgets', 0))}   "
            f"N: {r['N_min']:.3g}..{r['N_max']:.3g}   D: {r['D_min']:.3g}..{r['D_max']:.3g}   "
            f"C: {r['C_min']:.3g}..{r['C_max']:.3g}",
            f"  objective (sum Huber, delta={self.options.get('delta')}): {self.objective:.6g}   "
            f"status: {self.status}",
            f"  N counts: {_n_words(self.n_definition)}",
            f"  residual scale (log loss, robust sd): {self.residual_scale:.4g}   run-to-run noise: "
            + (f"{self.options['run_noise']:.4g} ({self.options.get('run_noise_source', '')})"
               if self.options.get("run_noise") else "not measured (one seed per cell)"),
            f"  bootstrap refits: {self.n_bootstrap}   intervals: {self.interval_method}",
            "",
            self.to_frame(level).to_string(float_format=lambda v: f"{v:.6g}"),
        ]
        if self.selection is not None:
            show = self.selection.drop(columns=["note"]).copy()
            for c in ("mean_abs_rel_error", "worst_abs_rel_error", "n_opt_abs_rel_error", "coverage", "weight"):
                show[c] = show[c].map(lambda v: "-" if not np.isfinite(v) else f"{v:.2%}")
            lines += ["", "Form chosen by extrapolation backtest (rolling origins in compute, size and tokens):",
                      show.to_string(), f"  chosen: {self.selection_reason}"]
        bt = self.trust.get("backtest")
        if bt:
            lines += ["", f"Own backtest (fit budgets < {bt['holdout_flops']:.3g}, score that budget's "
                          f"{bt['n_test']} runs): mean |error| {bt['mean_abs_rel_error']:.2%}, worst "
                          f"{bt['max_abs_rel_error']:.2%}, inside the 90% interval {bt['coverage']:.0%}"]
        warns = self.warnings
        if warns:  # what limits trust comes first
            lines = ["WARNINGS (read these first):"] + [f"  - {w}" for w in warns] + [""] + lines
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        head = (f"<b>Loss-surface fit</b>: {self.form}, {self.n_points} points, "
                f"objective {self.objective:.4g}, {self.n_bootstrap} bootstrap refits")
        warn = "".join(f"<li>{w}</li>" for w in self.warnings)
        return (f"<ul>{warn}</ul>" if warn else "") + head + self.to_frame().to_html()

    def plot(self, ax=None, data: "pd.DataFrame | None" = None, level: float = 0.9):
        """Predicted loss along the compute-optimal frontier, with its interval, the fitted
        budget range shaded and, when ``data`` (a frame with columns C, loss) is given, the runs."""
        from ._plot import get_axes

        ax = get_axes(ax)
        r = self.data_range
        C = np.logspace(math.log10(r["C_min"]) - 0.5, math.log10(r["C_max"]) + 2.0, 60)
        alloc = self.optimal_allocation(C, level=level if self.n_bootstrap else None)
        ax.plot(C, alloc["loss"], color="C0", label=f"{self.form} fit, compute-optimal")
        if "loss_low" in alloc:
            ax.fill_between(C, alloc["loss_low"], alloc["loss_high"], color="C0", alpha=0.2,
                            label=f"{level:.0%} {self.interval_method.split(',')[0]}")
        ax.axvspan(r["C_min"], r["C_max"], color="0.9", zorder=0, label="fitted budgets")
        ys = [np.asarray(alloc["loss"], float), [r["loss_min"], r["loss_max"]]]
        if data is not None:
            ax.scatter(data["C"], data["loss"], s=8, color="k", alpha=0.5, label="runs")
            ys.append(np.asarray(data["loss"], float))
        # the axis follows the curve and the runs: an exploding interval is cut, and said so
        y = np.concatenate([np.ravel(v) for v in ys])
        y = y[np.isfinite(y)]
        lo, hi = float(y.min()), float(y.max())
        pad = 0.15 * (hi - lo if hi > lo else abs(hi) or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        if "loss_low" in alloc and (np.nanmax(alloc["loss_high"]) > hi + pad or np.nanmin(alloc["loss_low"]) < lo - pad):
            ax.set_title("interval cut at the axis: it exceeds the plotted range", fontsize="small")
        ax.set_xscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel("loss")
        ax.legend(fontsize="small")
        return ax
