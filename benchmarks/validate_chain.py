"""End-to-end validation of the chain on CPU: probes -> fit -> plan -> train the plan -> verify.

1. The default probe ladder (``probes/grids/default.toml``, ~8 min on 2 cores).
2. Fits of it with 1000 bootstrap refits (resampled by run), N counted both ways
   (total parameters at the probes' vocabulary, and non-embedding); and the same ladder with
   seeds 1 and 2 (~20 min more), whose fit measures the seed-to-seed noise its intervals carry.
3. Plans at 3x, 10x (and with ``--multiples 3 10 30``, 30x) the ladder's largest budget, each
   handed back to the probe runner (``plan --emit-grid``): the planned model at every multiple,
   the shapes nearest N/3 and 3N on the 10x isoFLOP, and the 3x and 10x plans with 3 seeds each
   (the seed noise).
4. Training those runs with the probe runner (resumable: re-running the script continues).
5. The verdict: realised loss against the 90% interval and the point prediction, whether the
   planned size beats its neighbours on the 10x isoFLOP by more than the seed noise.

Writes ``benchmarks/results/validation.csv`` (one row per realised run and N definition) and
``benchmarks/results/validation.json`` (the summary against the targets).

    python benchmarks/validate_chain.py --workers 2          # everything, resumable
    python benchmarks/validate_chain.py --stage report       # re-score finished runs only
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from fits import fit_loss_surface, load_fit, verify
from scaling_core.io import atomic_write_text, to_jsonable
from planner import make_plan
from planner.emit import plan_grid_runs, plan_grid_toml
from probes.sweep import export_results, load_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_KINDS = {"total": "params_total", "non_embedding": "params"}
TARGETS = {"coverage": 1.0, "interval_half_width_10x": 0.05, "point_error": 0.02}


def ladder(out: Path, workers: int) -> pd.DataFrame:
    run_sweep(load_grid("default"), out / "ladder", workers=workers, threads=1 if workers > 1 else None)
    table = export_results(out / "ladder", out / "ladder.csv", final_only=True)
    return table


def ladder_seeds(out: Path, workers: int) -> None:
    """The same ladder with seeds 1 and 2: the seed-to-seed noise of every cell, which a
    one-seed ladder cannot show and its intervals then lack."""
    import tomllib

    spec = tomllib.loads((ROOT / "probes" / "grids" / "default.toml").read_text())
    spec["grid"]["seed"] = [1, 2]
    from probes.sweep import expand_grid

    run_sweep(expand_grid(spec), out / "ladder_seeds", workers=workers, threads=1 if workers > 1 else None)
    export_results(out / "ladder_seeds", out / "ladder_seeds.csv", final_only=True)


def _fit_tables(out: Path) -> dict:
    """{fit name: (table, N column)}: each N definition on the one-seed ladder, and the non-
    embedding fit of the three-seed ladder when it has been run."""
    tables = {kind: (pd.read_csv(out / "ladder.csv"), col, "chinchilla") for kind, col in N_KINDS.items()}
    tables["non_embedding_auto"] = (pd.read_csv(out / "ladder.csv"), "params", "auto")  # form chosen by backtest
    if (out / "ladder_seeds.csv").exists():
        both = pd.concat([pd.read_csv(out / "ladder.csv"), pd.read_csv(out / "ladder_seeds.csv")], ignore_index=True)
        tables["non_embedding_3seeds"] = (both, "params", "chinchilla")
    return tables


def fits(out: Path) -> None:
    for kind, (table, col, form) in _fit_tables(out).items():
        t0 = time.perf_counter()
        fit = fit_loss_surface(table, n=col, d="tokens", loss="val_loss", bootstrap=1000, seed=0, form=form)
        fit.to_json(out / f"fit_{kind}.json")
        print(f"fit_{kind}: {time.perf_counter() - t0:.1f} s\n{fit.report(0.9)}\n")


def targets(out: Path, multiples, n_kind: str) -> list[dict]:
    """Plans at each multiple from the main fit; their probe grids; a manifest of roles."""
    fit = load_fit(out / f"fit_{n_kind}.json")
    c_max = pd.read_csv(out / "ladder.csv")["flops"].max()
    manifest, grids = [], out / "targets"
    grids.mkdir(parents=True, exist_ok=True)
    for k in multiples:
        plan = make_plan(fit, k * c_max)
        isoflop, seeds = k == 10, (0, 1, 2) if k == 3 else (0,)
        atomic_write_text(grids / f"x{k:g}.toml", plan_grid_toml(plan, fit, f"fit_{n_kind}.json", isoflop, seeds))
        grid_runs = [(r, s) for r in plan_grid_runs(plan, fit, isoflop) for s in seeds]
        if k == 10:  # the seed noise where it decides: the planned model at 10x, two more seeds
            atomic_write_text(grids / "x10_seeds.toml", plan_grid_toml(plan, fit, f"fit_{n_kind}.json", False, (1, 2)))
            grid_runs += [(r, s) for r in plan_grid_runs(plan, fit, False) for s in (1, 2)]
        for r, s in grid_runs:
            manifest.append({"multiple": k, "role": r["role"], "seed": s, "width": r["width"],
                             "tokens": r["tokens"], "planned_params": plan.params, "planned_tokens": plan.tokens,
                             "plan_loss": plan.loss, "plan_low": plan.loss_low, "plan_high": plan.loss_high})
    atomic_write_text(grids / "manifest.json", json.dumps(to_jsonable(manifest), indent=1))
    return manifest


def train(out: Path, workers: int) -> None:
    configs = [c for g in sorted((out / "targets").glob("x*.toml")) for c in load_grid(g)]
    # biggest runs first so the pool stays busy to the end
    configs.sort(key=lambda c: -c.model.flops_per_token * c.train.tokens[-1])
    run_sweep(configs, out / "target_runs", workers=workers, threads=1 if workers > 1 else None)


def report(out: Path) -> dict:
    manifest = pd.DataFrame(json.loads((out / "targets" / "manifest.json").read_text()))
    realised = export_results(out / "target_runs", final_only=True)
    if realised.empty:
        raise SystemExit("no finished target runs yet: run the train stage")
    rows = realised.merge(manifest, on=["width", "tokens", "seed"], how="inner")
    tables = []
    for kind, (_, col, _form) in _fit_tables(out).items():
        v = verify(load_fit(out / f"fit_{kind}.json"), rows, n=col, d="tokens", loss="val_loss")
        v.insert(0, "n_kind", kind)
        for c in ("multiple", "role", "seed", "width", "tokens", "wall_s"):
            v[c] = rows[c].to_numpy()
        tables.append(v)
    table = pd.concat(tables, ignore_index=True)
    table["half_width"] = (table["high"] - table["low"]) / 2 / table["predicted"]
    atomic_write_text(RESULTS / "validation.csv", table.to_csv(index=False))
    summary = {"ladder_rows": int(len(pd.read_csv(out / "ladder.csv"))), "targets": TARGETS, "by_n_kind": {}}
    seed_noise = {}
    for m in (3, 10):
        runs = rows[(rows["multiple"] == m) & (rows["role"] == "planned")]["val_loss"]
        if len(runs) >= 2:
            seed_noise[f"{m}x"] = {"runs": int(len(runs)), "sd": float(runs.std(ddof=1)),
                                   "values": [float(x) for x in runs]}
    seed_sd = (seed_noise.get("10x") or seed_noise.get("3x") or {"sd": float("nan")})["sd"]
    iso = rows[rows["multiple"] == 10].groupby("role")["val_loss"].mean().to_dict()  # seeds averaged
    for kind in table["n_kind"].unique():
        t = table[(table["n_kind"] == kind)]
        summary["by_n_kind"][kind] = {
            "runs": int(len(t)), "inside_90": int(t["inside"].sum()),
            "mean_abs_error": float(t["rel_error"].abs().mean()), "max_abs_error": float(t["rel_error"].abs().max()),
            "half_width_by_multiple": {f"{m:g}x": float(g["half_width"].mean()) for m, g in t.groupby("multiple")},
        }
    summary["seed_noise"] = seed_noise
    if {"planned", "N/3", "3N"} <= set(iso):
        margin = {r: iso[r] - iso["planned"] for r in ("N/3", "3N")}
        summary["isoflop_10x"] = {"losses": iso, "neighbour_minus_planned": margin,
                                  "planned_no_worse_than_neighbours": bool(all(m > -seed_sd for m in margin.values()))}
    atomic_write_text(RESULTS / "validation.json", json.dumps(to_jsonable(summary), indent=1))
    show = table[["n_kind", "multiple", "role", "seed", "width", "N", "D", "predicted", "low", "high",
                  "realised", "inside", "rel_error", "z"]]
    print(show.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(json.dumps(to_jsonable(summary), indent=1))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "validation"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--multiples", type=float, nargs="+", default=[3, 10])
    ap.add_argument("--n-kind", default="non_embedding", choices=sorted(N_KINDS),
                    help="which N definition's fit makes the plans")
    ap.add_argument("--stage", default="all",
                    choices=["all", "ladder", "ladder-seeds", "fit", "plan", "train", "report"])
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["ladder", "ladder-seeds", "fit", "plan", "train", "report"] if a.stage == "all" else [a.stage]
    if "ladder" in stages:
        ladder(out, a.workers)
    if "ladder-seeds" in stages:
        ladder_seeds(out, a.workers)
    if "fit" in stages:
        fits(out)
    if "plan" in stages:
        for m in targets(out, [m if not float(m).is_integer() else int(m) for m in a.multiples], a.n_kind):
            print(m)
    if "train" in stages:
        train(out, a.workers)
    if "report" in stages:
        report(out)


if __name__ == "__main__":
    main()
