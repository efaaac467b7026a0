"""Benchmark: does the default double-descent grid show a model-wise bump on CPU?

    python benchmarks/bench_double_descent.py

Runs probes/grids/double_descent.toml into benchmarks/runs/double_descent (resumable), then
looks for a validation-loss bump in log N (prominence > 2x seed noise, training loss falling)
and, if found, the capacity in bits per parameter implied by where it sits. Writes
benchmarks/results/double_descent.{csv,json,png}.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    from fits.repetition import capacity_from_bump, detect_double_descent
    from probes.sweep import export_results, load_grid, run_sweep

    configs = load_grid("double_descent")
    runs = ROOT / "benchmarks" / "runs" / "double_descent"
    t0 = time.time()
    run_sweep(configs, runs, workers=1, progress=True)
    df = export_results(runs, final_only=True)
    df = df[df["run_id"].isin({c.key() for c in configs})]  # this grid's runs only
    df = df.sort_values(["params_total", "seed"])
    res = ROOT / "benchmarks" / "results"
    df[["width", "params", "params_total", "seed", "tokens", "epoch", "unique_tokens", "label_noise",
        "train_loss", "val_loss", "val_bpb"]].to_csv(res / "double_descent.csv", index=False)
    bumps = detect_double_descent(df, n="params_total")
    out = {"wall_s": time.time() - t0, "runs": len(df), "bumps": bumps.to_dict(orient="records")}
    if len(bumps):
        # information per unique token: the smallest model's training loss in bits approximates the data entropy
        bpt = float(df.groupby("params_total")["val_loss"].mean().iloc[0]) / math.log(2)
        out["bits_per_token_estimate"] = bpt
        out["capacity_bits_per_param"] = capacity_from_bump(bumps["params_peak"].iloc[0],
                                                            int(df["unique_tokens"].iloc[0]), bpt)
    from fits._plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    m = df.groupby("params_total")[["val_loss", "train_loss"]].mean()
    ax.plot(m.index, m["val_loss"], "o-", label="validation")
    ax.plot(m.index, m["train_loss"], "s--", label="training (noisy targets)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (total)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{int(df['unique_tokens'].iloc[0])} unique tokens x {df['epoch'].iloc[0]:.0f} epochs")
    ax.legend()
    fig.savefig(res / "double_descent.png", dpi=110, bbox_inches="tight")
    (res / "double_descent.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
