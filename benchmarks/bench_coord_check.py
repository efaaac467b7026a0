"""Benchmark: coordinate check of muP vs SP and three single-rule mutants (CPU, ~1 minute).

    python benchmarks/bench_coord_check.py

Writes benchmarks/results/coord_check.{csv,json,png}: mean |activation| per site after each of
5 AdamW steps at widths 64..1024, and the log-log slopes against width.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    import pandas as pd

    from fits._plot import pyplot
    from probes.coord_check import VARIANTS, coord_check, coord_slopes

    frames, summary = [], {}
    for v in VARIANTS:
        df = coord_check(variant=v)
        s = coord_slopes(df)
        frames.append(df)
        summary[v] = {"max_abs_slope": float(s["slope"].abs().max()), "median_abs_slope": float(s["slope"].abs().median())}
    data = pd.concat(frames)
    res = ROOT / "benchmarks" / "results"
    data.to_csv(res / "coord_check.csv", index=False)
    (res / "coord_check.json").write_text(json.dumps(summary, indent=2))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, v in zip(axes, ("mup", "sp")):
        m = data[(data["variant"] == v) & (data["step"] == 5)].groupby(["site", "width"])["l1"].mean().unstack(0)
        m.plot(ax=ax, marker="o", logx=True, logy=True)
        ax.set_title(f"{v}: mean |x| after 5 steps")
        ax.set_xlabel("width")
    fig.savefig(res / "coord_check.png", dpi=110, bbox_inches="tight")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
