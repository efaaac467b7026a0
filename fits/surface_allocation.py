"""Compute-optimal allocation of a loss-surface fit and the geometry of its fitted runs: where a
budget's optimum lies, with intervals, and how far a point lies beyond the runs (mixed into
:class:`fits.surface.LossSurfaceFit`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .calibration import hull_distance
from .diagnostics import _edge_cause, interaction_warned
from .errors import InputError
from .forms import get_form
from .surface_intervals import check_level

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AllocationMixin"]


class AllocationMixin:
    """Allocation and extrapolation distance of :class:`fits.surface.LossSurfaceFit`."""

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
            check_level(level)
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
