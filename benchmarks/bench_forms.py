"""Benchmark: loss-surface forms and ``form="auto"`` on held-out extrapolations of real runs.

Run from the repository root with ../shared beside it:  python benchmarks/bench_forms.py
For each split (the Farseer runs held out by model size, token count or compute; the Chinchilla
points held out by compute or size; the CPU probe ladder held out by its largest budget) every
form and the auto choice are fitted on the rest with 200 bootstrap refits, and scored on the
held-out runs: mean and worst |relative error|, 90% prediction-interval coverage and median width.
Also times ``fit --form auto`` on the 404 Farseer runs with 200 refits. Writes
benchmarks/results/forms.{csv,json,png}.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fits import fit_loss_surface

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
FORMS = ("auto", "chinchilla", "beta_n", "interaction", "kaplan", "farseer")


def splits():
    f = pd.read_csv(SHARED / "farseer_train.csv")
    c = pd.read_csv(SHARED / "chinchilla_svg_extracted.csv").sort_values("loss").iloc[:-5]
    c = pd.DataFrame({"params": c["Model Size"], "tokens": c["Training FLOP"] / (6 * c["Model Size"]),
                      "loss": c["loss"]})
    p = pd.read_csv(ROOT / "data" / "reference" / "probes_default_cpu.csv")
    p = pd.DataFrame({"params": p["params"], "tokens": p["tokens"], "loss": p["val_loss"], "flops": p["flops"]})
    C = lambda t: 6 * t["params"] * t["tokens"]
    return [
        ("farseer", "N >= 2.5e9", f, f["params"] >= 2.5e9),
        ("farseer", "N >= 1e9", f, f["params"] >= 1e9),
        ("farseer", "D >= 1e11", f, f["tokens"] >= 1e11),
        ("farseer", "C >= 1e21", f, C(f) >= 1e21),
        ("chinchilla", "C >= 1e21", c, C(c) >= 1e21),
        ("chinchilla", "N >= 2e9", c, c["params"] >= 2e9),
        ("probes (CPU ladder)", "largest budget", p, p["flops"] >= p["flops"].max() * 0.9),
    ]


def main():
    import warnings

    warnings.simplefilter("ignore")
    rows = []
    for data, split, table, held in splits():
        train, test = table[~held], table[held]
        for form in FORMS:
            t0 = time.perf_counter()
            try:
                fit = fit_loss_surface(train, form=form, bootstrap=200)
            except ValueError as exc:
                rows.append({"data": data, "split": split, "form": form, "note": str(exc)[:120]})
                continue
            dt = time.perf_counter() - t0
            obs = test["loss"].to_numpy()
            pred, lo, hi = fit.interval(test["params"].to_numpy(), test["tokens"].to_numpy(), level=0.9)
            err = np.abs(pred / obs - 1)
            rows.append({"data": data, "split": split, "form": form, "chosen": fit.form, "n_train": len(train),
                         "n_test": len(test), "mean_abs_rel_error": float(err.mean()),
                         "max_abs_rel_error": float(err.max()),
                         "coverage_90": float(np.mean((obs >= lo) & (obs <= hi))),
                         "median_width_90": float(np.median((hi - lo) / pred)), "status": fit.status,
                         "seconds": dt, "note": ""})
            r = rows[-1]
            print(f"{data:20s} {split:15s} {form:11s} -> {r['chosen']:11s} mre {r['mean_abs_rel_error']:.3%} "
                  f"max {r['max_abs_rel_error']:.3%} cover {r['coverage_90']:.0%} width {r['median_width_90']:.2%} "
                  f"{dt:.1f}s", flush=True)
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "forms.csv", index=False)

    full = pd.read_csv(SHARED / "farseer_train.csv")
    t0 = time.perf_counter()
    fit_loss_surface(full, form="auto", bootstrap=200)
    t_auto = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_loss_surface(full, form="farseer", bootstrap=0)
    t_one = time.perf_counter() - t0
    auto = df[df["form"] == "auto"].dropna(subset=["mean_abs_rel_error"])
    ch = df[df["form"] == "chinchilla"].set_index(["data", "split"])["mean_abs_rel_error"]
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "auto_fit_404_points_200_refits_s": t_auto, "farseer_single_fit_404_points_s": t_one,
        "auto_mean_abs_rel_error": float(auto["mean_abs_rel_error"].mean()),
        "auto_coverage_90": float(np.average(auto["coverage_90"], weights=auto["n_test"])),
        "auto_vs_chinchilla": {f"{d} {s}": {"auto": float(e), "chinchilla": float(ch[(d, s)]),
                                            "chosen": c}
                               for d, s, e, c in zip(auto["data"], auto["split"], auto["mean_abs_rel_error"],
                                                     auto["chosen"])},
    }
    (OUT / "forms.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    _plot(df)


def _plot(df: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df.dropna(subset=["mean_abs_rel_error"])
    labels = list(dict.fromkeys(d["data"] + "\n" + d["split"]))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(FORMS)
    for k, form in enumerate(FORMS):
        sub = d[d["form"] == form].assign(label=lambda t: t["data"] + "\n" + t["split"]).set_index("label")
        y = [100 * sub["mean_abs_rel_error"].get(lbl, np.nan) for lbl in labels]
        ax.bar(np.arange(len(labels)) + (k - len(FORMS) / 2 + 0.5) * width, y, width, label=form)
    ax.set_xticks(np.arange(len(labels)), labels, fontsize="x-small")
    ax.set_ylabel("held-out mean |relative error| (%)")
    ax.set_yscale("log")
    ax.set_title("extrapolation error by form (fitted on the rest of each table)", fontsize="small")
    ax.legend(fontsize="small", ncol=len(FORMS))
    fig.savefig(OUT / "forms.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
