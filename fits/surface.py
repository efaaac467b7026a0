"""A loss-surface fit L(N, D) and its intervals (:class:`LossSurfaceFit`; built by :func:`fits.fit_loss_surface`,
saved and loaded as JSON).

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

import json
import math
from statistics import NormalDist
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._io import atomic_write_text, read_json, to_jsonable
from .errors import InputError
from .calibration import conformal_quantile, extrapolation_error_of, hull_distance
from .diagnostics import _edge_cause, interaction_warned
from .forms import STATUSES, Form, get_form, law_floor

if TYPE_CHECKING:  # pandas and scipy load only when a table is built or a fit is run,
    import pandas as pd  # so that loading a saved fit to plan stays fast

__all__ = ["LossSurfaceFit", "load_fit"]

SCHEMA = "scaling-planner/loss-surface-fit"
SCHEMA_VERSION = 1


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
    def predict(self, N, D, **variables):
        """Predicted loss at (N, D) (arrays broadcast); data-constrained forms take unique_tokens=U.
        Scalars in, a float out; arrays in, an array out."""
        scalar = np.ndim(N) == 0 and np.ndim(D) == 0
        N, D, variables = self._inputs(N, D, variables)
        out = np.asarray(self.law(N, D, self.params, **variables), dtype=float)
        return float(out) if scalar else out

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
        if shape == ():
            return tuple(float(np.exp(a).reshape(())) for a in (center, lo, hi))
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
        return pd.DataFrame({"N": N.ravel(), "D": D.ravel(), "loss": np.ravel(loss), "low": np.ravel(lo),
                             "high": np.ravel(hi), "level": level, "kind": self.interval_kind(kind)})

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

def _check_level(level):
    if not (isinstance(level, (float, int)) and 0 < level < 1):
        raise InputError(f"level: must be a number strictly between 0 and 1; got {level!r}")
