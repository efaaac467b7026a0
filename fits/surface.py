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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scaling_core.io import atomic_write_text, read_json, to_jsonable
from .errors import InputError
from .forms import STATUSES, Form, get_form
from .surface_allocation import AllocationMixin
from .surface_intervals import IntervalsMixin, check_level
from .surface_report import ReportMixin

if TYPE_CHECKING:  # pandas and scipy load only when a table is built or a fit is run,
    import pandas as pd  # so that loading a saved fit to plan stays fast

__all__ = ["LossSurfaceFit", "load_fit"]

SCHEMA = "scaling-planner/loss-surface-fit"
SCHEMA_VERSION = 1


@dataclass(frozen=True, eq=False)
class LossSurfaceFit(IntervalsMixin, AllocationMixin, ReportMixin):
    """An immutable loss-surface fit: parameters, uncertainty, data range and provenance.

    Build it with :func:`fit_loss_surface`, or load it with :func:`load_fit`. Its intervals
    (:mod:`fits.surface_intervals`), allocations (:mod:`fits.surface_allocation`) and reports
    (:mod:`fits.surface_report`) live in mixins, one concept per file.
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
    def law(self) -> Form:
        return get_form(self.form)

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.law.param_names

    @property
    def n_bootstrap(self) -> int:
        return 0 if self.bootstrap_params is None else len(self.bootstrap_params)

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

        check_level(level)
        rows = {}
        for j, p in enumerate(self.param_names):
            lo = hi = float("nan")
            if self.bootstrap_params is not None:
                lo, hi = np.nanquantile(self.bootstrap_params[:, j], [(1 - level) / 2, (1 + level) / 2])
            rows[p] = {"value": self.params[p], "low": float(lo), "high": float(hi)}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "parameter"
        return out

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
