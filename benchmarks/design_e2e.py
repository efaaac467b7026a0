"""End to end on CPU: design -> probe run -> fit -> plan, the optimal design against the default
isoFLOP ladder at the same probe cost.

    python benchmarks/design_e2e.py [--target 3e13] [--probe-budget 4e12 8e12] [--workers 2] [--form chinchilla]

For each probe budget, the design is made for the loss form both arms are then fitted with (``--form``; the
prior is the reference ladder's runs fitted in that form). Both grids are trained with the probe runner (resumable, under benchmarks/runs/design_e2e/), fitted
with 200 bootstrap refits, and planned at the target: the 90% interval of the planned loss and
of N_opt. Each fit also predicts the runs the chain validation trained at 3x and 10x the default
ladder's largest budget (benchmarks/results/validation.csv, same probe configuration): |error| and
whether each realised loss lies inside its 90% interval. Writes benchmarks/results/design_e2e.json
(one entry per probe budget).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "design_e2e"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=3e13)
    ap.add_argument("--probe-budget", type=float, nargs="+", default=[4e12, 8e12])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--form", default="chinchilla")
    args = ap.parse_args()
    import pandas as pd

    from fits import fit_loss_surface, verify
    from fits.design import run_cost
    from planner import make_plan
    from probes.cli import main as probe
    from probes.sweep import design_grid, export_results, load_grid, run_sweep

    val = ROOT / "benchmarks" / "results" / "validation.csv"
    realised = None
    if val.is_file():  # one row per realised run, N non-embedding as the fits count it
        v = pd.read_csv(val)
        v = v[v["n_kind"] == "non_embedding"]
        realised = pd.DataFrame({"params": v["N"], "tokens": v["D"], "val_loss": v["realised"]})

    def cost(configs):
        return run_cost(pd.DataFrame([{"group": c.model.width, "D": float(t), "fpt": c.model.flops_per_token}
                                      for c in configs for t in c.train.tokens]))

    settings = []
    for budget in args.probe_budget:
        runs = RUNS / f"{budget:.0e}"
        runs.mkdir(parents=True, exist_ok=True)
        tag = "" if args.form == "chinchilla" else f"_{args.form}"  # grids per form; the run folders are shared
        r = CliRunner().invoke(probe, ["design", "--target", f"{args.target}", "--probe-budget", f"{budget}",
                                       "--form", args.form, "--out", str(runs / f"optimal{tag}.toml")])
        assert r.exit_code == 0, r.output
        optimal = load_grid(runs / f"optimal{tag}.toml")
        (runs / f"ladder{tag}.toml").write_text(design_grid(cost(optimal)) + "\n")
        ladder = load_grid(runs / f"ladder{tag}.toml")
        out = {"form": args.form, "target": args.target, "probe_budget": budget}
        for name, configs in (("optimal", optimal), ("ladder", ladder)):
            run_sweep(configs, runs / name, workers=args.workers, threads=1 if args.workers > 1 else None)
            table = export_results(runs / name, runs / f"{name}{tag}.csv", final_only=True)
            table = table[table["run_id"].isin({c.key() for c in configs})]  # this grid's runs only
            fit = fit_loss_surface(table, n="params", d="tokens", loss="val_loss", form=args.form, bootstrap=200,
                                   seed=0)
            plan = make_plan(fit, args.target)
            out[name] = {"runs": len(configs), "rows": len(table), "cost_flops": cost(configs),
                         "status": fit.status, "loss": plan.loss, "loss_low": plan.loss_low,
                         "loss_high": plan.loss_high, "half_width": (plan.loss_high - plan.loss_low) / 2 / plan.loss,
                         "params": plan.params, "params_low": plan.intervals.get("params_low"),
                         "params_high": plan.intervals.get("params_high"),
                         "widths": sorted({c.model.width for c in configs}), "warnings": fit.warnings,
                         "loss_bent": plan.extra.get("loss_bent")}
            if realised is not None:
                ver = verify(fit, realised, loss="val_loss")
                half = (ver["high"] - ver["low"]) / 2 / ver["predicted"]
                out[name]["realised"] = {"runs": len(ver), "mean_abs_error": float(ver["rel_error"].abs().mean()),
                                         "inside_90": int(ver["inside"].sum()),
                                         "mean_half_width": float(half.mean())}
                bent = fit.bend_at(realised["params"], realised["tokens"])
                if bent is not None:  # the fit's residual N x D bend, carried to the realised runs
                    miss = fit.predict(realised["params"], realised["tokens"]) * np.exp(bent) / realised["val_loss"]
                    out[name]["realised"]["mean_abs_error_bent"] = float(np.abs(miss - 1).mean())
            print(budget, name, json.dumps(out[name], indent=1, default=float), flush=True)
        out["half_width_ratio_ladder_over_optimal"] = out["ladder"]["half_width"] / out["optimal"]["half_width"]
        settings.append(out)
    from scaling_core.io import to_jsonable

    path = ROOT / "benchmarks" / "results" / "design_e2e.json"
    done = {(o["form"], o["probe_budget"]) for o in settings}
    kept = [o for o in (json.loads(path.read_text()) if path.is_file() else [])
            if (o.get("form", "chinchilla"), o["probe_budget"]) not in done]
    rows = sorted(kept + to_jsonable(settings), key=lambda o: (o["form"], -o["probe_budget"]))
    path.write_text(json.dumps(rows, indent=1))
    print(json.dumps([{k: o[k] for k in ("probe_budget", "half_width_ratio_ladder_over_optimal")} for o in settings]))


if __name__ == "__main__":
    main()
