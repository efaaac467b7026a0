"""Benchmark: coordinate checks, across width (muP vs SP and three single-rule mutants) and across
depth (CompleteP vs no depth scaling), on CPU (~2 minutes).

    python benchmarks/bench_coord_check.py

Width: mean |activation| per site after each of 5 AdamW steps at widths 64..1024, lr 3e-3, and
the log-log slopes against width. At lr 1e-2 the base width overshoots on this 5-step problem
(its attention logits jump 3x at step 5 while the wider models' do not), which alone made the
attention-logit slope 0.41; that lr is kept as a record (``mup_lr1e-2``). The remaining
attention-logit slope is a finite-width correction: the slope between neighbouring widths falls
towards 0 as width grows (``attention_logit_pairwise``), which a wrong exponent would not do.

Depth: the last layer's activations and its feature update |h_t - h_0| at depths 2..32, width
64, lr 1e-3: flat under CompleteP (residual branches x base_depth/depth), growing with depth
without it.

Writes benchmarks/results/coord_check.{csv,json,png} and coord_check_depth.{csv,png}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH_LR, DEPTH_LR = 3e-3, 1e-3


def main():
    import pandas as pd

    from probes.coord_check import VARIANTS, coord_check, coord_check_depth, coord_slopes

    frames, summary = [], {"width_lr": WIDTH_LR, "depth_lr": DEPTH_LR}
    for v in (*VARIANTS, "mup_lr1e-2"):
        df = coord_check(variant="mup", lr=1e-2) if v == "mup_lr1e-2" else coord_check(variant=v, lr=WIDTH_LR)
        df["variant"] = v
        s = coord_slopes(df)
        frames.append(df)
        summary[v] = {"max_abs_slope": float(s["slope"].abs().max()), "median_abs_slope": float(s["slope"].abs().median()),
                      "worst_site": s.loc[s["slope"].abs().idxmax(), "site"]}
    data = pd.concat(frames)
    att = data[(data["variant"] == "mup") & (data["site"] == "attention_logits") & (data["step"] == 5)]
    m = att.groupby("width")["l1"].mean()
    summary["attention_logit_pairwise"] = {f"{a}->{b}": float(np.log2(m[b] / m[a]) / np.log2(b / a))
                                           for a, b in zip(m.index[:-1], m.index[1:])}
    depth = pd.concat([coord_check_depth(scaling=sc, lr=DEPTH_LR) for sc in ("completep", "none")])
    for sc, g in depth.groupby("scaling"):
        s = coord_slopes(g, axis="depth")
        s = s[s["step"] >= 2]  # after one update: step 1 is the initial forward pass
        summary[f"depth_{sc}"] = {"max_abs_slope": float(s["slope"].abs().max()),
                                  "median_abs_slope": float(s["slope"].abs().median()),
                                  "residual_update_slope_step5": float(s[(s["site"] == "residual_update")
                                                                         & (s["step"] == 5)]["slope"].iloc[0])}
    res = ROOT / "benchmarks" / "results"
    data.to_csv(res / "coord_check.csv", index=False)
    depth.to_csv(res / "coord_check_depth.csv", index=False)
    (res / "coord_check.json").write_text(json.dumps(summary, indent=2))
    panels(data, "variant", ("mup", "sp"), "width", f"lr {WIDTH_LR:g}", res / "coord_check.png")
    panels(depth, "scaling", ("completep", "none"), "depth", f"lr {DEPTH_LR:g}, width 64", res / "coord_check_depth.png")
    print(json.dumps(summary, indent=2))


def panels(df, by: str, values, axis: str, what: str, path):
    """Mean |x| per site against ``axis`` after 5 steps, one panel per value of ``by``."""
    from fits._plot import pyplot

    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, v in zip(axes, values):
        m = df[(df[by] == v) & (df["step"] == 5)].groupby(["site", axis])["l1"].mean().unstack(0)
        m.plot(ax=ax, marker="o", logx=True, logy=True)
        ax.set_title(f"{v}: mean |x| after 5 steps ({what})")
        ax.set_xlabel(axis)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
