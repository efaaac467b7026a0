"""Benchmark: task accuracy of the largest ladder size, predicted from the smaller ones.

Run from the repository root with ../shared beside it:  python benchmarks/bench_downstream.py
The OLMo ladder (../shared/data/olmo_ladder_dev.csv: 190M, 370M, 760M and 1.3B at 0.5-10x
Chinchilla tokens) is fitted on its three smaller sizes with ``fits.fit_downstream`` (100 joint
bootstrap refits; method choice, verdicts and interval calibration from the rolling-origin backtest
inside those three sizes), then scored on the six 1.3B runs' final accuracy per task: the two-step
chain, the direct law and the chosen method, each with its 90% interval. The verdicts are made
before the 1.3B runs are looked at. Writes benchmarks/results/downstream.{csv,json}.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fits.downstream_fit import fit_downstream

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "olmo_ladder_dev.csv"
OUT = ROOT / "benchmarks" / "results"
D_COL = "throughput/total_tokens"
LEVEL = 0.9


def main() -> dict:
    d = pd.read_csv(DATA)
    train, held = d[d["params"] < 1e9], d[d["params"] > 1e9]
    t0 = time.perf_counter()
    down = fit_downstream(train, d=D_COL, bootstrap=100, seed=0, level=LEVEL)
    fit_s = time.perf_counter() - t0
    final = held.sort_values("_step").groupby("run").tail(1)
    N, D = final["params"].to_numpy(float), final[D_COL].to_numpy(float)
    rows = []
    for name, t in down.tasks.items():
        real = final[t.accuracy_column].to_numpy(float)
        for method in ("two_step", "direct"):
            p = t.accuracy(N, D, method)
            lo, hi = t.interval(N, D, LEVEL, method)
            for i, run in enumerate(final["run"]):
                rows.append({"task": name, "run": run, "method": method, "chosen": method == t.method,
                             "verdict": t.verdict, "predicted": float(p[i]), "low": float(lo[i]), "high": float(hi[i]),
                             "realised": float(real[i]), "error_pts": 100 * float(real[i] - p[i]),
                             "inside": bool(lo[i] <= real[i] <= hi[i])})
    table = pd.DataFrame(rows)
    per_task = []
    for (name, method), g in table.groupby(["task", "method"], sort=False):
        per_task.append({"task": name, "method": method, "chosen": bool(g["chosen"].iloc[0]),
                         "verdict": g["verdict"].iloc[0], "mae_pts": float(g["error_pts"].abs().mean()),
                         "bias_pts": float(g["error_pts"].mean()), "coverage": float(g["inside"].mean()),
                         "backtest_mae_pts": 100 * (down[name].backtest.get(method, {}).get("mae") or np.nan)})
    per_task = pd.DataFrame(per_task)
    chosen = per_task[per_task["chosen"]]
    pred = chosen["verdict"] == "predictable"
    rows_chosen = table[table["chosen"]]
    rows_pred = rows_chosen[rows_chosen["verdict"] == "predictable"]
    worst = chosen.sort_values("mae_pts", ascending=False).head(5)
    summary = {
        "fit_seconds": round(fit_s, 1), "tasks": len(down.tasks), "predictable_tasks": int(pred.sum()),
        "verdicts": chosen["verdict"].value_counts().to_dict(),
        "predictable": {"mae_pts": float(rows_pred["error_pts"].abs().mean()),
                        "coverage_90": float(rows_pred["inside"].mean()),
                        "task_mae_pts_max": float(chosen[pred]["mae_pts"].max())},
        "not_predictable": {"mae_pts": float(rows_chosen[rows_chosen["verdict"] != "predictable"]["error_pts"].abs().mean())},
        "by_method_all_tasks": {m: {"mae_pts": float(table[table["method"] == m]["error_pts"].abs().mean()),
                                    "coverage_90": float(table[table["method"] == m]["inside"].mean())}
                                for m in ("two_step", "direct")},
        "chosen_all_tasks": {"mae_pts": float(rows_chosen["error_pts"].abs().mean()),
                             "coverage_90": float(rows_chosen["inside"].mean())},
        "worst_five_chosen": [{"task": r.task, "mae_pts": round(r.mae_pts, 2), "verdict": r.verdict}
                              for r in worst.itertuples()],
        "calibration": next(iter(down.tasks.values())).calibration,
        "targets": {"mae_pts_predictable": 2.0, "coverage_predictable": 0.8},
    }
    summary["targets_met"] = {"mae": summary["predictable"]["mae_pts"] <= 2.0,
                              "coverage": summary["predictable"]["coverage_90"] >= 0.8}
    OUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT / "downstream.csv", index=False)
    doc = {"benchmark": "downstream", "data": "olmo_ladder_dev.csv: fit 190M-760M (18 runs), predict 1.3B (6 runs)",
           "command": "python benchmarks/bench_downstream.py", "level": LEVEL,
           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
           "summary": summary, "per_task": per_task.round(4).to_dict(orient="records"),
           "fit_table": down.to_frame().reset_index().round(4).to_dict(orient="records")}
    (OUT / "downstream.json").write_text(json.dumps(doc, indent=1, default=float))
    print(down.report())
    print(chosen.round(2).to_string(index=False))
    print(json.dumps(summary, indent=1, default=float))
    return doc


if __name__ == "__main__":
    main()
