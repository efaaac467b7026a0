"""Fitting a loss surface to a results table: the pipeline from a table to a :class:`LossSurfaceFit`
(start points and a robust polish, bootstrap refits, calibration and trust checks, diagnostics, and
``form="auto"``'s choice among forms). The result object and its intervals live in :mod:`fits.surface`."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .calibration import _conformal_scores, _trust, convex_hull, extrapolation_error_of
from .diagnostics import (_diagnose, _diagnose_edge, _diagnose_interaction, _diagnose_isoflops, _diagnose_samples,
                          _interaction_of)
from .errors import InputError
from .forms import Form, get_form
from .surface import LossSurfaceFit

__all__ = ["fit_loss_surface", "refit_frame", "compare_forms"]

_MAD = 1.4826  # MAD -> standard deviation for a normal


def _fit_once(form, data, delta, fixed, starts=None):
    from ._engine import robust_fit
    from ._starts import start_points

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
    bootstrap: int = 200,
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
    check_units: bool = True,
) -> LossSurfaceFit:
    """Fit a loss surface to a results table.

    Parameters
    ----------
    df : DataFrame or CSV path with one row per run (or evaluation).
    n, d, loss : column names of parameters N, tokens D and loss. With ``d=None`` (or ``d``
        absent) and ``flops`` given, D = C / (6 N).
    form : a registered form name ("chinchilla", "kaplan", "data_constrained") or a Form.
    unique_tokens : column of unique tokens U (data-constrained form).
    bootstrap : number of bootstrap refits (0 for none; 200 by default, as on the command line). Whole groups of rows are resampled
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
    check_units : fail, naming the likely mistake, on a table whose N, D or loss look like the wrong
        unit (N in millions, tokens per parameter outside 0.01-1e5, a loss like an accuracy or a
        perplexity); False for synthetic tables outside those ranges.
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
    >>> fit = fit_loss_surface(pd.DataFrame({"params": N.ravel(), "tokens": D.ravel(), "loss": L.ravel()}),
    ...                        bootstrap=0)
    >>> round(fit.params["alpha"], 3), round(fit.params["E"], 3)
    (0.35, 1.8)
    """
    from ._data import (_group_column, _group_labels, _loss_unit, _n_definition, _run_noise, _shape_family,
                        budget_groups, budget_of, read_table, surface_data)
    from ._engine import FitData

    if isinstance(form, (list, tuple)) or (isinstance(form, str) and form == "auto"):
        kwargs = {k: v for k, v in locals().items() if k not in ("df", "form", "budget_groups", "budget_of",
                                                                   "read_table", "surface_data", "FitData")
                  and not k.startswith("_")}
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
    frame = surface_data(table, n=n, d=d, loss=loss, flops=flops, extra=extra, min_points=n_free + 1,
                         check_units=check_units)
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
        scores, n_cal = _conformal_scores(law, frame, groups_budget, delta, fixed, seed, refit=refit_frame)

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

        fit = dataclasses.replace(fit, trust=_trust(fit, frame, groups_budget, delta, fixed, seed, refit=refit_frame))
    return fit


def refit_frame(frame, **kwargs) -> LossSurfaceFit:
    """Refit a subset of a tidy frame (columns N, D, loss, budget, ...) without the trust checks:
    the backtests' building block."""
    table = frame.rename(columns={"N": "params", "D": "tokens", "budget": "flops"})
    return fit_loss_surface(table, trust=False, **kwargs)


def compare_forms(frame, forms=None, delta: float = 1e-3, seed: int = 0, max_folds: int = 3, bootstrap: int = 30,
                  level: float = 0.9):
    """Score candidate forms (default :data:`fits.selection.CANDIDATES`) on rolling-origin
    extrapolation backtests of a tidy frame (columns N, D, C, loss, optionally budget) and choose one:
    a :class:`fits.selection.FormComparison` (see :mod:`fits.selection` for the rule)."""
    from .selection import CANDIDATES, score_forms

    return score_forms(frame, refit_frame, CANDIDATES if forms is None else forms, delta=delta, seed=seed,
                       max_folds=max_folds, bootstrap=bootstrap, level=level)


def _fit_auto(df, forms, **kw) -> LossSurfaceFit:
    """``form="auto"`` (or a list of forms): choose the form by extrapolation backtests
    (:func:`compare_forms`), fit it, and carry the credible forms' full-data fits so
    that intervals include their disagreement."""
    import dataclasses

    from ._data import budget_groups, budget_of, read_table, surface_data
    from .selection import CANDIDATES

    forms = CANDIDATES if forms is None else forms
    if kw.get("unique_tokens") is not None:
        raise InputError("form: 'auto' compares laws of N and D; fit the data_constrained form by name "
                         "when the table has unique tokens")
    if kw.get("fixed") or kw.get("free"):
        raise InputError("form: 'auto' fits every candidate freely; fixed/free need a named form")
    table = read_table(df)
    frame = surface_data(table, n=kw["n"], d=kw["d"], loss=kw["loss"], flops=kw["flops"], min_points=6,
                         check_units=kw["check_units"])
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
        fit = dataclasses.replace(fit, trust=_trust(fit, frame, groups, kw["delta"], {}, kw["seed"], refit=refit_frame))
    return fit


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


def _provenance(source) -> dict:
    from . import __version__

    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": __version__, "source": str(source)}
