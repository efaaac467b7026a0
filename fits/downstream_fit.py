"""Fitting task-accuracy laws to an eval table (:func:`fit_downstream`): reading the table, both
methods with their joint bootstrap, the rolling-origin backtests, the verdicts and the interval
calibration. The result objects are in :mod:`fits.downstream`."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .downstream import (METHODS, DownstreamFit, TaskFit, _direct, _DIRECT_FLOOR, chance_level, sigmoid)
from .errors import InputError

__all__ = ["fit_downstream", "NAMINGS"]

# column namings recognised without a mapping: (task-loss pattern, accuracy patterns); {task} is the task
NAMINGS = (
    ("eval/downstream_bpb/{task}_bpb", ("eval/downstream/{task}_len_norm", "eval/downstream/{task}_acc")),
    ("{task}_bpb", ("{task}_acc_norm", "{task}_acc")),
    ("{task}_loss", ("{task}_acc_norm", "{task}_acc")),
)

# verdict thresholds, fixed in advance (not tuned on any held-out size)
NEAR_CHANCE_NOISE = 3.0   # largest size's mean accuracy within this many noise sds of chance
NEAR_CHANCE_MIN = 0.02    # ... or within 2 points of chance
NEAR_CHANCE_MAX = 0.05    # but never a task more than 5 points above it (that is noise, not chance)
MONOTONE_MIN = 0.6        # Spearman rank correlation of final accuracy with compute
SATURATION_NOISE = 2.0    # fitted ceiling within this many noise sds of the best run
NOISY_SHARE = 0.2         # noise sd above this share of the ladder's accuracy range
UNRELIABLE_NOISE = 2.0    # backtest mean |error| above this many noise sds ...
UNRELIABLE_MIN = 0.02     # ... and above 2 points



# --- reading the table ----------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    head, _, tail = pattern.partition("{task}")
    return re.compile("^" + re.escape(head) + "(?P<task>.+?)" + re.escape(tail) + "$")


def _pair_columns(columns, task_loss, accuracy, mapping) -> dict:
    """task -> (loss column, accuracy column, chance or None)."""
    columns = list(columns)
    if mapping is not None:
        if isinstance(mapping, (str, Path)):
            mapping = _read_mapping(mapping)
        out = {}
        for task, spec in mapping.items():
            if not isinstance(spec, dict) or "loss" not in spec or "accuracy" not in spec:
                raise InputError(f"mapping: task {task!r} needs 'loss' and 'accuracy' column names; got {spec!r}")
            out[task] = (spec["loss"], spec["accuracy"], spec.get("chance"))
        return out
    if task_loss is not None or accuracy is not None:
        if task_loss is None or accuracy is None:
            raise InputError("task_loss/accuracy: give both (column names, or patterns with {task}), or neither")
        accs = (accuracy,) if isinstance(accuracy, str) else tuple(accuracy)
        if "{task}" not in task_loss:
            return {accs[0]: (task_loss, accs[0], None)}
        namings = ((task_loss, accs),)
    else:
        namings = NAMINGS
    for loss_pat, acc_pats in namings:
        rx = _pattern_regex(loss_pat)
        out = {}
        for c in columns:
            m = rx.match(c)
            if not m:
                continue
            task = m.group("task")
            for ap in acc_pats:
                if ap.replace("{task}", task) in columns:
                    out[task] = (c, ap.replace("{task}", task), None)
                    break
        if out:
            return out
    if task_loss is not None:
        raise InputError(f"task_loss: no column matches {task_loss!r} with an accuracy column matching "
                         f"{list(accs)}; columns are {columns[:30]}{' ...' if len(columns) > 30 else ''}")
    raise InputError("task_loss/accuracy: no task columns recognised (known namings: "
                     + "; ".join(f"{a} with {' or '.join(b)}" for a, b in NAMINGS)
                     + "); give --task-loss and --accuracy patterns with {task}, or a mapping file")


def _read_mapping(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"mapping: no file at {str(p)!r}")
    text = p.read_text()
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import json

            data = json.loads(text)
    except Exception as exc:  # a parse error of either format
        raise InputError(f"mapping: could not read {str(p)!r} ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"mapping: {str(p)!r} must map task names to {{loss: column, accuracy: column}}")
    return data


@dataclass
class _Table:
    run: np.ndarray        # run label per evaluation
    N: np.ndarray
    D: np.ndarray
    final: np.ndarray      # bool: the run's final evaluation
    frac: np.ndarray       # D / the run's final D
    cell: np.ndarray       # (N, final D) label per row, to find reruns


def _numeric(df, col, param, positive=True):
    import pandas as pd

    if col not in df.columns:
        close = [c for c in df.columns if col.lower() in c.lower()][:5]
        raise InputError(f"{param}: column {col!r} not found in the table"
                         + (f" (similar: {close})" if close else f"; columns are {list(df.columns)[:20]}"))
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(v) | ((v <= 0) if positive else False)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{param}: column {col!r} must hold finite {'positive ' if positive else ''}numbers; "
                         f"{int(bad.sum())} row(s) do not, first at data row {i + 1} (value {df[col].iloc[i]!r})")
    return v


def _table(df, n, d, run) -> _Table:
    N, D = _numeric(df, n, "n"), _numeric(df, d, "d")
    if run == "auto":
        run = next((c for c in ("run", "run_id", "name") if c in df.columns), None)
    if run is not None and run not in df.columns:
        raise InputError(f"run: column {run!r} not found in the table")
    labels = df[run].astype(str).to_numpy() if run else np.arange(len(df)).astype(str)
    final = np.zeros(len(df), bool)
    frac = np.ones(len(df))
    dmax = {}
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(np.unique(N[idx])) > 1:
            raise InputError(f"run: run {lab!r} has more than one N ({sorted(set(N[idx]))[:3]}); "
                             "each run must be one model")
        last = idx[np.argmax(D[idx])]
        final[last] = True
        dmax[lab] = D[last]
        frac[idx] = D[idx] / D[last]
    cell = np.array([f"{N[i]:.6g}|{dmax[labels[i]]:.3g}" for i in range(len(df))])
    return _Table(labels, N, D, final, frac, cell)


# --- fitting ----------------------------------------------------------------------------------

def _law_data(N, D, y):
    import pandas as pd

    from ._engine import FitData

    return FitData.from_frame(pd.DataFrame({"N": N, "D": D, "loss": y}))


def _fit_law(law, data, fixed=None):
    """A loss form fitted to a task's final evaluations by the project's engine: start points over
    the exponents, then every start polished at once (a task table is small; the engine's full
    valley search is not needed for a prediction within a size step or two). Returns theta."""
    from ._engine import batched_refits
    from ._starts import _varpro_params, start_points, varpro_starts

    fixed = fixed or {}
    names = law.param_names
    if set(("E", "A", "B", "alpha", "beta")) <= set(names):
        starts = []
        for th in varpro_starts(data, 1e-3, k=6, grid=np.geomspace(0.01, 3.0, 24)):
            p = {**_varpro_params(th), **law.defaults, **fixed}
            starts.append(law.to_theta({n: p[n] for n in names}))
    else:
        starts = [np.where([n in fixed for n in names], law.to_theta({**law.from_theta(s), **fixed}), s)
                  for s in start_points(law, data, 1e-3)]
    starts = np.array(starts)
    n = len(data)
    free = np.array([p not in fixed for p in names])
    theta, cost, _ = batched_refits(law, data, np.tile(np.arange(n), (len(starts), 1)), np.ones((len(starts), n)),
                                    starts, 1e-3, free, max_iter=200)
    cost = np.where(np.isfinite(cost), cost, np.inf)
    if not np.isfinite(cost.min()):
        return np.full(len(names), np.nan)
    return theta[int(np.argmin(cost))]


def _refit_law(law, data, index, theta0, fixed=None):
    """Bootstrap refits of a law from ``theta0``, one per row of ``index``, all at once."""
    from ._engine import batched_refits

    free = np.array([p not in (fixed or {}) for p in law.param_names])
    theta, cost, _ = batched_refits(law, data, index, np.ones(index.shape), theta0, 1e-3, free, max_iter=100)
    theta[~np.isfinite(cost)] = np.nan
    return theta


def _fit_sigmoid(L, acc, chance, p0=None, weight=None):
    """(top, k, L0) of the chance-floored sigmoid, least squares in accuracy (rows weighted by
    ``weight``: a bootstrap's run multiplicities)."""
    from scipy.optimize import least_squares

    top_hi = 1.0
    lo = np.array([chance + 1e-3, math.log(1e-2), L.min() - 5 * np.ptp(L) - 1])
    hi = np.array([top_hi, math.log(1e3), L.max() + 5 * np.ptp(L) + 1])

    if weight is not None:
        keep = weight > 0
        L, acc, sw = L[keep], acc[keep], np.sqrt(weight[keep])
    else:
        sw = 1.0

    def resid(x):
        return sw * (sigmoid(L, chance, x[0], math.exp(x[1]), x[2]) - acc)

    span = max(np.ptp(L), 1e-3)
    if p0 is not None:
        starts = [np.array([p0[0], math.log(p0[1]), p0[2]])]
    else:
        starts = [np.array([top, math.log(kk / span), L0])
                  for top in (min(0.999, acc.max() + 0.05), min(0.999, acc.max() + 0.3), 0.999)
                  for kk in (2.0, 8.0) for L0 in (np.median(L), L.min())]
    best = None
    for x0 in starts:
        x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
        r = least_squares(resid, x0, bounds=(lo, hi), method="trf")
        if best is None or r.cost < best.cost:
            best = r
    top, logk, L0 = best.x
    return {"top": float(top), "k": float(math.exp(logk)), "L0": float(L0)}


def _spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _noise(tab: _Table, acc: np.ndarray, rows: np.ndarray) -> dict:
    """Run-to-run noise of final accuracy: reruns of one (N, D) cell (pooled sd of their final
    values) and the scatter of each run's last five evaluations about a straight line in log D."""
    fin = rows[tab.final[rows]]
    rerun_var, rerun_df = 0.0, 0
    for c in np.unique(tab.cell[fin]):
        v = acc[fin[tab.cell[fin] == c]]
        if len(v) >= 2:
            rerun_var += float(((v - v.mean()) ** 2).sum())
            rerun_df += len(v) - 1
    ck_var, ck_df = 0.0, 0
    for lab in np.unique(tab.run[rows]):
        idx = rows[tab.run[rows] == lab]
        idx = idx[np.argsort(tab.D[idx])][-5:]
        if len(idx) >= 4:
            x = np.log(tab.D[idx])
            coef = np.polyfit(x, acc[idx], 1)
            ck_var += float(((acc[idx] - np.polyval(coef, x)) ** 2).sum())
            ck_df += len(idx) - 2
    rerun = math.sqrt(rerun_var / rerun_df) if rerun_df else None
    ck = math.sqrt(ck_var / ck_df) if ck_df else None
    used = max(v for v in (rerun, ck, 0.0) if v is not None)
    return {"rerun": rerun, "rerun_pairs": rerun_df, "checkpoint": ck, "used": used}


def _fit_task(law, tab, loss, acc, chance, rows, sig_rows, B, rng, with_samples=True):
    """Both methods on the runs in ``rows`` (indices of evaluations): parameters, residual sds and
    joint bootstrap draws (the same resampled runs for step 1, the sigmoid and the direct law)."""
    fin = rows[tab.final[rows]]
    N, D, L, Q = tab.N[fin], tab.D[fin], loss[fin], acc[fin]
    data_law = _law_data(N, D, L)
    data_dir = _law_data(N, D, -np.log(np.clip(Q, 1e-6, 1 - 1e-9)))
    fixed = {"E": _DIRECT_FLOOR}
    th_law = _fit_law(law, data_law)
    tie = {}
    if len(np.unique(N)) < 3 and {"alpha", "beta"} <= set(law.param_names) and np.all(np.isfinite(th_law)):
        # two sizes fix the N term at two points only: tie its exponent to the D exponent (which the
        # token counts within each size measure), else the law's extrapolation in N is arbitrary
        tie = {"alpha": law.from_theta(th_law)["beta"]}
        th_law = _fit_law(law, data_law, tie)
    th_dir = _fit_law(law_direct(), data_dir, fixed)
    sig = _fit_sigmoid(loss[sig_rows], acc[sig_rows], chance)
    pl = law.from_theta(th_law)
    pd_ = law_direct().from_theta(th_dir)
    direct = {k: pd_[k] for k in ("A", "B", "alpha", "beta")}
    resid = {
        "loss": float(np.std(L - law(N, D, pl))) if np.all(np.isfinite(th_law)) else float("nan"),
        "sigmoid": float(np.std(acc[sig_rows] - sigmoid(loss[sig_rows], chance, **sig))),
        "direct": float(np.std(Q - _direct(N, D, **direct))),
    }
    samples = {"law": [], "sigmoid": [], "direct": []}
    if not (with_samples and B):
        return pl, sig, direct, resid, samples
    runs = tab.run[fin]  # one final row per run, in the order of ``fin``
    picks = rng.integers(0, len(fin), (B, len(fin)))
    picks = picks[[len(np.unique(N[p])) >= 2 for p in picks]]  # a law in N needs two sizes
    if not len(picks):
        return pl, sig, direct, resid, samples
    th_b = _refit_law(law, data_law, picks, th_law, tie)
    dir_b = _refit_law(law_direct(), data_dir, picks, th_dir, fixed)
    sig_run = tab.run[sig_rows]
    p0 = (sig["top"], sig["k"], sig["L0"])
    for b, p in enumerate(picks):
        counts = dict(zip(*np.unique(runs[p], return_counts=True)))
        w = np.array([counts.get(r, 0) for r in sig_run], float)
        s = _fit_sigmoid(loss[sig_rows], acc[sig_rows], chance, p0=p0, weight=w) if (w > 0).sum() >= 3 else None
        samples["law"].append(list(law.from_theta(th_b[b]).values()))
        samples["sigmoid"].append([s["top"], s["k"], s["L0"]] if s else [np.nan] * 3)
        cd = law_direct().from_theta(dir_b[b])
        samples["direct"].append([cd["A"], cd["B"], cd["alpha"], cd["beta"]])
    return pl, sig, direct, resid, samples


def law_direct():
    from .forms import get_form

    return get_form("chinchilla")


def fit_downstream(
    df,
    n: str = "params",
    d: str = "tokens",
    run: str | None = "auto",
    task_loss: str | None = None,
    accuracy=None,
    mapping=None,
    tasks=None,
    chance: dict | None = None,
    form: str = "chinchilla",
    bootstrap: int = 100,
    seed: int = 0,
    level: float = 0.9,
    warmup_fraction: float = 0.1,
    sigmoid_rows: str = "after_warmup",
    backtest: bool = True,
    progress: bool = False,
) -> DownstreamFit:
    """Fit task-accuracy laws to an eval table (one row per evaluation, or per run).

    Parameters
    ----------
    df : DataFrame or CSV path: N, D (tokens so far), a run label, and per task a loss column and an
        accuracy column (fractions in [0, 1]).
    n, d : columns of parameters N and tokens D (D of each evaluation when the table has checkpoints).
    run : column naming the run of each evaluation ("auto": ``run``/``run_id``/``name`` when present,
        else each row is one run). A run's final evaluation (largest D) is its cooled-down result.
    task_loss, accuracy : column names of one task, or patterns with ``{task}`` (accuracy may be a
        list of patterns, tried in order); default: the known namings in :data:`NAMINGS`.
    mapping : dict or JSON/YAML file, task -> {"loss": column, "accuracy": column, "chance": level}.
    tasks : keep only these tasks.
    chance : task -> chance accuracy, over the names recognised by :func:`chance_level`.
    form : the registered loss form of step 1 (task loss from N, D).
    bootstrap : joint bootstrap refits by run (both steps and the direct law on the same runs).
    level : interval level of the backtests' coverage and of the calibration.
    warmup_fraction : the sigmoid uses evaluations past this fraction of each run's tokens.
    sigmoid_rows : "after_warmup" (every evaluation past the warmup) or "final" (final ones only).
    backtest : run the rolling-origin backtests over model sizes (choose the method, calibrate the
        intervals, give the verdicts their backtest check); needs three sizes.
    """
    from ._data import read_table
    from .forms import get_form

    if not 0 < level < 1:
        raise InputError(f"level: must be in (0, 1); got {level}")
    if sigmoid_rows not in ("after_warmup", "final"):
        raise InputError(f"sigmoid_rows: 'after_warmup' or 'final'; got {sigmoid_rows!r}")
    if not 0 <= warmup_fraction < 1:
        raise InputError(f"warmup_fraction: must be in [0, 1); got {warmup_fraction}")
    law = get_form(form)
    if law.variables:
        raise InputError(f"form: {law.name!r} needs {law.variables}; step 1 takes a law of N and D only")
    table = read_table(df)
    pairs = _pair_columns(table.columns, task_loss, accuracy, mapping)
    if tasks:
        missing = sorted(set(tasks) - set(pairs))
        if missing:
            raise InputError(f"tasks: {missing} not found; tasks in the table are {sorted(pairs)}")
        pairs = {t: pairs[t] for t in tasks}
    tab = _table(table, n, d, run)
    sizes = np.unique(tab.N)
    if len(sizes) < 2:
        raise InputError(f"n: the table has one model size only (N = {sizes[0]:.4g}); a law in N needs at "
                         "least two sizes (three for a backtest)")
    all_rows = np.arange(len(table))
    rng = np.random.default_rng(seed)
    fits, points = {}, {}
    tasks_iter = list(pairs.items())
    if progress:
        from tqdm.auto import tqdm

        tasks_iter = tqdm(tasks_iter, desc="tasks", unit="task")
    for name, (lcol, acol, ch) in tasks_iter:
        loss = _numeric(table, lcol, f"task_loss ({name})")
        acc = _numeric(table, acol, f"accuracy ({name})", positive=False)
        if (acc < 0).any() or (acc > 1).any():
            i = int(np.flatnonzero((acc < 0) | (acc > 1))[0])
            raise InputError(f"accuracy ({name}): column {acol!r} must hold fractions in [0, 1]; data row "
                             f"{i + 1} has {acc[i]:g} (percentages? divide by 100)")
        known = ch if ch is not None else (chance or {}).get(name, chance_level(name))
        c = float(known) if known is not None else 0.0
        fits[name] = _task(name, lcol, acol, c, known is not None, law, tab, loss, acc, all_rows,
                           bootstrap, rng, level, warmup_fraction, sigmoid_rows, backtest)
        f = all_rows[tab.final]
        s = _sigmoid_rows(tab, all_rows, warmup_fraction, sigmoid_rows)
        points[name] = {"N": tab.N[f], "D": tab.D[f], "loss": loss[f], "accuracy": acc[f],
                        "curve_loss": loss[s], "curve_accuracy": acc[s]}
    fits = _calibrate(fits, level)
    options = {
        "n": n, "d": d, "run": run, "form": law.name, "bootstrap": bootstrap, "seed": seed, "level": level,
        "sizes": [float(s) for s in sizes], "n_runs": int(tab.final.sum()),
        "warmup_fraction": warmup_fraction, "sigmoid_rows": sigmoid_rows,
        "sigmoid_rows_words": ("every evaluation past the first "
                               f"{warmup_fraction:.0%} of each run's tokens" if sigmoid_rows == "after_warmup"
                               else "final evaluations only"),
        "backtest_words": (f"rolling origin over {len(sizes)} sizes (fit on the smaller, predict the next)"
                           if backtest and len(sizes) >= 3 else "none (fewer than three sizes)"),
    }
    from .fitting import _provenance

    return DownstreamFit(fits, options, _provenance(df if isinstance(df, (str, Path)) else "DataFrame"), points)


def _sigmoid_rows(tab, rows, warmup_fraction, mode):
    if mode == "final":
        return rows[tab.final[rows]]
    return rows[tab.frac[rows] >= max(warmup_fraction, 1e-12)]


def _task(name, lcol, acol, chance, chance_known, law, tab, loss, acc, rows, B, rng, level,
          warmup_fraction, sig_mode, backtest):
    sig_rows = _sigmoid_rows(tab, rows, warmup_fraction, sig_mode)
    pl, sig, direct, resid, samples = _fit_task(law, tab, loss, acc, chance, rows, sig_rows, B, rng)
    noise = _noise(tab, acc, rows)
    fin = rows[tab.final[rows]]
    sizes = np.unique(tab.N)
    biggest = tab.N[fin] == sizes[-1]
    big = fin[biggest][np.argsort(tab.D[fin][biggest])]
    last_gain = float(acc[big[-1]] - acc[big[-2]]) if len(big) >= 2 else float("nan")
    ladder = {"sizes": [float(s) for s in sizes], "best": float(acc[fin].max()), "last_gain": last_gain,
              "largest_mean": float(acc[fin][biggest].mean()),
              "range": float(np.ptp(acc[fin])),
              "rank_corr": _spearman(tab.N[fin] * tab.D[fin], acc[fin])}
    bt = _backtests(law, tab, loss, acc, chance, rows, warmup_fraction, sig_mode, B, rng, level) \
        if backtest and len(sizes) >= 3 else {}
    if bt:
        method = min(METHODS, key=lambda m: bt[m]["mae"] if np.isfinite(bt[m]["mae"]) else np.inf)
    else:
        method = "two_step"
    fit = TaskFit(name, lcol, acol, chance, chance_known, law.name, pl, sig, direct, resid, noise, samples,
                  bt, method, "predictable", "", ladder)
    verdict, reason = _verdict(fit)
    return TaskFit(**{**fit.__dict__, "verdict": verdict, "reason": reason})


def _backtests(law, tab, loss, acc, chance, rows, warmup_fraction, sig_mode, B, rng, level) -> dict:
    """Rolling origin over model sizes: fit on sizes below each origin, predict the next size's
    final accuracies. Per method: mean |error| and the errors in units of the interval half-width."""
    sizes = np.unique(tab.N)
    out = {m: {"errors": [], "ratios": []} for m in METHODS}
    for j in range(2, len(sizes)):
        train = rows[tab.N[rows] < sizes[j]]
        test = rows[(tab.N[rows] == sizes[j]) & tab.final[rows]]
        sig_rows = _sigmoid_rows(tab, train, warmup_fraction, sig_mode)
        pl, sig, direct, resid, samples = _fit_task(law, tab, loss, acc, chance, train, sig_rows,
                                                    min(B, 50), rng)
        t = TaskFit("", "", "", chance, True, law.name, pl, sig, direct, resid, _noise(tab, acc, train), samples,
                    {}, "two_step", "", "", {})
        for m in METHODS:
            p = t.accuracy(tab.N[test], tab.D[test], m)
            lo, hi = t.interval(tab.N[test], tab.D[test], level, m)
            err = acc[test] - p
            half = np.where(err >= 0, hi - p, p - lo)
            out[m]["errors"] += [float(e) for e in err]
            out[m]["ratios"] += [float(abs(e) / h) if h > 0 else float("inf") for e, h in zip(err, half)]
    for m in METHODS:
        e = np.asarray(out[m]["errors"])
        out[m]["mae"] = float(np.mean(np.abs(e))) if len(e) and np.all(np.isfinite(e)) else float("nan")
        out[m]["bias"] = float(np.mean(e)) if len(e) else float("nan")
    return out


def _verdict(t: TaskFit) -> tuple[str, str]:
    noise, lad = t.noise["used"], t.ladder
    chance_words = f"chance {t.chance:.3g}" + ("" if t.chance_known else " (assumed; give it in a mapping)")
    above = lad["largest_mean"] - t.chance
    if above < max(min(NEAR_CHANCE_NOISE * noise, NEAR_CHANCE_MAX), NEAR_CHANCE_MIN):
        return "near chance", (f"the largest size's runs average {lad['largest_mean']:.3f}, {100 * above:.1f} points "
                               f"above {chance_words}, within {NEAR_CHANCE_NOISE:g} run-to-run sds "
                               f"({100 * noise:.1f} pts) or 2 points of it")
    if lad["rank_corr"] < MONOTONE_MIN:
        return "not monotone", (f"final accuracy hardly rises with compute (rank correlation "
                                f"{lad['rank_corr']:.2f} < {MONOTONE_MIN})")
    flat = not lad.get("last_gain", np.nan) >= noise  # the largest size's two longest runs differ by < 1 noise sd
    if t.method == "two_step" and t.sigmoid["top"] - lad["best"] < SATURATION_NOISE * noise and flat:
        return "saturating", (f"the best run ({lad['best']:.3f}) is within {SATURATION_NOISE:g} noise sds of the "
                              f"fitted ceiling {t.sigmoid['top']:.3f}, and the largest size gained "
                              f"{100 * lad.get('last_gain', np.nan):.1f} pts from its last doubling of tokens")
    if lad["range"] > 0 and noise > NOISY_SHARE * lad["range"]:
        return "noisy", (f"run-to-run sd {100 * noise:.1f} pts is {noise / lad['range']:.0%} of the "
                         f"{100 * lad['range']:.1f}-point range the ladder spans")
    bt = t.backtest.get(t.method, {}) if t.backtest else {}
    mae = bt.get("mae")
    if mae is not None and (not np.isfinite(mae) or mae > max(UNRELIABLE_NOISE * noise, UNRELIABLE_MIN)):
        return "unreliable", (f"its backtest (predicting the next size from the smaller ones) missed by "
                              f"{100 * mae:.1f} pts on average, more than {UNRELIABLE_NOISE:g} noise sds and "
                              f"{100 * UNRELIABLE_MIN:.0f} pts")
    if mae is None:
        return "predictable", "not backtested (fewer than three sizes): judged from the data only"
    return "predictable", f"backtest |error| {100 * mae:.1f} pts by the {t.method.replace('_', '-')} method"


def _calibrate(fits: dict, level: float) -> dict:
    """One interval scale for all tasks, from the backtests of those that pass the data checks:
    the ``level`` quantile of |error| / half-width of the chosen methods (never below 1)."""
    ratios = []
    for t in fits.values():
        if t.backtest and t.verdict in ("predictable", "unreliable"):
            ratios += t.backtest[t.method]["ratios"]
    r = np.asarray([x for x in ratios if np.isfinite(x)])
    if len(r) < 3:
        return fits
    c = float(max(1.0, np.quantile(r, level)))
    return {k: TaskFit(**{**t.__dict__, "calibration": c}) for k, t in fits.items()}
