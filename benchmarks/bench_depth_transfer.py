"""Benchmark: learning-rate transfer across depth, CompleteP against muP without depth scaling.

Depths 2..16 at width 64 (base depth 2), learning rates 2^-11..2^-5, WSD, the embedded
standard-library corpus, on CPU. Under CompleteP (Dey et al. 2025, alpha = 1: residual branches
x base_depth/depth, hidden Adam eps / (m m_L)) the loss-minimising lr should stay within one grid
step (2x) across depth; without depth scaling (base_depth = depth: plain muP) it drifts.

    python benchmarks/bench_depth_transfer.py [--steps 300] [--threads 1] [--seeds 1]

Runs go to benchmarks/runs/depth_transfer (resumable); results to
benchmarks/results/depth_transfer.{csv,json} and depth_transfer_{completep,none}.png.
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depths", default="2,4,8,16")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--analyze-only", action="store_true")
    args = ap.parse_args()
    from probes.sweep import expand_grid, export_results, run_sweep

    depths = [int(d) for d in args.depths.split(",")]
    batch, seq = 8, 64
    runs_spec = ([{"depth": d, "base_depth": depths[0]} for d in depths]      # CompleteP: depth scaled
                 + [{"depth": d, "base_depth": d} for d in depths[1:]])      # none: each depth is its own base
    spec = {
        "grid": {"lr": [2.0 ** -k for k in range(5, 12)], "seed": list(range(args.seeds)),
                 "tokens": [args.steps * batch * seq]},
        "model": {"width": 64, "d_head": 16, "base_width": 64, "seq_len": seq},
        "train": {"batch_size": batch, "eval_every": 10 ** 9, "schedule": "wsd", "checkpoint_every": 10 ** 9},
        "data": {"corpus": "stdlib", "tokenizer": "byte"},
        "run": runs_spec,
    }
    runs = ROOT / "benchmarks" / "runs" / "depth_transfer"
    t0 = time.time()
    if not args.analyze_only:
        run_sweep(expand_grid(spec), runs, workers=1, progress=True, threads=args.threads)
    df = export_results(runs, final_only=True)
    df["scaling"] = ["completep" if b == depths[0] else "none" for b in df["base_depth"]]
    base = df[df["depth"] == depths[0]]
    df = pd_concat([df, base.assign(scaling="none")])  # the base depth is the same run under both
    cols = ["scaling", "depth", "lr", "seed", "val_loss", "train_loss", "diverged", "tokens", "wall_s"]
    df = df[cols].sort_values(["scaling", "depth", "lr"])
    res = ROOT / "benchmarks" / "results"
    df.to_csv(res / "depth_transfer.csv", index=False)
    from fits.transfer import check_transfer

    summary = {"steps": args.steps, "batch_tokens": batch * seq, "width": 64, "depths": depths,
               "wall_s": time.time() - t0}
    for scaling in ("completep", "none"):
        r = check_transfer(df[df["scaling"] == scaling], width="depth", lr="lr", loss="val_loss")
        opt = r.optima.set_index("width")["lr_opt"].to_dict()  # "width" is the depth here
        steps = {d: abs(__import__("math").log2(v / opt[depths[0]])) for d, v in opt.items()}
        summary[scaling] = {"verdict": r.verdict, "optimal_lr": opt, "grid_steps_from_base": steps,
                            "within_one_step": bool(max(steps.values()) <= 1.0 + 1e-9),
                            "drift_exponent": r.drift, "drift_interval": list(r.drift_interval)}
        ax = r.plot()
        ax.set_title(f"depth transfer, {scaling}: final validation loss vs learning rate")
        ax.figure.savefig(res / f"depth_transfer_{scaling}.png", dpi=110, bbox_inches="tight")
    (res / "depth_transfer.json").write_text(json.dumps(summary, indent=2, default=float))
    print(json.dumps(summary, indent=2, default=float))


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    main()
