"""Benchmark: how well the lr/batch laws predict the optimum at a held-out model size.

Synthetic lr x batch sweeps with a known truth shaped like the published ones: the optimum on Step
Law's lr*(N, D) = 1.79 N^-0.713 D^0.307 and B*(D) = 0.58 D^0.571, a loss bowl in (log lr, log B)
that rises faster on the high-lr side (cubic term), an lr x batch tilt, grids that are not
centred on the optimum, multiplicative noise, and (``hard+spikes``) 3% of runs 5-100% worse. Five sizes (6e7..1e9) x two horizons; the laws
are fitted on the four smaller sizes and predict the optimum at 1e9. Both fitting methods:
``cells`` (one quadratic per cell, then power laws through the cell optima) and ``joint`` (all
runs near every cell's optimum fitted at once). Also the loss at the predicted point against the
best run of the held-out cell (whose noise flatters it) and against the true optimum.

    python benchmarks/bench_hparam_fit.py [--seeds 20]

Writes benchmarks/results/hparam_fit.{csv,json}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"easy": dict(noise=0.003, asym=0.03, lr_step=2 ** 0.5),
            "hard": dict(noise=0.006, asym=0.06, lr_step=2.0),
            "hard+spikes": dict(noise=0.006, asym=0.06, lr_step=2.0, spikes=0.03)}
NS, DS, HELD_OUT = (6e7, 1.2e8, 2.5e8, 5e8, 1e9), (2e10, 8e10), 1e9


def truth(N, D):
    return 1.79 * N ** -0.713 * D ** 0.307, 0.58 * D ** 0.571


def surface(N, D, lr, B, asym):
    lr0, b0 = truth(N, D)
    u, v = np.log(lr / lr0), np.log(B / b0)
    base = 1.8 + 400 / N ** 0.34 + 400 / D ** 0.28
    return base * (1 + 0.012 * u * u + asym * np.maximum(u, 0) ** 3 + 0.006 * v * v + 0.004 * u * v)


def sweep(seed: int, noise: float, asym: float, lr_step: float, spikes: float = 0.0) -> pd.DataFrame:
    """``spikes``: the fraction of runs whose loss is 5-100% worse than the surface (loss spikes,
    half-diverged runs that were not flagged)."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in NS:
        for D in DS:
            lr0, b0 = truth(N, D)
            lrs = lr0 * lr_step ** np.arange(-5, 6) * np.exp(rng.uniform(-0.3, 0.3))
            bs = b0 * 2.0 ** np.arange(-3, 4) * np.exp(rng.uniform(-0.3, 0.3))
            for lr in lrs:
                for B in bs:
                    spike = rng.uniform(1.05, 2.0) if rng.random() < spikes else 1.0
                    rows.append((N, D, lr, B, surface(N, D, lr, B, asym) * spike * (1 + noise * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "val_loss"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    from fits.hparams import fit_hyperparameters

    rows = []
    for name, cfg in SETTINGS.items():
        for seed in range(args.seeds):
            df = sweep(seed, **cfg)
            held = df[df["params"] == HELD_OUT]
            for method in ("cells", "joint"):
                t0 = time.time()
                hp = fit_hyperparameters(df[df["params"] < HELD_OUT], method=method, bootstrap=50, seed=seed)
                wall = time.time() - t0
                for D in DS:
                    p = hp.predict(HELD_OUT, D).iloc[0]
                    lr0, b0 = truth(HELD_OUT, D)
                    best = held[held["tokens"] == D]["val_loss"].min()
                    at_pred = surface(HELD_OUT, D, p["lr_opt"], p["batch_opt"], cfg["asym"])
                    at_truth = surface(HELD_OUT, D, lr0, b0, cfg["asym"])
                    rows.append({"setting": name, "seed": seed, "method": method, "D": D,
                                 "lr_ratio": p["lr_opt"] / lr0, "batch_ratio": p["batch_opt"] / b0,
                                 "lr_covered": bool(p["lr_opt_low"] <= lr0 <= p["lr_opt_high"]),
                                 "loss_vs_best_run": at_pred / best - 1, "loss_vs_true_optimum": at_pred / at_truth - 1,
                                 "wall_s": wall})
    r = pd.DataFrame(rows)
    r["lr_factor"] = np.exp(np.abs(np.log(r["lr_ratio"])))
    r["batch_factor"] = np.exp(np.abs(np.log(r["batch_ratio"])))
    res = ROOT / "benchmarks" / "results"
    r.to_csv(res / "hparam_fit.csv", index=False)
    summary = r.groupby(["setting", "method"]).agg(
        lr_factor_mean=("lr_factor", "mean"), lr_factor_max=("lr_factor", "max"),
        batch_factor_mean=("batch_factor", "mean"), batch_factor_max=("batch_factor", "max"),
        within_1p3=("lr_factor", lambda s: float(np.mean(s <= 1.3))),
        lr_coverage=("lr_covered", "mean"), loss_vs_best_run_max=("loss_vs_best_run", "max"),
        loss_vs_true_optimum_max=("loss_vs_true_optimum", "max"),
        wall_s=("wall_s", "mean")).reset_index()
    out = {"settings": SETTINGS, "sizes": NS, "horizons": DS, "held_out": HELD_OUT, "seeds": args.seeds,
           "summary": summary.to_dict(orient="records")}
    (res / "hparam_fit.json").write_text(json.dumps(out, indent=2, default=float))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
