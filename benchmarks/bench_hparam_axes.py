"""Benchmark: how the optimal hyperparameters move along the axes a plan changes, on CPU.

    python benchmarks/bench_hparam_axes.py horizon|wd|batch|all [--threads 2] [--analyze-only]

horizon  lr sweeps (2^-10..2^-4) at widths 32 and 64, two seeds, with WSD branch cooldowns at
         five token horizons (2^17..2^21 tokens): the optimal lr at every horizon from one run
         per lr, the fitted lr*(N, D) = C N^a_N D^a_D with its interval, and a backtest: fit on
         the shorter horizons, predict the best lr at the longest (target: within one 2x step).
wd       lr x weight decay at width 32 with branches at 2^19 and 2^21 tokens: the optimal AdamW
         timescale tau_epoch = B / (lr wd D) at each horizon (Wang & Aitchison 2025).
batch    batch sizes 4..64 sequences x 4 learning rates at width 32, recording the first step at
         which the stable phase reaches each of six target losses: B_crit per target
         (McCandlish et al. 2018) and the law B_crit = k D^b against the tokens each target needs.
warmup   warmup of 4..256 steps at width 32 (lr 2^-8, the horizon sweep's optimum, and 2^-7) and
         width 64 (2^-7), with branches at 2^19 and 2^21 tokens: does the best warmup scale with
         the run (a fraction) or stay a fixed length, and how does it trade with the lr?

Runs go to benchmarks/runs/<axis> (resumable); results to benchmarks/results/hparam_<axis>.*.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"
SEQ = 64
COMMON_MODEL = {"depth": 2, "d_head": 16, "base_width": 32, "seq_len": SEQ}
COMMON_TRAIN = {"schedule": "wsd", "warmup_steps": 32, "checkpoint_every": 10 ** 9}
DATA = {"corpus": "stdlib", "tokenizer": "byte"}
HORIZONS = [2 ** k for k in range(17, 22)]


def spec(axis: str) -> dict:
    if axis == "horizon":
        return {"grid": {"width": [32, 64], "lr": [2.0 ** -k for k in range(4, 11)], "seed": [0, 1],
                         "tokens": HORIZONS},
                "model": COMMON_MODEL, "train": {**COMMON_TRAIN, "batch_size": 16, "eval_every": 10 ** 9},
                "data": DATA}
    if axis == "wd":
        return {"grid": {"width": [32], "lr": [2.0 ** -k for k in range(6, 10)],
                         "weight_decay": [0.0, 0.1, 0.3, 1.0, 3.0, 10.0], "tokens": [2 ** 19, 2 ** 21]},
                "model": COMMON_MODEL, "train": {**COMMON_TRAIN, "batch_size": 16, "eval_every": 10 ** 9},
                "data": DATA}
    if axis == "batch":
        return {"grid": {"width": [32], "batch_size": [4, 8, 16, 32, 64], "lr": [2.0 ** -k for k in range(5, 9)],
                         "tokens": [2 ** 21]},
                "model": COMMON_MODEL,
                "train": {**COMMON_TRAIN, "eval_every": 20, "eval_batches": 4,
                          "target_losses": [2.6, 2.4, 2.2, 2.05, 1.95, 1.85]},
                "data": DATA}
    if axis == "warmup":
        return {"grid": {"warmup_steps": [4, 16, 64, 256], "tokens": [2 ** 19, 2 ** 21]},
                "run": [{"width": 32, "lr": 2.0 ** -8}, {"width": 32, "lr": 2.0 ** -7}, {"width": 64, "lr": 2.0 ** -7}],
                "model": COMMON_MODEL,
                "train": {**COMMON_TRAIN, "batch_size": 16, "eval_every": 10 ** 9},
                "data": DATA}
    raise SystemExit(f"axis: must be horizon, wd, batch, warmup or all; got {axis!r}")


def run(axis: str, threads: int):
    from probes.sweep import expand_grid, run_sweep

    run_sweep(expand_grid(spec(axis)), ROOT / "benchmarks" / "runs" / axis, workers=1, progress=True,
              threads=threads)


def analyze_horizon() -> dict:
    import pandas as pd

    from fits.hparams import fit_hyperparameters, lr_horizon_backtest
    from probes.sweep import export_results

    df = export_results(ROOT / "benchmarks" / "runs" / "horizon", final_only=True)
    df = df.groupby(["width", "params", "tokens", "lr", "batch_tokens"], as_index=False).agg(
        val_loss=("val_loss", "mean"), val_loss_sd=("val_loss", "std"), seeds=("seed", "nunique"),
        diverged=("diverged", "any"))
    df.to_csv(RES / "hparam_horizon.csv", index=False)
    hp = fit_hyperparameters(df.assign(final=True), bootstrap=200)
    backtests = []
    for first in (HORIZONS[0], HORIZONS[1]):  # the shortest horizon is 128 steps, a quarter of them warmup
        for method in ("joint", "cells"):
            bt = lr_horizon_backtest(df[df["tokens"] >= first], method=method)
            backtests += [{**r, "method": method, "shortest_horizon": first} for r in bt.to_dict(orient="records")]
    bt = pd.DataFrame(backtests)
    cells = fit_hyperparameters(df.assign(final=True), bootstrap=200, method="cells")
    out = {"lr_law": hp.lr_law, "ci": hp.ci().to_dict(orient="index"),
           "lr_law_cells": cells.lr_law, "ci_cells": cells.ci().to_dict(orient="index"),
           "cells": cells.cell_optima.drop(columns=["ridge"]).to_dict(orient="records"),
           "backtest": bt.to_dict(orient="records"),
           "backtest_within_one_2x_step": {f"{m} from {f}": bool((g["grid_steps_off"].abs() <= 1.0).all())
                                           for (m, f), g in bt.groupby(["method", "shortest_horizon"])}}
    ax = hp.plot_horizon()
    ax.figure.savefig(RES / "hparam_horizon.png", dpi=110, bbox_inches="tight")
    return out


def analyze_wd() -> dict:
    from fits.hparams import fit_weight_decay
    from probes.sweep import export_results

    df = export_results(ROOT / "benchmarks" / "runs" / "wd", final_only=True)
    cols = ["width", "params", "tokens", "lr", "weight_decay", "batch_tokens", "val_loss", "diverged"]
    df[cols].to_csv(RES / "hparam_wd.csv", index=False)
    wd = fit_weight_decay(df)
    ax = wd.plot()
    ax.figure.savefig(RES / "hparam_wd.png", dpi=110, bbox_inches="tight")
    return wd.to_dict()


def analyze_batch() -> dict:
    from fits.hparams import critical_batch, critical_batch_law
    from probes.sweep import export_results

    rows = export_results(ROOT / "benchmarks" / "runs" / "batch")
    cb = critical_batch(rows)
    cb.to_csv(RES / "hparam_batch.csv", index=False)
    law = critical_batch_law(cb)
    from fits._plot import pyplot

    plt = pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ok = cb[np.isfinite(cb["b_crit"])]
    ax.scatter(ok["e_min"], ok["b_crit"], label="B_crit per target loss")
    for _, r in ok.iterrows():
        ax.annotate(f"L={r['target_loss']:g}", (r["e_min"], r["b_crit"]), fontsize="x-small")
    d = np.geomspace(ok["e_min"].min() / 1.5, ok["e_min"].max() * 1.5, 20)
    ax.plot(d, np.exp(law["log_k"]) * d ** law["b"], label=f"fit: B_crit ~ D^{law['b']:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="tokens to reach the target, E_min", ylabel="B_crit (tokens)",
           title="critical batch against the data a target needs")
    ax.legend(fontsize="small")
    fig.savefig(RES / "hparam_batch.png", dpi=110, bbox_inches="tight")
    return {"law": law, "per_target": cb.to_dict(orient="records")}


def analyze_warmup() -> dict:
    from probes.sweep import export_results

    df = export_results(ROOT / "benchmarks" / "runs" / "warmup", final_only=True)
    df = df[["width", "params", "lr", "warmup_steps", "tokens", "batch_tokens", "val_loss", "diverged"]].sort_values(
        ["width", "lr", "tokens", "warmup_steps"])
    df.to_csv(RES / "hparam_warmup.csv", index=False)
    best = df.loc[df.groupby(["width", "lr", "tokens"])["val_loss"].idxmin()]
    spread = df.groupby(["width", "lr", "tokens"])["val_loss"].agg(lambda s: s.max() / s.min() - 1)
    from fits._plot import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, ((w, lr_, tok), g) in enumerate(df.groupby(["width", "lr", "tokens"])):
        ax.plot(g["warmup_steps"], g["val_loss"], marker="o", color=f"C{k}", label=f"width {w}, lr {lr_:g}, {tok:,} tokens")
    ax.set(xscale="log", xlabel="warmup steps", ylabel="final validation loss", title="warmup length")
    ax.legend(fontsize="small")
    fig.savefig(RES / "hparam_warmup.png", dpi=110, bbox_inches="tight")
    return {"best": best.to_dict(orient="records"),
            "spread": [{"width": w, "lr": lr_, "tokens": t, "loss_range": v} for (w, lr_, t), v in spread.items()]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("axis", choices=["horizon", "wd", "batch", "warmup", "all"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--analyze-only", action="store_true")
    args = ap.parse_args()
    axes = ["horizon", "wd", "batch", "warmup"] if args.axis == "all" else [args.axis]
    for axis in axes:
        t0 = time.time()
        if not args.analyze_only:
            run(axis, args.threads)
        out = {"axis": axis, "spec": spec(axis), "wall_s": time.time() - t0,
               **{"horizon": analyze_horizon, "wd": analyze_wd, "batch": analyze_batch,
                  "warmup": analyze_warmup}[axis]()}
        (RES / f"hparam_{axis}.json").write_text(json.dumps(out, indent=2, default=float))
        print(json.dumps({k: v for k, v in out.items() if k not in ("cells", "per_target", "spec")},
                         indent=2, default=float)[:3000])


if __name__ == "__main__":
    main()
