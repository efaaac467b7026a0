"""Benchmark: the lr x batch grid on CPU, analysed with the hyperparameter laws.

    python benchmarks/bench_lr_batch.py [--threads 1]

Runs probes/grids/lr_batch.toml into benchmarks/runs/lr_batch (resumable), then fits
lr_opt(N, D) and B_opt(D), the temperature along the ridge, the critical batch from steps to
target losses and from gradient-noise-scale estimates. Writes benchmarks/results/lr_batch.{csv,json}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    from fits.errors import InputError
    from fits.hparams import critical_batch, fit_hyperparameters, noise_scale_batch
    from probes.sweep import export_results, load_grid, run_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = ROOT / "benchmarks" / "runs" / "lr_batch"
    t0 = time.time()
    run_sweep(load_grid("lr_batch"), runs, workers=1, progress=True)
    rows = export_results(runs)
    res = ROOT / "benchmarks" / "results"
    final = rows[rows["final"].astype(bool)]
    final[["width", "params", "tokens", "lr", "batch_tokens", "val_loss", "train_loss", "diverged"]].to_csv(
        res / "lr_batch.csv", index=False)
    out = {"wall_s": time.time() - t0, "runs": int(rows["run_id"].nunique())}
    try:
        hp = fit_hyperparameters(final, n="params", d="tokens", lr="lr", batch="batch_tokens", loss="val_loss")
        out["lr_law"], out["batch_law"] = hp.lr_law, hp.batch_law
        out["ci"] = hp.ci().to_dict(orient="index")
        out["temperature"] = {k: v for k, v in hp.temperature.items() if k != "ridge"}
        out["cells"] = hp.cell_optima.drop(columns=["ridge"]).to_dict(orient="records")
        out["priors_flagged"] = int(hp.priors["flag"].sum())
        hp.to_json(res / "lr_batch_hparams.json")
    except InputError as exc:
        out["hparams_error"] = str(exc)
    out["critical_batch_from_steps"] = critical_batch(rows, group=("width",)).to_dict(orient="records")
    out["critical_batch_from_noise_scale"] = noise_scale_batch(rows[rows["phase"] == "stable"]).describe().to_dict()
    (res / "lr_batch.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, indent=2, default=float)[:4000])


if __name__ == "__main__":
    main()
