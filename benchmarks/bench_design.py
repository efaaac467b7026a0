"""Benchmark: optimal and sequential probe design against the default isoFLOP grid and random
designs, at equal probe cost.

Run from the repository root:  python benchmarks/bench_design.py [--draws 12]
1. Simulation: true laws drawn from the Besiroglu et al. bootstrap (Chinchilla-scale candidates,
   N 2e7-1e9, 4-500 tokens per parameter, target 1e23 FLOPs, probes 1e20) and from the reference
   CPU probe fit's bootstrap (probe candidates, target 1e14, probes 3e12), run noise 1% in log
   loss. Each design is trained (simulated), fitted with 100 bootstrap refits, and scored at the
   target: |error| of the predicted loss of the fit's own compute-optimal plan, and the 90%
   interval's half-width. Designs: the default isoFLOP ladder, random designs, the optimal design
   at the same cost and at 1/3 of it, the simulation-checked design (probe design's default: the
   proposal whose simulated fits miss least), and the sequential design (a third of the budget optimally,
   then 4 runs at a time chosen with the refit as prior).
2. Replay on real runs (../shared/data): the runs below 10% of each table's largest compute are
   the candidates (each its own run), and the design may spend 10% of their compute; the fit of the
   chosen runs predicts the held-out runs at the largest budgets. Against random and isoFLOP subsets
   of equal compute, over seeds.
Writes benchmarks/results/design.{csv,json,png}.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fits import fit_loss_surface, get_form, load_fit
from fits.design import design_runs, isoflop_baseline, run_cost
from fits.presets import load_preset
from probes.sweep import design_candidates

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
LAW = get_form("chinchilla")
SIGMA = 0.01
DESIGN = {"cost_power": 1.0}  # options of every design_runs call (--cost-power)
CHECK = 32  # simulated fits per proposal of the simulation-checked design (probe design's default)


def _rows(cand, design) -> list[int]:
    return [int(cand.index[(cand["N"] == r.N) & (cand["D"] == r.D)][0]) for r in design.runs.itertuples()]


def _random(cand, budget, rng) -> list[int]:
    idx = []
    for i in rng.permutation(len(cand)):
        if run_cost(cand.loc[idx + [int(i)]]) <= budget:
            idx.append(int(i))
    return idx


def _simulate(cand, idx, truth, rng, seed):
    sub = cand.loc[idx]
    loss = LAW(sub["N"].to_numpy(), sub["D"].to_numpy(), truth) * np.exp(rng.normal(0, SIGMA, len(sub)))
    return pd.DataFrame({"params": sub["N"].to_numpy(), "tokens": sub["D"].to_numpy(), "loss": loss,
                         "width": sub["group"].to_numpy()})


def _score(table, truth, target, seed):
    fit = fit_loss_surface(table[["params", "tokens", "loss"]], bootstrap=100, trust=False, calibrate=False, seed=seed)
    a = fit.allocation(target, level=0.9)
    true = float(LAW(a["params"][0], a["tokens"][0], truth))
    return fit, {"err": abs(a["loss"][0] / true - 1), "half_width": (a["loss_high"][0] - a["loss_low"][0]) / 2 / a["loss"][0],
                 "inside": bool(a["loss_low"][0] <= true <= a["loss_high"][0])}


def _sequential(prior, cand, target, budget, observe, seed):
    """A third of the budget on the one-shot design from ``prior``, then 4 runs at a time chosen with
    the refit of everything so far as the prior, until the budget is spent. ``observe(idx)`` returns
    the runs' table (params, tokens, loss)."""
    first = design_runs(prior, cand, target, budget=budget / 3, noise=SIGMA, **DESIGN)
    idx = _rows(cand, first)
    table = observe(idx)
    while run_cost(cand.loc[idx]) < budget * 0.98:
        existing = cand.loc[idx, ["group", "N", "D", "fpt"]]
        pool = cand.drop(index=idx)
        try:
            fit = fit_loss_surface(table[["params", "tokens", "loss"]], bootstrap=100, trust=False, calibrate=False,
                                   seed=seed)
            nxt = design_runs(fit, pool, target, k=4, noise=SIGMA, prior_scale=1.0, existing=existing, **DESIGN)
        except ValueError:  # too few runs to fit yet: the rest of the budget goes to the one-shot design
            nxt = design_runs(prior, pool, target, budget=budget - run_cost(cand.loc[idx]), noise=SIGMA,
                              existing=existing, **DESIGN)
        picked = [i for i in _rows(pool, nxt) if run_cost(cand.loc[idx + [i]]) <= budget]  # labels of cand
        if not picked:
            break
        idx += picked
        table = pd.concat([table, observe(picked)], ignore_index=True)
    return idx, table


def simulation(name, prior, cand, target, budget, draws, seed=0):
    rng = np.random.default_rng(seed)
    cand = cand.reset_index(drop=True)
    opt = _rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, **DESIGN))
    opt3 = _rows(cand, design_runs(prior, cand, target, budget=budget / 3, noise=SIGMA, **DESIGN))
    trusting = _rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, **{**DESIGN, "misfit": 0.0}))
    checked = _rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, simulate=CHECK, **DESIGN))
    grid = isoflop_baseline(cand, budget)
    boot = prior.bootstrap_params
    rows = []
    for r in range(draws):
        truth = dict(zip(LAW.param_names, boot[rng.integers(len(boot))]))
        observe = lambda idx: _simulate(cand, idx, truth, rng, r)
        for design, idx in (("default isoFLOP grid", grid), ("random", None), ("optimal", opt),
                            ("optimal at 1/3 cost", opt3), ("optimal, form trusted", trusting),
                            ("optimal, simulation-checked", checked),
                            ("sequential", "seq")):
            if idx == "seq":
                idx, table = _sequential(prior, cand, target, budget, observe, r)
            else:
                idx = _random(cand, budget, rng) if idx is None else idx
                table = observe(idx)
            try:
                _, s = _score(table, truth, target, r)
            except ValueError:
                continue
            rows.append({"setting": name, "design": design, "draw": r, "runs": len(idx),
                         "cost": run_cost(cand.loc[idx]), **s})
        print(f"{name}: draw {r + 1}/{draws}", flush=True)
    return rows


def replay(path, label, fracs=(0.05, 0.1, 0.2), seeds=20, design_seeds=3):
    """Real runs: candidates below 10% of the largest compute; the design may spend ``fracs`` of their
    compute; the fit of the chosen runs predicts the held-out runs at >= 1/3 of the largest compute.
    Random subsets over ``seeds``, the optimal design over ``design_seeds`` draws of the prior's
    refits, the sequential design once per fraction."""
    t = pd.read_csv(path)
    if "Model Size" in t.columns:
        t = t.sort_values("loss").iloc[:-5]
        t = pd.DataFrame({"N": t["Model Size"], "D": t["Training FLOP"] / (6 * t["Model Size"]), "loss": t["loss"]})
    else:
        t = t.rename(columns={"params": "N", "tokens": "D"})
    t = t.reset_index(drop=True)
    C = 6 * t["N"] * t["D"]
    held = t[C >= C.max() / 3]
    pool = t[C < C.max() / 10].reset_index(drop=True)
    cand = pool.assign(group=np.arange(len(pool)), fpt=6 * pool["N"])
    target = float((6 * held["N"] * held["D"]).median())
    prior = load_preset("besiroglu2024")
    observe = lambda idx: pool.loc[idx, ["N", "D", "loss"]].rename(columns={"N": "params", "D": "tokens"}).reset_index(
        drop=True)
    rows = []

    def score(idx, design, frac, seed):
        try:
            fit = fit_loss_surface(observe(idx), bootstrap=0)
        except ValueError:
            return
        err = np.abs(fit.predict(held["N"], held["D"]) / held["loss"] - 1)
        rows.append({"setting": f"replay {label}", "design": design, "frac": frac, "draw": seed, "runs": len(idx),
                     "cost": run_cost(cand.loc[idx]), "err": float(err.mean())})

    rng = np.random.default_rng(0)
    for frac in fracs:
        budget = frac * float((6 * pool["N"] * pool["D"]).sum())
        for s in range(design_seeds):
            score(_rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, seed=s, **DESIGN)),
                  "optimal", frac, s)
            score(_rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, seed=s,
                                          **{**DESIGN, "misfit": 0.0})), "optimal, form trusted", frac, s)
        score(_rows(cand, design_runs(prior, cand, target, budget=budget, noise=SIGMA, simulate=CHECK, **DESIGN)),
              "optimal, simulation-checked", frac, 0)
        score(isoflop_baseline(cand, budget), "default isoFLOP grid", frac, 0)
        score(_sequential(prior, cand, target, budget, observe, 0)[0], "sequential", frac, 0)
        for s in range(seeds):
            score(_random(cand, budget, rng), "random", frac, s)
        print(f"replay {label}: {frac:.0%} of the pool's compute", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=12)
    ap.add_argument("--cost-power", type=float, default=1.0,
                    help="greedy score = variance removed / cost^p (1: per FLOP; 0: cost only as a limit)")
    args = ap.parse_args()
    DESIGN["cost_power"] = args.cost_power
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    rows = []
    chin = pd.DataFrame([{"N": n, "D": n * tpp, "group": f"{n:.3g}", "fpt": 6 * n}
                         for n in np.geomspace(2e7, 1e9, 12) for tpp in np.geomspace(4, 500, 16)])
    rows += simulation("Besiroglu laws, target 1e23, probes 1e20", load_preset("besiroglu2024"), chin, 1e23, 1e20,
                       args.draws)
    probe_fit = load_fit(ROOT / "data" / "reference" / "probes_default_cpu_fit.json")
    rows += simulation("CPU probe-fit laws, target 1e14, probes 3e12", probe_fit, design_candidates(), 1e14, 3e12,
                       args.draws)
    for path, label in ((SHARED / "chinchilla_svg_extracted.csv", "Chinchilla"),
                        (SHARED / "farseer_train.csv", "Farseer")):
        if path.is_file():
            rows += replay(path, label)
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "design.csv", index=False)
    if "frac" not in df.columns:
        df["frac"] = np.nan
    summary = df.groupby(["setting", "frac", "design"], dropna=False).agg(
        err_mean=("err", "mean"), err_median=("err", "median"), half_width_mean=("half_width", "mean"),
        coverage=("inside", "mean"), cost=("cost", "mean"), runs=("runs", "mean"), n=("err", "size")).reset_index()
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = {"seconds": time.perf_counter() - t0, "draws": args.draws, "sigma": SIGMA,
           "summary": summary.to_dict(orient="records")}
    t1 = time.perf_counter()
    design_runs(load_preset("besiroglu2024"), chin, 1e23, budget=1e20, noise=SIGMA, **DESIGN)
    out["design_seconds_192_candidates"] = time.perf_counter() - t1
    (OUT / "design.json").write_text(json.dumps(out, indent=1, default=float))
    _plot(summary)


def _plot(summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(summary["setting"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), squeeze=False)
    for ax, s in zip(axes[0], settings):
        sub = summary[summary["setting"] == s]
        if sub["frac"].notna().any():  # replays: error against the share of the pool's compute spent
            for design, g in sub.groupby("design"):
                ax.plot(100 * g["frac"], 100 * g["err_mean"], "o-", label=design)
            ax.set_xlabel("% of the pool's compute spent")
            ax.set_ylabel("mean |error| on held-out runs (%)")
            ax.legend(fontsize="xx-small")
        else:
            x = np.arange(len(sub))
            ax.bar(x - 0.2, 100 * sub["err_mean"], 0.4, label="target |error| (mean)")
            ax.bar(x + 0.2, 100 * sub["half_width_mean"], 0.4, label="90% half-width (mean)")
            ax.set_xticks(x, sub["design"], rotation=30, ha="right", fontsize="x-small")
            ax.set_ylabel("% of the loss")
            ax.legend(fontsize="xx-small")
        ax.set_title(s, fontsize="x-small")
    fig.tight_layout()
    fig.savefig(OUT / "design.png", dpi=110)


if __name__ == "__main__":
    main()
