"""Benchmark: Chinchilla loss-surface fit and bootstrap vs Besiroglu et al.'s reference procedure.

Run from the repository root with ../shared beside it:  python benchmarks/bench_fit.py
Targets: a single fit >= 1000x faster than Besiroglu et al.'s procedure measured in the same run;
1000 bootstrap refits within ~100 single fits; fit + 1000 refits on a 12-40 row probe table no
slower than on the 240 Chinchilla points. Writes benchmarks/results/fit.json.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from fits import fit_loss_surface

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "chinchilla_svg_extracted.csv"


def reference_objective(x, logN, logD, logL, delta=1e-3):
    a, b, e, alpha, beta = x
    pred = logsumexp([a - alpha * logN, b - beta * logD, np.full_like(logN, e)], axis=0)
    return np.sum(huber(delta, pred - logL))


def _timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def _small_tables(seed: int) -> dict:
    """Fit and fit + 1000 bootstrap refits on small tables: the reference probe ladder (resampled
    by run) and synthetic noisy tables of 12 and 40 rows."""
    out = {}
    probe = pd.read_csv(ROOT / "data" / "reference" / "probes_default_cpu.csv")
    rng = np.random.default_rng(seed)
    tables = {"probe_ladder_%d_rows" % len(probe): dict(df=probe, n="params_total", loss="val_loss")}
    for n in (12, 40):
        N, D = np.exp(rng.uniform(11, 14, n)), np.exp(rng.uniform(13, 17, n))
        L = (1.2 + 60 / N**0.4 + 500 / D**0.35) * np.exp(rng.normal(0, 0.01, n))
        tables[f"synthetic_{n}_rows"] = dict(df=pd.DataFrame({"params": N, "tokens": D, "loss": L}))
    for name, kw in tables.items():
        fit_loss_surface(**kw, bootstrap=0)
        fits = [_timed(lambda: fit_loss_surface(**kw, bootstrap=0))[1] for _ in range(5)]
        boot, t_boot = _timed(lambda: fit_loss_surface(**kw, bootstrap=1000, seed=seed, calibrate=False, trust=False))
        _, t_all = _timed(lambda: fit_loss_surface(**kw, bootstrap=1000, seed=seed))
        out[name] = {"fit_median_s": statistics.median(fits), "status": boot.status,
                     "fit_plus_1000_bootstrap_s": t_boot, "with_calibration_and_trust_checks_s": t_all,
                     "bootstrap_group": boot.options["group"]}
    return out


def main(n_reference_starts: int = 40, seed: int = 0):
    df = pd.read_csv(CSV).sort_values("loss").iloc[:-5]
    t = pd.DataFrame({"params": df["Model Size"], "tokens": df["Training FLOP"] / (6 * df["Model Size"]),
                      "loss": df["loss"]})
    fit_loss_surface(t, bootstrap=0)  # warm caches and imports
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        fit = fit_loss_surface(t, bootstrap=0)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    boot = fit_loss_surface(t, bootstrap=1000, seed=seed, calibrate=False, trust=False)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_loss_surface(t, bootstrap=1000, seed=seed)
    t_boot_cal = time.perf_counter() - t0

    logN, logD, logL = np.log(t["params"].to_numpy()), np.log(t["tokens"].to_numpy()), np.log(t["loss"].to_numpy())
    grid = list(itertools.product(range(0, 30, 5), range(0, 30, 5), [-1, -.5, 0, .5, 1],
                                  [0, .5, 1, 1.5, 2], [0, .5, 1, 1.5, 2]))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(grid), n_reference_starts, replace=False)
    per_start, best = [], np.inf
    for i in picks:
        a, b, e, alpha, beta = grid[i]
        t0 = time.perf_counter()
        res = minimize(reference_objective, [a, b, e, alpha, beta], args=(logN, logD, logL), method="L-BFGS-B")
        per_start.append(time.perf_counter() - t0)
        best = min(best, res.fun)
    ref_full = statistics.mean(per_start) * len(grid)
    small = _small_tables(seed)
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "fit_median_s": statistics.median(times),
        "fit_params": fit.params, "fit_objective": fit.objective,
        "fit_plus_1000_bootstrap_s": t_boot,
        "fit_plus_1000_bootstrap_and_calibration_s": t_boot_cal,
        "bootstrap_ci95": boot.ci(0.95)[["low", "high"]].to_dict(orient="index"),
        "reference_grid_starts": len(grid),
        "reference_mean_s_per_start": statistics.mean(per_start),
        "reference_full_fit_s_extrapolated": ref_full,
        "reference_best_objective_on_sample": best,
        "speedup_single_fit": ref_full / statistics.median(times),
        "bootstrap_1000_in_single_fits": (t_boot - statistics.median(times)) / statistics.median(times),
        "small_tables": small,
    }
    path = ROOT / "benchmarks" / "results" / "fit.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
