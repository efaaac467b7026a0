"""Fitting a loss surface L(N, D) to a results table, with bootstrap and calibrated intervals.

Interval kinds
--------------
* ``"mean"``: where the fitted curve itself may lie (bootstrap quantiles of the prediction).
* ``"prediction"``: where a *new run* may land: the curve's uncertainty plus the scatter of
  runs around the surface. When the data have enough compute budgets, its width is calibrated
  conformal-style on the data's own extrapolation backtests (fit on the budgets below each of
  the largest few, score the next budget's runs), so that a stated 90% covers about 90% of
  runs one budget further out (which takes enough held-out runs to certify the level: 9 for
  90%). Otherwise residuals are resampled and the law's error with distance is added
  (uncalibrated); ``interval_method`` says which one a fit carries.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from statistics import NormalDist
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._io import atomic_write_text, read_json, to_jsonable
from .errors import InputError
from .forms import STATUSES, Form, get_form, law_floor

if TYPE_CHECKING:  # pandas and scipy load only when a table is built or a fit is run,
    import pandas as pd  # so that loading a saved fit to plan stays fast

__all__ = ["LossSurfaceFit", "fit_loss_surface", "load_fit", "residual_interaction"]

SCHEMA = "scaling-planner/loss-surface-fit"
SCHEMA_VERSION = 1
_MAD = 1.4826  # MAD -> standard deviation for a normal


@dataclass(frozen=True, eq=False)
class LossSurfaceFit:
    """An immutable loss-surface fit: parameters, uncertainty, data range and provenance.

    Build it with :func:`fit_loss_surface`, or load it with :func:`load_fit`.
    """

    form: str
    params: dict
    objective: float
    success: bool
    message: str
    n_points: int
    data_range: dict
    residual_scale: float
    residuals: np.ndarray
    bootstrap_params: np.ndarray | None = None
    conformal_scores: np.ndarray | None = None
    fixed: tuple = ()
    diagnostics: tuple = ()
    options: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    status: str = "converged"
    trust: dict = field(default_factory=dict)

    @property
    def noise_scale(self) -> float:
        """Run-to-run noise of one run's log loss that prediction intervals carry: the larger of
        the residual scale around the surface and the seed-to-seed noise measured on repeated
        runs (or given as ``run_noise``)."""
        return max(self.residual_scale, float(self.options.get("run_noise") or 0.0))

    @property
    def n_definition(self) -> dict:
        """What N counts: {"kind": "non_embedding" | "total" | "unspecified", "vocab_size": ...}."""
        return dict(self.options.get("n_definition") or {"kind": "unspecified"})

    @property
    def loss_unit(self) -> str:
        """What the loss measures (e.g. "nats per token (MassiveText, SentencePiece 32k)", "bits per byte");
        a loss is comparable only with losses in the same unit, on the same data and tokenizer."""
        return str(self.options.get("loss_unit") or "an unspecified unit")

    @property
    def shape_family(self) -> dict | None:
        """The probes' shape family (depth, d_head, ffn_ratio, vocab_size, seq_len, ...) when the
        fit was made from a probe export; the planner then builds shapes from the same family."""
        return self.options.get("shape_family")

    @property
    def warnings(self) -> list[str]:
        """What limits trust in this fit, most serious first: status, own backtest, interval width,
        then the data diagnostics."""
        out = []
        if self.status != "converged":
            out.append(f"fit status {self.status!r}: {STATUSES.get(self.status, '')} ({self.message})")
        out += list(self.trust.get("warnings", ()))
        if self.n_bootstrap and not self.calibrated() and not self.options.get("run_noise"):
            out.append(f"the prediction interval is not calibrated ({int(self.data_range.get('n_budgets', 0))} "
                       f"budgets, {self._n_scores} held-out runs; a calibrated 90% interval needs 5 budgets and "
                       "9 held-out runs) and carries no measured seed-to-seed noise (one seed per cell): it can "
                       "under-cover; repeat some runs with other seeds, or give run_noise")
        return out + list(self.diagnostics)

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

    # --- basic views ------------------------------------------------------------------------
    @property
    def law(self) -> Form:
        return get_form(self.form)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.law.param_names

    @property
    def n_bootstrap(self) -> int:
        return 0 if self.bootstrap_params is None else len(self.bootstrap_params)

    @property
    def _n_scores(self) -> int:
        return 0 if self.conformal_scores is None else len(self.conformal_scores)

    def calibrated(self, level: float = 0.9) -> bool:
        """Whether the prediction interval at ``level`` is conformal-calibrated: at least 5 held-out
        scores, and enough to certify the level (ceil((n + 1) level) <= n: 9 for 90%). With fewer the
        interval is the uncalibrated one (bootstrap, residuals, and the law's error with distance)
        rather than an unbounded one, and :attr:`warnings` says so."""
        n = self._n_scores
        return n >= 5 and math.ceil((n + 1) * level) <= n

    @property
    def interval_method(self) -> str:
        """Which prediction interval this fit gives at 90% (see the module docstring)."""
        if self.calibrated():
            return (f"prediction interval, conformal-calibrated on {self._n_scores} "
                    f"held-out runs from {self.options.get('calibration_budgets', '?')} "
                    "extrapolation backtests")
        if self.n_bootstrap:
            few = f": {self._n_scores} held-out runs cannot certify 90%" if self._n_scores else ""
            return f"prediction interval, bootstrap + resampled residuals (uncalibrated{few})"
        return "no interval (fit without bootstrap)"

    def _sample_columns(self) -> dict:
        """Bootstrap samples as {parameter: column of shape (B, 1)}, to broadcast against points."""
        if self.bootstrap_params is None:
            raise ValueError("intervals need bootstrap samples: refit with bootstrap > 0")
        return {p: self.bootstrap_params[:, j, None] for j, p in enumerate(self.param_names)}

    @property
    def stderr(self) -> dict:
        """Bootstrap standard deviation of each parameter (NaN without bootstrap)."""
        if self.bootstrap_params is None:
            return {p: float("nan") for p in self.param_names}
        return dict(zip(self.param_names, np.nanstd(self.bootstrap_params, axis=0, ddof=1)))

    def ci(self, level: float = 0.95) -> "pd.DataFrame":
        """Percentile bootstrap intervals of the parameters.

        Returns a DataFrame indexed by parameter with columns value, low, high (low/high are
        NaN without bootstrap samples; a fixed parameter has low == high == value).
        """
        import pandas as pd

        _check_level(level)
        rows = {}
        for j, p in enumerate(self.param_names):
            lo = hi = float("nan")
            if self.bootstrap_params is not None:
                lo, hi = np.nanquantile(self.bootstrap_params[:, j], [(1 - level) / 2, (1 + level) / 2])
            rows[p] = {"value": self.params[p], "low": float(lo), "high": float(hi)}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "parameter"
        return out

    # --- prediction -------------------------------------------------------------------------
    def predict(self, N, D, **variables) -> np.ndarray:
        """Predicted loss at (N, D) (arrays broadcast); data-constrained forms take unique_tokens=U."""
        N, D, variables = self._inputs(N, D, variables)
        return np.asarray(self.law(N, D, self.params, **variables), dtype=float)

    def _inputs(self, N, D, variables):
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        for name, v in (("N", N), ("D", D)):
            if np.any(~np.isfinite(v) | (v <= 0)):
                raise InputError(f"{name}: must be finite and positive; got {v}")
        var = {}
        law = self.law
        if "U" in law.variables:
            U = variables.pop("unique_tokens", variables.pop("U", None))
            var["U"] = np.broadcast_to(D if U is None else np.asarray(U, dtype=float), np.broadcast(N, D).shape)
        if variables:
            raise InputError(f"predict: unexpected arguments {sorted(variables)} for form {self.form!r}")
        return N, D, var

    def _log_samples(self, N, D, variables) -> np.ndarray:
        """log predicted loss for every bootstrap sample, shape (B, n points)."""
        flat = lambda a: np.ravel(a)[None, :]
        with np.errstate(all="ignore"):
            return np.log(self.law(flat(N), flat(D), self._sample_columns(),
                                   **{k: flat(v) for k, v in variables.items()}))

    def interval(self, N, D, level: float = 0.9, kind: str = "prediction",
                 **variables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss, low, high) arrays at (N, D); see :meth:`predict_interval`."""
        _check_level(level)
        if kind not in ("prediction", "mean"):
            raise InputError(f"kind: must be 'prediction' or 'mean'; got {kind!r}")
        N, D, var = self._inputs(N, D, dict(variables))
        shape = np.broadcast(N, D).shape
        N, D = np.broadcast_to(N, shape), np.broadcast_to(D, shape)
        center, lo, hi = self._log_interval(N, D, var, level, kind)
        return tuple(np.exp(a).reshape(shape) for a in (center, lo, hi))

    @property
    def extrapolation_error(self) -> float:
        """sd of this law's log-loss error per decade beyond the fitted runs (hull distance), which
        prediction intervals add in quadrature: the value saved with the fit, else the one the
        extrapolation benchmark measured for the form (:data:`EXTRAPOLATION_ERROR`; ``"auto"`` for a
        fit whose form was chosen by backtest, whose interval also carries the forms' spread)."""
        k = self.options.get("extrapolation_error")
        return float(k) if k is not None else extrapolation_error_of(self.form)

    def _scores(self, k: float | None = None) -> np.ndarray:
        """Calibration scores |log error| / sd of the held-out runs of the fit's own backtests, with sd
        grown by the per-decade error ``k`` (default :attr:`extrapolation_error`) at each run's
        distance beyond its backtest's fit; fits saved with bare scores give those."""
        c = np.asarray(self.conformal_scores, dtype=float)
        if c.ndim == 1:
            return c
        k = self.extrapolation_error if k is None else k
        return c[:, 0] / np.sqrt(c[:, 1] ** 2 + (k * c[:, 2]) ** 2)

    def _log_interval(self, N, D, var, level: float, kind: str = "prediction", k: float | None = None):
        """(centre, low, high) of log loss at broadcast (N, D), flattened; see :meth:`interval`.

        A prediction interval's sd is sqrt(bootstrap variance + run noise^2 + (k d)^2), with d the
        decades beyond the fitted runs and k the law's error per decade (measured per form by
        ``benchmarks/bench_extrapolation.py``): calibrated, its half-width is the conformal quantile of
        the backtests' scores times that sd; uncalibrated, the bootstrap and resampled residuals with
        z k d added in quadrature. The credible forms' spread is added in quadrature, and the low end
        never falls below the lower quantile of the law's own floor over the bootstrap samples."""
        center = np.log(self.law(N, D, self.params, **var)).ravel()
        logs = self._log_samples(N, D, var)
        q = ((1 - level) / 2, (1 + level) / 2)
        k = self.extrapolation_error if k is None else k
        d = self.extrapolation_decades(N, D).ravel()
        if kind == "mean":
            lo, hi = np.nanquantile(logs, q, axis=0)
        elif self.calibrated(level):
            sd = np.sqrt(np.nanvar(logs, axis=0) + self.noise_scale**2 + (k * d) ** 2)
            # calibration widens the model's interval, never narrows it: a quantile below the normal one
            # would shrink the measured per-decade error k along with the backtests' short-range scatter
            q_ = max(conformal_quantile(self._scores(k), level), NormalDist().inv_cdf((1 + level) / 2))
            lo, hi = center - q_ * sd, center + q_ * sd
        else:
            rng = np.random.default_rng(self.options.get("seed", 0))
            grow = self.noise_scale / self.residual_scale if self.residual_scale > 0 else 1.0
            noise = grow * rng.choice(self.residuals, size=logs.shape)
            lo, hi = np.nanquantile(logs + noise, q, axis=0)
            z = NormalDist().inv_cdf((1 + level) / 2) * k * d
            lo, hi = center - np.sqrt((center - lo) ** 2 + z**2), center + np.sqrt((hi - center) ** 2 + z**2)
        spread = self.form_spread(N.ravel(), D.ravel(), **{k_: np.ravel(v) for k_, v in var.items()})
        if np.any(spread > 0):  # model uncertainty: the credible forms' disagreement, in quadrature
            z = NormalDist().inv_cdf((1 + level) / 2) * spread
            lo = center - np.sqrt((center - lo) ** 2 + z**2)
            hi = center + np.sqrt((hi - center) ** 2 + z**2)
        floor = self.floor_low(N, D, level)
        lo = np.minimum(np.fmax(lo, np.log(floor)), center)  # the law's own floor bounds it
        return center, lo, np.maximum(hi, center)

    def floor_low(self, N, D, level: float = 0.9) -> np.ndarray:
        """The lower (1 - level)/2 quantile, over the bootstrap samples, of the law's floor at N (the
        loss with unlimited data: E for Chinchilla-type forms, exp(F(N)) for Farseer; 0 for Kaplan):
        no interval reaches below it. Flattened over the broadcast (N, D)."""
        N = np.ravel(np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))[0])
        cols = self._sample_columns() if self.n_bootstrap else {p: np.asarray(v) for p, v in self.params.items()}
        with np.errstate(all="ignore"):
            f = np.atleast_2d(law_floor(self.law, N[None, :], cols))
        f = np.where(np.isfinite(f), f, np.nan)
        if not np.isfinite(f).any():
            return np.zeros(N.shape)
        return np.nan_to_num(np.nanquantile(f, (1 - level) / 2, axis=0), nan=0.0) * np.ones(N.shape)

    # --- forms compared by backtest (form="auto") --------------------------------------------
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

    def form_spread(self, N, D, **variables) -> np.ndarray:
        """Weighted rms of the credible forms' log-loss differences from this fit's form at (N, D):
        the model uncertainty intervals carry (0 when the form was not chosen by backtest)."""
        alts = self.options.get("alternatives") or {}
        if not alts or variables:
            return np.zeros(np.broadcast(np.asarray(N), np.asarray(D)).shape)
        weights = self.options["selection"]["weights"]
        with np.errstate(all="ignore"):
            base = np.log(self.law(N, D, self.params))
            num = sum(weights.get(f, 0.0) * np.nan_to_num((np.log(get_form(f)(N, D, p)) - base) ** 2)
                      for f, p in alts.items() if weights.get(f, 0.0) > 0)
        total = weights.get(self.form, 0.0) + sum(weights.get(f, 0.0) for f in alts)
        return np.sqrt(np.broadcast_to(num, np.broadcast(np.asarray(N), np.asarray(D)).shape) / total)

    def interval_kind(self, kind: str = "prediction") -> str:
        """Words for the interval that :meth:`interval` gives for ``kind``."""
        return "mean-curve interval (bootstrap percentiles)" if kind == "mean" else self.interval_method

    def predict_interval(self, N, D, level: float = 0.9, kind: str = "prediction",
                         **variables) -> "pd.DataFrame":
        """Loss interval at (N, D): ``kind="prediction"`` for a new run (default) or ``"mean"``.

        Returns a DataFrame with columns N, D, loss, low, high, level, kind (one row per point).
        """
        import pandas as pd

        loss, lo, hi = self.interval(N, D, level, kind, **variables)
        N, D = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))
        return pd.DataFrame({"N": N.ravel(), "D": D.ravel(), "loss": loss.ravel(), "low": lo.ravel(),
                             "high": hi.ravel(), "level": level, "kind": self.interval_kind(kind)})

    def allocation(self, C, level: float | None = 0.9, kind: str = "prediction",
                   **variables) -> dict:
        """Compute-optimal allocation as a dict of arrays; see :meth:`optimal_allocation`."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if np.any(~np.isfinite(C) | (C <= 0)):
            raise InputError(f"C: budgets must be finite and positive FLOPs; got {C}")
        var = {}
        if "U" in self.law.variables:
            U = variables.pop("unique_tokens", variables.pop("U", None))
            if U is not None:
                var["U"] = np.broadcast_to(np.asarray(U, dtype=float), C.shape)
        N, D, edge = self.law.optimal(C, self.params, with_edge=True, **var)
        uvar = {"unique_tokens": var["U"]} if var else {}
        ok = np.isfinite(N) & np.isfinite(D) & (N > 0) & (D > 0)  # a degenerate law allocates 0 or inf
        with np.errstate(all="ignore"):
            loss = np.where(ok, np.asarray(self.law(np.where(ok, N, 1.0), np.where(ok, D, 1.0), self.params, **var),
                                           float), np.nan)
        out = {"flops": C, "params": N, "tokens": D, "tokens_per_param": D / N,
               "loss": loss, "decades_beyond_fit": self.decades_beyond_fit(C),
               "at_edge": edge, "allocation_check": np.array([self.allocation_check(c, n) if e else ""
                                                              for c, n, e in zip(C, N, edge)], dtype=object)}
        if self.bootstrap_params is not None and level is not None:
            _check_level(level)
            cols = self._sample_columns()
            Nb, Db, eb = self.law.optimal(C[None, :], cols, with_edge=True, **{k: v[None, :] for k, v in var.items()})
            out["edge_share"] = np.mean(eb, axis=0)  # refits with no interior optimum: left out of the quantiles
            q = ((1 - level) / 2, (1 + level) / 2)
            with np.errstate(all="ignore"):  # degenerate refits allocate 0 or inf: quantiles skip them
                for name, vals, point in (("params", Nb, N), ("tokens", Db, D), ("tokens_per_param", Db / Nb, D / N)):
                    vals = np.where(np.isfinite(vals) & ~eb, vals, np.nan)
                    lo, hi = np.nanquantile(vals, q, axis=0) if np.isfinite(vals).any() else (point, point)
                    out[f"{name}_low"], out[f"{name}_high"] = np.fmin(lo, point), np.fmax(hi, point)
            forms = self.form_allocations(C)
            if forms:  # model uncertainty: the credible forms' own optima widen N, D and D/N
                out["forms_in_interval"] = ", ".join(forms)
                for name, f in (("params", lambda n, d: n), ("tokens", lambda n, d: d),
                                ("tokens_per_param", lambda n, d: d / n)):
                    v = np.array([f(n, d) for n, d in forms.values()])
                    out[f"{name}_low"] = np.fmin(out[f"{name}_low"], v.min(axis=0))
                    out[f"{name}_high"] = np.fmax(out[f"{name}_high"], v.max(axis=0))
            out["loss_low"], out["loss_high"] = np.full(C.shape, np.nan), np.full(C.shape, np.nan)
            if ok.any():
                sub = {k: v[ok] for k, v in uvar.items()}
                _, out["loss_low"][ok], out["loss_high"][ok] = self.interval(N[ok], D[ok], level, kind, **sub)
        return out

    def form_allocations(self, C) -> dict:
        """{form: (N_opt, D_opt)} at budgets C for each credible alternative form (weight > 0 in a
        ``form="auto"`` fit) that has an interior optimum there; empty for a named form."""
        alts = self.options.get("alternatives") or {}
        weights = (self.options.get("selection") or {}).get("weights") or {}
        out = {}
        for f, p in alts.items():
            if weights.get(f, 0.0) <= 0:
                continue
            law = get_form(f)
            n, d, e = law.optimal(np.atleast_1d(np.asarray(C, float)), p, with_edge=True)
            out[f] = (np.where(e, np.nan, n), np.where(e, np.nan, d))
        return out

    def allocation_check(self, C: float, N: float) -> str:
        """Why the allocation at budget C has no interior optimum (the search ran to its edge at N)."""
        grows = N > math.sqrt(C / 6.0)
        direction = ("grows (fewer tokens per parameter)" if grows else "shrinks (more tokens per parameter)")
        cause = _edge_cause(self.law, self.params, N)
        return (f"no_interior_optimum: at C = {C:.3g} FLOPs the {self.form} law's loss keeps falling along the isoFLOP "
                f"line as N {direction}, to the search's edge (N {N:.3g}, D/N {C / 6.0 / N / N:.2g}): N_opt is not "
                f"identified and the plan's N, D and loss are artefacts of the law ({cause}); refit with another form "
                "(form='auto'), or with runs that bracket the optimum")

    def optimal_allocation(self, C, level: float | None = 0.9, kind: str = "prediction",
                           **variables) -> "pd.DataFrame":
        """Compute-optimal allocation at budgets C (FLOPs, C = 6 N D), scalar or array.

        Columns flops, params, tokens, tokens_per_param, loss, decades_beyond_fit; with bootstrap
        samples also *_low/*_high for params, tokens, tokens_per_param (percentiles of the
        refits' allocations) and loss (``kind`` interval at the point allocation). A
        data-constrained fit takes ``unique_tokens=U`` (without it, data are never repeated).
        """
        import pandas as pd

        return pd.DataFrame(self.allocation(C, level, kind, **variables))

    def extrapolation_decades(self, N, D) -> np.ndarray:
        """How far (N, D) lies outside the fitted runs, in decades: the distance in (log10 N,
        log10 D) to the convex hull of the fitted points (0 inside). A point beyond the largest
        size, the longest run, or the largest compute (large N with large D, a corner the runs
        did not reach) is outside; the hull of a fit saved without one is its N and D box."""
        pts = np.stack(np.broadcast_arrays(np.log10(np.asarray(N, dtype=float)),
                                           np.log10(np.asarray(D, dtype=float))), axis=-1)
        hull = self.options.get("hull")
        if not hull:
            r = self.data_range
            hull = [[math.log10(r[f"N_{a}"]), math.log10(r[f"D_{b}"])]
                    for a, b in (("min", "min"), ("max", "min"), ("max", "max"), ("min", "max"))]
        return hull_distance(pts, np.asarray(hull, dtype=float))

    def bend_at(self, N, D, only_warned: bool = True) -> np.ndarray | None:
        """The residual N x D bend carried to (N, D), in log loss: gamma (log10 N - centre)(log10 D -
        centre) (see :func:`residual_interaction`); None when the fit measured none (with
        ``only_warned``: none worth warning of)."""
        bend = self.options.get("nd_interaction")
        if not bend or (only_warned and not interaction_warned(bend)):
            return None
        return bend["gamma"] * (np.log10(np.asarray(N, float)) - bend["log10_N_centre"]) * (
            np.log10(np.asarray(D, float)) - bend["log10_D_centre"])

    def decades_beyond_fit(self, C) -> np.ndarray:
        """How many decades of compute C lies outside the fitted budgets (0 inside)."""
        logc = np.log10(np.asarray(C, dtype=float))
        lo, hi = math.log10(self.data_range["C_min"]), math.log10(self.data_range["C_max"])
        return np.maximum(0.0, np.maximum(logc - hi, lo - logc))

    # --- reports ----------------------------------------------------------------------------
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

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_jsonable({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "form": self.form, "param_names": list(self.param_names), "params": self.params,
            "objective": self.objective, "success": self.success, "message": self.message,
            "n_points": self.n_points, "data_range": self.data_range,
            "residual_scale": self.residual_scale, "residuals": self.residuals,
            "bootstrap_params": self.bootstrap_params, "conformal_scores": self.conformal_scores,
            "fixed": list(self.fixed), "diagnostics": list(self.diagnostics),
            "options": self.options, "provenance": self.provenance,
            "status": self.status, "trust": self.trust,
        })

    def to_json(self, path) -> Path:
        """Write the fit as JSON (atomically); :func:`load_fit` reads it back without the data."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: dict, source: str = "fit") -> "LossSurfaceFit":
        if d.get("schema") != SCHEMA:
            raise InputError(f"{source}: not a loss-surface fit (schema {d.get('schema')!r}, "
                             f"expected {SCHEMA!r})")
        try:
            form = get_form(d["form"])
            params = {p: float(d["params"][p]) for p in form.param_names}
            arr = lambda v: None if v is None else np.asarray(v, dtype=float)
            boot = arr(d.get("bootstrap_params"))
            if boot is not None and (boot.ndim != 2 or boot.shape[1] != len(form.param_names)):
                raise ValueError("bootstrap_params has the wrong shape")
            return cls(
                form=form.name, params=params, objective=float(d["objective"]),
                success=bool(d["success"]), message=str(d.get("message", "")),
                n_points=int(d["n_points"]),
                data_range={k: float(v) for k, v in d["data_range"].items()},
                residual_scale=float(d["residual_scale"]), residuals=arr(d["residuals"]),
                bootstrap_params=boot, conformal_scores=arr(d.get("conformal_scores")),
                fixed=tuple(d.get("fixed", ())), diagnostics=tuple(d.get("diagnostics", ())),
                options=dict(d.get("options", {})), provenance=dict(d.get("provenance", {})),
                status=str(d.get("status", "converged" if d["success"] else "max_iterations")),
                trust=dict(d.get("trust") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed loss-surface fit ({type(exc).__name__}: {exc})") from None


def load_fit(path) -> LossSurfaceFit:
    """Load a fit written by :meth:`LossSurfaceFit.to_json`.

    Raises InputError (a ValueError) naming the file when it is missing, corrupt or foreign.
    """
    return LossSurfaceFit.from_dict(read_json(path, "fit"), source=f"fit {str(path)!r}")


# --- fitting --------------------------------------------------------------------------------

def _edge_cause(law: Form, params: dict, N: float) -> str:
    """The parameters that make a law's isoFLOP loss fall without limit, in words."""
    if law.name == "beta_n":
        from .forms import BETA_N_REF

        e = params["beta"] + params["kappa"] * math.log10(N / BETA_N_REF)
        return (f"its data exponent beta + kappa log10(N/1e9) = {params['beta']:.3g} {params['kappa']:+.3g} "
                f"log10(N/1e9) is {e:.3g} at N = {N:.3g}, so the data term stops decaying")
    if law.name == "farseer":
        up = [p for p in ("f2", "g2", "h2") if params[p] > 0]
        if up:
            return f"{', '.join(up)} > 0: a Farseer term falls faster than any power of N"
        return "its fitted G(N) and H(N) let the data term shrink faster in N than D's loss grows"
    return "its fitted exponents give no interior minimum"


def _check_level(level):
    if not (isinstance(level, (float, int)) and 0 < level < 1):
        raise InputError(f"level: must be a number strictly between 0 and 1; got {level!r}")


def convex_hull(points: np.ndarray) -> list:
    """Vertices, counter-clockwise, of the convex hull of 2-D points (Andrew's monotone chain);
    degenerate sets give their extreme points."""
    pts = sorted(set(map(tuple, np.round(np.asarray(points, dtype=float), 12))))
    if len(pts) <= 2:
        return [list(p) for p in pts]
    cross = lambda o, a, b: (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return [list(p) for p in lower[:-1] + upper[:-1]]


def hull_distance(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Euclidean distance of points (..., 2) to a convex polygon (vertices counter-clockwise);
    0 inside.

    >>> float(hull_distance(np.array([3.0, 0.5]), np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])))
    2.0
    """
    a = hull
    b = np.roll(hull, -1, axis=0)
    p = points[..., None, :]                      # (..., 1, 2) against edges (E, 2)
    ab = b - a
    if len(hull) >= 3:
        inside = np.all(ab[:, 0] * (p[..., 1] - a[:, 1]) - ab[:, 1] * (p[..., 0] - a[:, 0]) >= -1e-12, axis=-1)
    else:
        inside = np.zeros(points.shape[:-1], dtype=bool)
    t = np.clip(np.sum((p - a) * ab, axis=-1) / np.maximum(np.sum(ab * ab, axis=-1), 1e-300), 0.0, 1.0)
    d = np.sqrt(np.min(np.sum((p - (a + t[..., None] * ab)) ** 2, axis=-1), axis=-1))
    return np.where(inside, 0.0, d)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split-conformal quantile with the finite-sample correction ceil((n+1) level) / n."""
    s = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(s) + 1) * level)
    if k > len(s):  # too few scores to certify this level: the honest interval is unbounded
        return math.inf
    return float(s[k - 1])


# what a bound that the data push against does to a plan, for the bounds that shape the optimum
_BOUND_EFFECT = {
    "f2": "the floor would fall faster than a power law in N, and N_opt beyond the runs would run higher",
    "g2": "the data coefficient would fall without limit in N, and N_opt would run to the search's edge",
    "h2": "the data exponent would fall without limit in N, and N_opt would run to the search's edge",
    "kappa": "the data exponent would move faster with N, moving N_opt and the loss beyond the runs",
    "E": "the floor would sit lower, and losses far beyond the runs would be lower",
}


def _diagnose(form: Form, params: dict, frame, fixed, data=None, delta: float = 1e-3) -> list[str]:
    """Parameters on a bound: pinned by the bound because the data push beyond it (the objective
    falls when the parameter steps outward: a bound that binds), or on it because the data do not
    pin it (flat); the E floor, and the sweep's span."""
    from ._engine import objective

    out = []
    lo, hi = form.theta_bounds()
    theta = form.to_theta(params)
    base = objective(form, theta, data, delta) if data is not None else math.nan
    for j, p in enumerate(form.param_names):
        if p in fixed or p not in form.bounds:
            continue
        span = (hi[j] - lo[j]) if np.isfinite(hi[j] - lo[j]) else 1.0
        at_lo, at_hi = abs(theta[j] - lo[j]) < 1e-3 * span, abs(theta[j] - hi[j]) < 1e-3 * span
        if not (at_lo or at_hi):
            continue
        a, b = form.bounds[p]
        slope = math.nan
        if np.isfinite(base):  # the objective's slope outward, per unit of the fitted coordinate
            h = 1e-4 * span
            out_theta = theta.copy()
            out_theta[j] += h if at_hi else -h
            with np.errstate(all="ignore"):
                slope = (objective(form, out_theta, data, delta) - base) / h
        if np.isfinite(slope) and slope * h < -1e-9 * max(base, 1e-300):  # a step outward lowers the objective
            out.append(f"at_bound: {p} = {params[p]:.4g} is held by its bound [{a}, {b}]: the data push beyond it "
                       f"(the objective falls {-slope:.2g} per unit outward), so the bound, not the data, sets it"
                       + (f"; freed, {_BOUND_EFFECT[p]}" if p in _BOUND_EFFECT else "")
                       + ": read allocations beyond the runs as conditional on this bound")
        else:
            out.append(f"at_bound: {p} = {params[p]:.4g} sits on its bound [{a}, {b}]: the data do not "
                       "pin it; treat derived allocations as unreliable")
    if "E" in params and "E" not in fixed and params["E"] < 0.01 * frame["loss"].min():
        out.append(f"E_not_identified: E = {params['E']:.3g} is near 0: the runs do not reach the loss floor, so the "
                   "irreducible loss (and any prediction far beyond the data) is not identified")
    for col, what in (("N", "model size N"), ("D", "token count D")):
        span = math.log10(frame[col].max() / frame[col].min())
        if span < 1.0:
            out.append(f"narrow_span: {what} spans only {span:.2f} decades (< 1): its exponent is barely "
                       "identifiable; widen the sweep")
    return out


# An N x D bend of the residuals is warned of when it would move a prediction one decade beyond the data in
# both N and D by more than this (log loss) and lies 3 standard errors from 0. Against the Chinchilla form it
# is -0.012 on Chinchilla's own table, -0.025 on Farseer's, -0.08 on the default CPU probes
# (benchmarks/results/interaction.json).
INTERACTION_WARN = 0.02


def residual_interaction(N, D, log_resid) -> dict:
    """The N x D interaction left in a fit's residuals (log observed - log predicted): the coefficient
    ``gamma`` of (log10 N - mean)(log10 D - mean) in a least-squares fit with an intercept and both main
    effects, its standard error ``se``, and ``share``, the part of the residual variance it explains
    beyond the other three terms. gamma < 0: larger models gain more from more data than the form
    allows, so losses beyond the data in both N and D fall below its predictions."""
    n, d, r = np.log10(np.asarray(N, float)), np.log10(np.asarray(D, float)), np.asarray(log_resid, float)
    n, d = n - n.mean(), d - d.mean()
    X = np.column_stack([np.ones_like(n), n, d, n * d])
    coef, *_ = np.linalg.lstsq(X, r, rcond=None)
    ssr = float(((r - X @ coef) ** 2).sum())
    base, *_ = np.linalg.lstsq(X[:, :3], r, rcond=None)
    ssr0 = float(((r - X[:, :3] @ base) ** 2).sum())
    dof = max(len(r) - 4, 1)
    cov = ssr / dof * np.linalg.pinv(X.T @ X)
    return {"gamma": float(coef[3]), "se": float(math.sqrt(max(cov[3, 3], 0.0))),
            "share": float(1 - ssr / ssr0) if ssr0 > 0 else 0.0}


def _interaction_of(frame, log_resid) -> dict | None:
    """:func:`residual_interaction` of a fit's rows with the centre it is measured about (log10 N, log10 D
    means), or None when the table is too small to tell (under 8 rows, or under 3 sizes or token counts)."""
    if len(frame) < 8 or frame["N"].nunique() < 3 or frame["D"].nunique() < 3:
        return None
    return {**residual_interaction(frame["N"], frame["D"], log_resid),
            "log10_N_centre": float(np.log10(frame["N"]).mean()), "log10_D_centre": float(np.log10(frame["D"]).mean())}


def interaction_warned(bend: dict | None) -> bool:
    """Whether a residual bend is large enough (> ``INTERACTION_WARN``) and sure enough (3 se) to warn of."""
    return bool(bend) and abs(bend["gamma"]) > INTERACTION_WARN and abs(bend["gamma"]) >= 3 * bend["se"]


def _diagnose_interaction(form: Form, bend: dict | None) -> list[str]:
    if not interaction_warned(bend):
        return []
    g = bend["gamma"]
    return [f"nd_interaction: the residuals bend with N x D ({g:+.3f} log loss per decade of N per decade of D, "
            f"se {bend['se']:.3f}; {bend['share']:.0%} of the variance the other terms leave), a term the {form.name} "
            f"form lacks: one decade beyond the data in both N and D the loss would run ~{abs(g):.1%} "
            f"{'below' if g < 0 else 'above'} this fit's prediction; a form with an N-D term (farseer, given "
            "enough runs) can follow it"]


EDGE_CHECK_MULTIPLES = (1.0, 10.0, 100.0, 1000.0)  # budgets (x the largest fitted) a fit checks for an optimum


def _diagnose_edge(law: Form, params: dict, c_max: float) -> list[str]:
    """``no_interior_optimum`` where the law's isoFLOP loss has no minimum at the largest fitted budget
    or up to 1000x beyond it (the allocation would run to its search's edge)."""
    if law.variables:
        return []
    C = c_max * np.asarray(EDGE_CHECK_MULTIPLES)
    N, _, edge = law.optimal(C, params, with_edge=True)
    if not edge.any():
        return []
    k = int(np.argmax(edge))
    return [f"no_interior_optimum: from {EDGE_CHECK_MULTIPLES[k]:g}x the largest fitted budget ({C[k]:.3g} FLOPs) "
            f"the law's loss keeps falling along the isoFLOP line to the search's edge ({_edge_cause(law, params, float(N[k]))}): "
            "plans there have no compute-optimal N and are refused"]


def _diagnose_samples(form: Form, boot, frame) -> list[str]:
    """Identifiability read off the data's shape and the bootstrap: too few distinct sizes or token
    counts for the form, and exponents that trade off (bootstrap correlation near +-1)."""
    out = []
    from .selection import MIN_SIZES

    need = MIN_SIZES.get(form.name, 3)
    if frame["N"].nunique() < need:
        out.append(f"too_few_sizes: {frame['N'].nunique()} distinct model sizes; the {form.name} form needs "
                   f"{need} to place its N terms")
    if boot is not None and {"alpha", "beta"} <= set(form.param_names):
        j, k = form.param_names.index("alpha"), form.param_names.index("beta")
        ok = np.isfinite(boot[:, j]) & np.isfinite(boot[:, k])
        if ok.sum() > 10 and np.std(boot[ok, j]) > 0 and np.std(boot[ok, k]) > 0:
            r = float(np.corrcoef(boot[ok, j], boot[ok, k])[0, 1])
            if abs(r) > 0.95:
                out.append(f"exponent_tradeoff: alpha and beta trade off (bootstrap correlation {r:+.2f}): the "
                           "data pin a combination of them, not each; N_opt's exponent beta/(alpha+beta) is loose")
    return out


def _diagnose_isoflops(form: Form, params: dict, frame, groups) -> list[str]:
    """IsoFLOP checks where the table has isoFLOP budgets (3+ sizes at one budget): curves too flat
    or off-grid to place their minimum, and the Approach 2 bias of the sampled grid (a parabola fitted
    to the law's own predictions on the grid, against the law's optimum: alpha != beta makes the
    curve asymmetric in log N, and an off-centre grid turns that into a shifted vertex)."""
    from .isoflop import vertex_check

    if form.variables:
        return []
    checks, biases = {}, []
    for g in np.unique(groups):
        sub = frame[groups == g]
        if sub["N"].nunique() < 3:
            continue
        ln = np.log(sub["N"].to_numpy())
        _, check = vertex_check(ln, sub["loss"].to_numpy())
        checks.setdefault(check, []).append(float(sub["C"].median()))
        C = float(np.exp(np.log(sub["C"]).mean()))
        with np.errstate(all="ignore"):
            model = form(np.exp(ln), C / (6.0 * np.exp(ln)), params)
            v = vertex_check(ln, np.asarray(model, float))[0]
            n_law = float(form.optimal(C, params)[0][0])
        if v is not None and np.isfinite(n_law) and n_law > 0:
            biases.append((C, math.exp(v[0]) / n_law - 1.0))
    out = []
    for check, what in (("flat", "are too flat to place their minimum (they rise less than twice their scatter)"),
                        ("off_grid", "have their minimum outside the sampled sizes (the parabola extrapolates)")):
        if checks.get(check):
            out.append(f"{check}_isoflops: {len(checks[check])} isoFLOP curve(s) {what}: budgets "
                       + ", ".join(f"{c:.3g}" for c in checks[check]))
    worst = max(biases, key=lambda b: abs(b[1]), default=None)
    if worst is not None and abs(worst[1]) > 0.1:
        out.append(f"approach2_bias: on the sampled grid at {worst[0]:.3g} FLOPs an isoFLOP parabola puts the "
                   f"optimum {worst[1]:+.0%} off the law's own (alpha != beta or an off-centre grid): read isoFLOP "
                   "vertices from this table with that bias")
    return out


def _fit_once(form, data, delta, fixed, starts=None):
    from ._engine import robust_fit, start_points

    if starts is None:
        starts = start_points(form, data, delta)
        if fixed:
            starts = [np.where([n in fixed for n in form.param_names],
                               form.to_theta({**form.from_theta(s), **fixed}), s) for s in starts]
    return robust_fit(form, data, starts, delta, fixed)


def fit_loss_surface(
    df,
    n: str = "params",
    d: str | None = "tokens",
    loss: str = "loss",
    form: str | Form = "chinchilla",
    flops: str | None = None,
    unique_tokens: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    group: str | None = "auto",
    fixed: dict | None = None,
    free: tuple = (),
    delta: float = 1e-3,
    calibrate: bool | None = None,
    progress: bool = False,
    n_kind: str | None = None,
    trust: bool | None = None,
    run_noise: float | None = None,
    loss_unit: str | None = None,
) -> LossSurfaceFit:
    """Fit a loss surface to a results table.

    Parameters
    ----------
    df : DataFrame or CSV path with one row per run (or evaluation).
    n, d, loss : column names of parameters N, tokens D and loss. With ``d=None`` (or ``d``
        absent) and ``flops`` given, D = C / (6 N).
    form : a registered form name ("chinchilla", "kaplan", "data_constrained") or a Form.
    unique_tokens : column of unique tokens U (data-constrained form).
    bootstrap : number of bootstrap refits (0 for none). Whole groups of rows are resampled
        with replacement: ``group="auto"`` (default) takes the ``run_id`` column when the table
        has one (rows of one probe run share its stable phase and seed, so they are not
        independent), else single rows; a column name groups by that column; None, single rows.
    seed : seed of every random draw; the same inputs and seed give the same fit.
    fixed : parameters held at given values (e.g. ``{"E": 1.7}``).
    free : parameters with published defaults to fit rather than hold (the data-constrained
        form holds R_D_star and R_N_star at Muennighoff et al.'s values unless freed here).
    delta : Huber threshold on log-loss residuals (Besiroglu et al. 2024 use 1e-3).
    calibrate : calibrate prediction intervals on extrapolation backtests; default: when
        bootstrapping and the data hold at least 5 compute budgets.
    progress : show a progress bar over the bootstrap refits.
    n_kind : what N counts: "non_embedding", "total" or "unspecified"; by default a probe export
        (a table with both ``params`` and ``params_total``) says which column was used, and other
        tables are "unspecified" (read as total parameters downstream, Chinchilla's convention).
    run_noise : seed-to-seed noise of one run's log loss (a standard deviation), when measured
        elsewhere; by default it is measured from rows that repeat an (N, D) cell with other seeds
        (a ``seed`` column). Prediction intervals carry the larger of it and the residual scale.
    loss_unit : what the loss measures, e.g. "nats per token (my corpus, Llama 3 tokenizer)" or "bits per
        byte"; by default read from a probe export (its corpus, tokenizer and vocabulary; ``val_bpb`` is bits
        per byte), else unspecified. Plans use unit-bound priors (Kaplan's B_crit(L)) only in their own unit.
    trust : run the fit's own trust checks (refit without the largest budget and score it; the
        interval width at 3x and 10x the data); default: when bootstrapping with >= 3 budgets.

    Returns
    -------
    LossSurfaceFit

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> N, D = np.meshgrid(np.logspace(7, 9, 5), np.logspace(9, 11, 5))
    >>> L = 1.8 + 480 / N**0.35 + 2000 / D**0.37
    >>> fit = fit_loss_surface(pd.DataFrame({"params": N.ravel(), "tokens": D.ravel(), "loss": L.ravel()}))
    >>> round(fit.params["alpha"], 3), round(fit.params["E"], 3)
    (0.35, 1.8)
    """
    from ._data import budget_groups, budget_of, read_table, surface_data
    from ._engine import FitData

    if isinstance(form, (list, tuple)) or (isinstance(form, str) and form == "auto"):
        kwargs = {k: v for k, v in locals().items() if k not in ("df", "form", "budget_groups", "budget_of",
                                                                   "read_table", "surface_data", "FitData")}
        return _fit_auto(df, None if isinstance(form, str) else tuple(form), **kwargs)
    law = get_form(form)
    fixed = dict(fixed or {})
    unknown_free = set(free) - set(law.defaults)
    if unknown_free:
        raise InputError(f"free: only {sorted(law.defaults)} can be freed for form {law.name!r}; "
                         f"got {sorted(unknown_free)}")
    for k, v in law.defaults.items():
        if k not in free:
            fixed.setdefault(k, v)
    unknown = set(fixed) - set(law.param_names)
    if unknown:
        raise InputError(f"fixed: unknown parameter(s) {sorted(unknown)} for form {law.name!r}; "
                         f"parameters are {list(law.param_names)}")
    if law.variables and unique_tokens is None:
        raise InputError(f"unique_tokens: form {law.name!r} needs a column of unique tokens")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise InputError(f"bootstrap: must be a non-negative integer; got {bootstrap!r}")
    if not (isinstance(delta, (int, float)) and delta > 0):
        raise InputError(f"delta: must be a positive number; got {delta!r}")
    n_free = len(law.param_names) - len(fixed)
    extra = {"U": unique_tokens} if law.variables else {}
    table = read_table(df)  # read once: the group column comes from the same table
    frame = surface_data(table, n=n, d=d, loss=loss, flops=flops, extra=extra, min_points=n_free + 1)
    if frame["N"].nunique() < 2:
        raise InputError(f"n: column {n!r} holds a single model size ({frame['N'].iloc[0]:.4g}); "
                         "a surface needs at least two")
    if frame["D"].nunique() < 2:
        raise InputError(f"d: the tokens hold a single value ({frame['D'].iloc[0]:.4g}); "
                         "a surface needs at least two")
    groups_budget = budget_groups(budget_of(frame))
    data = FitData.from_frame(frame, law.variables)

    best = _fit_once(law, data, delta, fixed)
    params = law.from_theta(best.theta)
    resid = law.log_predict(best.theta, data.arrays) - data["logL"]
    scale = float(_MAD * np.median(np.abs(resid - np.median(resid))))

    boot = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        labels = _group_labels(table, group, frame)
        boot = _bootstrap(law, data, labels, best.theta, bootstrap, rng, delta, fixed, progress)

    do_cal = calibrate if calibrate is not None else bool(bootstrap) and groups_budget.max() >= 4
    scores, n_cal = None, 0
    if do_cal:
        if not bootstrap:
            raise InputError("calibrate: calibration needs bootstrap > 0")
        scores, n_cal = _conformal_scores(law, frame, groups_budget, delta, fixed, seed)

    range_ = {
        "N_min": frame["N"].min(), "N_max": frame["N"].max(),
        "D_min": frame["D"].min(), "D_max": frame["D"].max(),
        "C_min": frame["C"].min(), "C_max": frame["C"].max(),
        "loss_min": frame["loss"].min(), "loss_max": frame["loss"].max(),
        "n_budgets": int(groups_budget.max() + 1),
    }
    bend = _interaction_of(frame, -resid)
    diag = (_diagnose(law, params, frame, fixed, data, delta) + _diagnose_edge(law, params, range_["C_max"])
            + _diagnose_samples(law, boot, frame)
            + _diagnose_isoflops(law, params, frame, groups_budget) + _diagnose_interaction(law, bend))
    src = df if isinstance(df, (str, Path)) else "DataFrame"
    noise, noise_src = _run_noise(table, n, d, loss, run_noise)
    used_group = _group_column(table, group)
    fit = LossSurfaceFit(
        form=law.name, params=params, objective=best.cost, success=best.success,
        message=best.message, n_points=len(frame), data_range={k: float(v) for k, v in range_.items()},
        residual_scale=scale, residuals=resid, bootstrap_params=boot, conformal_scores=scores,
        fixed=tuple(sorted(fixed)), diagnostics=tuple(diag),
        options={"delta": delta, "seed": seed, "bootstrap": bootstrap, "group": used_group,
                 "columns": {"n": n, "d": d, "loss": loss, "flops": flops,
                             "unique_tokens": unique_tokens},
                 "calibration_budgets": n_cal,
                 "n_definition": _n_definition(table, n, n_kind),
                 "loss_unit": loss_unit if loss_unit is not None else _loss_unit(table, loss),
                 "shape_family": _shape_family(table),
                 "run_noise": noise, "run_noise_source": noise_src,
                 "extrapolation_error": extrapolation_error_of(law.name), "nd_interaction": bend,
                 "hull": convex_hull(np.log10(frame[["N", "D"]].to_numpy()))},
        provenance=_provenance(src), status=best.status,
    )
    if trust is None:
        trust = bool(bootstrap) and groups_budget.max() >= 2 and not law.variables
    if trust:
        import dataclasses

        fit = dataclasses.replace(fit, trust=_trust(fit, frame, groups_budget, delta, fixed, seed))
    return fit


def refit_frame(frame, **kwargs) -> LossSurfaceFit:
    """Refit a subset of a tidy frame (columns N, D, loss, budget, ...) without the trust checks:
    the backtests' building block."""
    table = frame.rename(columns={"N": "params", "D": "tokens", "budget": "flops"})
    return fit_loss_surface(table, trust=False, **kwargs)


def _fit_auto(df, forms, **kw) -> LossSurfaceFit:
    """``form="auto"`` (or a list of forms): choose the form by extrapolation backtests
    (:func:`fits.selection.compare_forms`), fit it, and carry the credible forms' full-data fits so
    that intervals include their disagreement."""
    import dataclasses

    from ._data import budget_groups, budget_of, read_table, surface_data
    from .selection import CANDIDATES, compare_forms

    forms = CANDIDATES if forms is None else forms
    if kw.get("unique_tokens") is not None:
        raise InputError("form: 'auto' compares laws of N and D; fit the data_constrained form by name "
                         "when the table has unique tokens")
    if kw.get("fixed") or kw.get("free"):
        raise InputError("form: 'auto' fits every candidate freely; fixed/free need a named form")
    table = read_table(df)
    frame = surface_data(table, n=kw["n"], d=kw["d"], loss=kw["loss"], flops=kw["flops"], min_points=6)
    cmp = compare_forms(frame, forms, delta=kw["delta"], seed=kw["seed"])
    trust = kw.pop("trust")
    fit = fit_loss_surface(df, form=cmp.chosen, trust=False, **kw)
    quiet = {**kw, "bootstrap": 0, "calibrate": False, "progress": False}
    alts = {}  # every candidate's full-data fit: the spread uses the credible ones (weight > 0)
    for f in cmp.table.index:
        if f != cmp.chosen:
            try:
                alts[f] = fit_loss_surface(table, form=f, trust=False, **quiet).params
            except InputError:
                continue
    fit = dataclasses.replace(fit, options={**fit.options, "selection": cmp.to_dict(), "alternatives": alts,
                                            "extrapolation_error": extrapolation_error_of("auto")})
    groups = budget_groups(budget_of(frame))
    if trust is None:
        trust = bool(kw["bootstrap"]) and groups.max() >= 2
    if trust:
        fit = dataclasses.replace(fit, trust=_trust(fit, frame, groups, kw["delta"], {}, kw["seed"]))
    return fit


def _run_noise(table, n: str, d: str | None, loss: str, given: float | None):
    """(sd of log loss between seeds, where it comes from), or (None, None) when unmeasured."""
    if given is not None:
        if not (isinstance(given, (int, float)) and math.isfinite(given) and given >= 0):
            raise InputError(f"run_noise: must be a non-negative number (sd of log loss); got {given!r}")
        return float(given), "given"
    if "seed" not in table.columns or d is None or d not in table.columns or table["seed"].nunique() < 2:
        return None, None
    t = table
    if "diverged" in t.columns:
        t = t[~t["diverged"].fillna(False).astype(bool)]
    t = t.assign(_logl=np.log(t[loss].astype(float)))
    cells = t.groupby([n, d])
    dev = cells["_logl"].transform(lambda v: v - v.mean())
    dof = int((cells["_logl"].transform("size") > 1).sum() - (cells.size() > 1).sum())
    if dof < 2:
        return None, None
    sd = float(np.sqrt(np.sum(dev.to_numpy() ** 2) / dof))
    return sd, f"pooled over {int((cells.size() > 1).sum())} cells repeated with other seeds"


def _group_column(table, group) -> str | None:
    if group == "auto":
        return "run_id" if "run_id" in table.columns else None
    if group is not None and group not in table.columns:
        raise InputError(f"group: column {group!r} not found; columns are {list(table.columns)}")
    return group


def _group_labels(table, group, frame) -> np.ndarray:
    """Bootstrap group of every fitted row (rows dropped as diverged are dropped here too)."""
    import pandas as pd

    col = _group_column(table, group)
    if col is None:
        return np.arange(len(frame))
    g = table[col]
    if "diverged" in table.columns:
        g = g[~table["diverged"].fillna(False).astype(bool)]
    return pd.factorize(g.to_numpy())[0][: len(frame)]


def _loss_unit(table, loss: str) -> str:
    """The loss unit a table's columns tell: bits per byte for a ``*bpb`` column, nats per token on the
    probes' corpus and tokenizer for a probe export, else unspecified."""
    if "bpb" in loss.lower():
        return "bits per byte"
    one = lambda c: (c in table.columns and table[c].nunique() == 1) and str(table[c].iloc[0])
    if one("tokenizer"):
        parts = [f"{one('corpus')} corpus" if one("corpus") else None, f"{one('tokenizer')} tokenizer",
                 f"vocab {one('vocab_size')}" if one("vocab_size") else None]
        return "nats per token (" + ", ".join(p for p in parts if p) + ")"
    return "an unspecified unit"


N_KINDS = ("non_embedding", "total", "unspecified")


def _n_definition(table, n: str, n_kind: str | None) -> dict:
    """Which parameter count the fit's N is (see ``fit_loss_surface``'s ``n_kind``)."""
    if n_kind is not None and n_kind not in N_KINDS:
        raise InputError(f"n_kind: must be one of {list(N_KINDS)}; got {n_kind!r}")
    if n_kind is None:
        probe = {"params", "params_total"} <= set(table.columns)
        n_kind = ({"params": "non_embedding", "params_total": "total"}.get(n, "unspecified")
                  if probe else "unspecified")
    out = {"kind": n_kind}
    if "vocab_size" in table.columns and table["vocab_size"].nunique() == 1:
        out["vocab_size"] = int(table["vocab_size"].iloc[0])
    return out


def _n_words(nd: dict) -> str:
    kind = nd.get("kind", "unspecified")
    vocab = f" at vocabulary {nd['vocab_size']}" if "vocab_size" in nd else ""
    return {"non_embedding": "non-embedding parameters (embeddings and readout excluded)",
            "total": f"total parameters (embeddings and readout included){vocab}",
            }.get(kind, "unspecified (read as total parameters, Chinchilla's convention)")


_FAMILY_COLUMNS = ("depth", "d_head", "ffn_ratio", "vocab_size", "seq_len", "base_width", "base_depth",
                   "batch_size", "lr", "warmup_steps", "weight_decay", "eval_batches", "parametrization", "corpus",
                   "tokenizer")


def _shape_family(table) -> dict | None:
    """The probes' fixed shape settings when the table is a probe export (one depth, vocabulary
    and sequence length across its rows), else None."""
    need = {"width", "depth", "vocab_size", "seq_len"}
    if not need <= set(table.columns):
        return None
    fam = {}
    for c in _FAMILY_COLUMNS:
        if c in table.columns:
            vals = table[c].dropna().unique()
            if len(vals) != 1:
                if c in ("depth", "vocab_size", "seq_len"):
                    return None
                continue
            v = vals[0]
            fam[c] = v.item() if hasattr(v, "item") else v
    if "n_heads" in table.columns and "d_head" not in fam:
        dh = (table["width"] / table["n_heads"]).unique()
        if len(dh) == 1:
            fam["d_head"] = int(dh[0])
    return fam


# sd of a law's log-loss error per decade beyond its fitted runs (hull distance in log10 N, log10 D),
# added in quadrature to every prediction interval: measured per form by benchmarks/bench_extrapolation.py
# on long splits of Farseer's and Chinchilla's runs, the OLMo ladder and the CPU probes (0-1.5 decades out),
# as the largest any table needed for 90% coverage beyond the hull (benchmarks/results/extrapolation.json
# records each table's need and the leave-one-table-out coverage); forms it did not measure take the largest.
EXTRAPOLATION_ERROR = {"chinchilla": 0.055, "beta_n": 0.0225, "interaction": 0.0725, "farseer": 0.0625,
                       "auto": 0.055}


def extrapolation_error_of(form: str) -> float:
    """The measured per-decade extrapolation error of a form (:data:`EXTRAPOLATION_ERROR`)."""
    return EXTRAPOLATION_ERROR.get(form, max(EXTRAPOLATION_ERROR.values()))
TRUST_ERROR = 0.02      # own-backtest mean |relative error| above which a fit is flagged
TRUST_WIDTH = 0.10      # 90% prediction interval (relative full width) at 10x the data above which


def _trust(fit, frame, groups, delta, fixed, seed) -> dict:
    """The fit's own extrapolation check: refit without the largest budget and score it, and the
    width of the 90% prediction interval at 3x and 10x the largest budget. Returns a dict with
    the numbers and plain-words warnings."""
    out, warns = {}, []
    top = int(groups.max())
    train, test = frame[groups < top], frame[groups == top]
    law = fit.law
    if len(train) > len(law.param_names) and train["N"].nunique() > 1 and train["D"].nunique() > 1:
        sub = refit_frame(train, form=law, fixed=fixed, delta=delta, bootstrap=200, seed=seed, calibrate=False,
                          group=None)
        pred, lo, hi = sub.interval(test["N"].to_numpy(), test["D"].to_numpy(), level=0.9)
        obs = test["loss"].to_numpy()
        err = (pred - obs) / obs
        bt = {"holdout_flops": float(test["C"].median()), "n_test": int(len(test)),
              "mean_abs_rel_error": float(np.mean(np.abs(err))), "max_abs_rel_error": float(np.max(np.abs(err))),
              "coverage": float(np.mean((obs >= lo) & (obs <= hi)))}
        out["backtest"] = bt
        if bt["mean_abs_rel_error"] > TRUST_ERROR or bt["coverage"] < 0.5:
            warns.append(f"own backtest misses: fitted without the largest budget, the fit predicts it with "
                         f"mean |error| {bt['mean_abs_rel_error']:.1%} (worst {bt['max_abs_rel_error']:.1%}) "
                         f"and its 90% interval covers {bt['coverage']:.0%} of those runs")
    widths = {}
    for k in (3.0, 10.0):
        a = fit.allocation(fit.data_range["C_max"] * k, level=0.9)
        w = float((a["loss_high"][0] - a["loss_low"][0]) / a["loss"][0])
        widths[f"{k:g}x"] = w
        if k == 10.0 and (not np.isfinite(w) or w > TRUST_WIDTH):
            warns.append(f"interval explodes: at 10x the largest budget the 90% prediction interval spans "
                         f"{w:.0%} of the predicted loss ([{a['loss_low'][0]:.4g}, {a['loss_high'][0]:.4g}])")
    out["interval_width"] = widths
    out["warnings"] = warns
    return out


def _bootstrap(law, data, labels, theta0, B, rng, delta, fixed, progress) -> np.ndarray:
    """B refits on resamples of whole groups (``labels``; one row per group when rows are
    independent). Refits of forms with an analytic Jacobian run as one vectorised batch; the few
    it cannot finish, and
    every refit of other forms, are polished one by one."""
    from ._engine import batched_refits, robust_fit

    uniq = np.unique(labels)
    members = [np.flatnonzero(labels == u) for u in uniq]
    picks = rng.integers(0, len(uniq), (B, len(uniq)))
    out = np.full((B, len(law.param_names)), np.nan)
    todo = np.arange(B)
    if hasattr(law, "log_jacobian"):
        sizes = np.array([len(m) for m in members])
        width = int(sizes[picks].sum(axis=1).max())
        index = np.zeros((B, width), dtype=int)
        weight = np.zeros((B, width))
        for b in range(B):
            idx = np.concatenate([members[i] for i in picks[b]])
            index[b, :len(idx)], weight[b, :len(idx)] = idx, 1.0
        free = np.array([p not in fixed for p in law.param_names])
        # a refit that has not met the first-order test after the iteration cap keeps its best
        # point: on flat (unidentified) directions more iterations move nothing that matters
        theta, cost, _ = batched_refits(law, data, index, weight, theta0, delta, free, max_iter=100)
        ok = np.isfinite(cost)
        for b in np.flatnonzero(ok):
            out[b] = list(law.from_theta(theta[b]).values())
        todo = np.flatnonzero(~ok)
    it = todo
    if progress and len(todo):
        from tqdm.auto import tqdm
        it = tqdm(todo, desc="bootstrap", unit="fit")
    for b in it:
        idx = np.concatenate([members[i] for i in picks[b]])
        opt = robust_fit(law, data.take(idx), [theta0], delta, fixed)
        if np.isfinite(opt.cost):
            out[b] = [law.from_theta(opt.theta)[p] for p in law.param_names]
    return out


LONG_FOLDS = (10.0, 100.0)  # long calibration folds: fit budgets <= C_max / f, score every larger run


def _long_folds(frame, groups, factors=LONG_FOLDS, min_levels: int = 3):
    """(train, test) masks that reach a decade or two: fit the budgets at or below C_max / f, score
    every run above; kept where the training side has ``min_levels`` budgets."""
    out = []
    c_top = float(frame["C"].max())
    level_c = {g: float(np.exp(np.log(frame["C"][groups == g]).mean())) for g in np.unique(groups)}
    for f in factors:
        keep = [g for g, c in level_c.items() if c <= c_top / f]
        if len(keep) >= min_levels:
            tr = np.isin(groups, keep)
            out.append((tr, ~tr))
    return out


def _conformal_scores(law, frame, groups, delta, fixed, seed, max_holdouts=5, max_axis_holdouts=3, boot=100):
    """Extrapolation backtests: for each of the largest budgets g (from the fourth), fit on budgets
    < g and score the runs at g; likewise for the largest model sizes and token counts, and the long
    folds (fit budgets up to a tenth and a hundredth of the largest, score everything above). Returns
    (records, number of backtests): one row per held-out run, (|log error|, sd without distance,
    decades beyond the backtest's runs), so that a score |error| / sqrt(sd^2 + (k d)^2) can be
    formed for the law's per-decade error k."""
    from .selection import extrapolation_folds

    masks = [(tr, te) for _, _, tr, te in extrapolation_folds(frame, max_holdouts, axes=("compute",), first_compute=3)]
    masks += [(tr, te) for _, _, tr, te in extrapolation_folds(frame, max_axis_holdouts, axes=("size", "tokens"))]
    masks += _long_folds(frame, groups)
    scores = []
    for tr, te in masks:
        train, test = frame[tr], frame[te]
        if len(train) <= len(law.param_names) or train["N"].nunique() < 2 or train["D"].nunique() < 2:
            continue
        sub = refit_frame(train, form=law, fixed=fixed, delta=delta, bootstrap=boot, seed=seed,
                          calibrate=False, unique_tokens="U" if law.variables else None)
        var = {"unique_tokens": test["U"].to_numpy()} if law.variables else {}
        N, D = test["N"].to_numpy(), test["D"].to_numpy()
        center = np.log(sub.predict(N, D, **var))
        Nb, Db, v = sub._inputs(N, D, dict(var))
        sd = np.sqrt(np.nanvar(sub._log_samples(Nb, Db, v), axis=0) + sub.residual_scale**2)
        err = np.abs(np.log(test["loss"].to_numpy()) - center)
        scores.extend(zip(err, sd, sub.extrapolation_decades(N, D)))
    return (np.asarray(scores, dtype=float) if scores else None), len(masks)


def _provenance(source) -> dict:
    from . import __version__

    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": __version__, "source": str(source)}
