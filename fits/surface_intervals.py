"""Intervals of a loss-surface fit: bootstrap, calibrated (conformal) and uncalibrated prediction
intervals, the law's floor, the candidate forms' spread (mixed into :class:`fits.surface.LossSurfaceFit`)."""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from .calibration import conformal_quantile, extrapolation_error_of
from .errors import InputError
from .forms import get_form, law_floor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IntervalsMixin", "check_level"]


def check_level(level):
    if not (isinstance(level, (float, int)) and 0 < level < 1):
        raise InputError(f"level: must be a number strictly between 0 and 1; got {level!r}")


class IntervalsMixin:
    """Prediction and mean intervals of :class:`fits.surface.LossSurfaceFit` (see its module docstring)."""

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

    def _log_samples(self, N, D, variables) -> np.ndarray:
        """log predicted loss for every bootstrap sample, shape (B, n points)."""
        flat = lambda a: np.ravel(a)[None, :]
        with np.errstate(all="ignore"):
            return np.log(self.law(flat(N), flat(D), self._sample_columns(),
                                   **{k: flat(v) for k, v in variables.items()}))

    def interval(self, N, D, level: float = 0.9, kind: str = "prediction",
                 **variables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss, low, high) arrays at (N, D); see :meth:`predict_interval`."""
        check_level(level)
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
