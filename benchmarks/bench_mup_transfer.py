"""Benchmark: learning-rate transfer across width, muP against the standard parametrization.

Widths 64..512 (base 64), 2 layers, learning rates 2^-11..2^-5, WSD schedule, the embedded
standard-library corpus, on CPU. Pass (shared/reference/mup.md): under muP the loss-minimising
lr stays within one grid step (2x) of the base width's; under SP it drifts with width.

    python benchmarks/bench_mup_transfer.py [--steps 300] [--threads 1]

Runs go to benchmarks/runs/ (resumable); results to benchmarks/results/mup_transfer.{csv,json,png}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--pars", default="mup,sp", help="parametrizations to run, comma-separated")
    ap.add_argument("--base", type=int, default=None, help="base width (default: the smallest)")
    ap.add_argument("--lrs", default="5,6,7,8,9,10,11", help="learning rates as powers 2^-k")
    ap.add_argument("--analyze-only", action="store_true")
    args = ap.parse_args()
    import torch

    from probes.sweep import expand_grid, export_results, run_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    batch, seq = 8, 64
    spec = {
        "grid": {"width": widths, "lr": [2.0 ** -int(k) for k in args.lrs.split(",")],
                 "parametrization": args.pars.split(","),
                 "seed": list(range(args.seeds)), "tokens": [args.steps * batch * seq]},
        "model": {"depth": 2, "d_head": 16, "base_width": args.base or widths[0], "seq_len": seq},
        "train": {"batch_size": batch, "eval_every": 10 ** 9, "schedule": "wsd", "checkpoint_every": 10 ** 9},
        "data": {"corpus": "stdlib", "tokenizer": "byte"},
    }
    runs = ROOT / "benchmarks" / "runs" / ("mup_transfer" if args.steps == 300 else f"mup_transfer_{args.steps}steps")
    t0 = time.time()
    if not args.analyze_only:
        run_sweep(expand_grid(spec), runs, workers=1, progress=True)
    df = export_results(runs, final_only=True)
    cols = ["parametrization", "width", "lr", "seed", "val_loss", "train_loss", "diverged", "tokens", "wall_s",
            "tokens_per_s"]
    df = df[cols].sort_values(["parametrization", "width", "lr"])
    df = df[df["width"].isin(widths) & df["parametrization"].isin(args.pars.split(","))]
    res = ROOT / "benchmarks" / "results"
    df.to_csv(res / "mup_transfer.csv", index=False)
    from fits.transfer import check_transfer

    summary = {"steps": args.steps, "batch_tokens": batch * seq, "widths": widths, "seeds": args.seeds,
               "wall_s": time.time() - t0}
    for par in args.pars.split(","):
        r = check_transfer(df[df["parametrization"] == par], width="width", lr="lr", loss="val_loss")
        summary[par] = {"verdict": r.verdict, "optimal_lr": r.optima.set_index("width")["lr_opt"].to_dict(),
                        "drift_exponent": r.drift, "drift_interval": list(r.drift_interval), "evidence": r.evidence,
                        "wider_vs_narrower": wider_vs_narrower(df[df["parametrization"] == par])}
        ax = r.plot()
        ax.set_title(f"{par}: final validation loss vs learning rate")
        ax.figure.savefig(res / f"mup_transfer_{par}.png", dpi=110, bbox_inches="tight")
    (res / "mup_transfer.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))


def wider_vs_narrower(df) -> dict:
    """At each lr, each width against the next narrower one: the mean loss difference and whether
    it exceeds twice its standard error over seeds (muP's signature: wider is no worse)."""
    import numpy as np

    g = df[~df["diverged"].astype(bool)].groupby(["lr", "width"])["val_loss"].agg(["mean", "std", "count"])
    out = {"better": 0, "worse": 0, "within_noise": 0, "pairs": []}
    for lr_, h in g.groupby(level="lr"):
        h = h.droplevel("lr").sort_index()
        for (w1, a), (w2, b) in zip(h.iterrows(), list(h.iterrows())[1:]):
            se = float(np.sqrt(a["std"] ** 2 / a["count"] + b["std"] ** 2 / b["count"])) if a["count"] > 1 else float("nan")
            diff = float(b["mean"] - a["mean"])
            verdict = ("within_noise" if not np.isfinite(se) or abs(diff) <= 2 * se else
                       "better" if diff < 0 else "worse")
            out[verdict] += 1
            out["pairs"].append({"lr": lr_, "narrow": int(w1), "wide": int(w2), "diff": diff, "se": se,
                                 "verdict": verdict})
    return out


if __name__ == "__main__":
    main()
