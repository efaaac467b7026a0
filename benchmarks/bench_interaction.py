"""Benchmark: the N x D interaction the Chinchilla form leaves in its residuals, on the public tables and
on the CPU probes, and whether it foretells how the CPU fit misses runs beyond its data.

Run from the repository root:  python benchmarks/bench_interaction.py
Each table is fitted with the Chinchilla form; fits.residual_interaction regresses the log residuals on
(log10 N)(log10 D) with both main effects. For the CPU probes (the reference ladder's table, pooled with
the end-to-end design runs under benchmarks/runs/design_e2e when present), the bend is then carried to the
realised validation runs (benchmarks/results/validation.csv, 1e13-3e13 FLOPs): gamma (n - mean)(d - mean)
against their realised residuals. On the public tables, held-out splits (fit below a tenth of the largest
compute, a third of the largest size or token count; score at or above a third or a half of it) compare the
form's mean |error| with the bend carried to the held-out runs, and with the beta_n form (the bend as a
fitted term). Writes benchmarks/results/interaction.json.
"""
from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fits import fit_loss_surface, residual_interaction

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"


def bend(table: pd.DataFrame) -> tuple[dict, object]:
    fit = fit_loss_surface(table, n="N", d="D", loss="loss", bootstrap=0)
    r = np.log(table["loss"] / fit.predict(table["N"], table["D"]))
    return {"rows": len(table), **residual_interaction(table["N"], table["D"], r),
            "residual_sd": float(r.std()),
            "nd_interaction_warned": any(w.startswith("nd_interaction") for w in fit.diagnostics)}, fit


def held_out(table: pd.DataFrame) -> list[dict]:
    """Mean |error| on held-out runs of the form alone and with the training fit's bend carried to them
    (whether or not the fit warns of it)."""
    C = 6 * table["N"] * table["D"]
    out = []
    for split, train, test in (("compute", C < C.max() / 10, C >= C.max() / 3),
                               ("size", table["N"] < table["N"].max() / 3, table["N"] >= table["N"].max() / 2),
                               ("tokens", table["D"] < table["D"].max() / 3, table["D"] >= table["D"].max() / 2)):
        fit = fit_loss_surface(table[train], n="N", d="D", loss="loss", bootstrap=0)
        bn = fit_loss_surface(table[train], n="N", d="D", loss="loss", form="beta_n", bootstrap=0)
        b, t = fit.options["nd_interaction"], table[test]
        pred = fit.predict(t["N"], t["D"])
        bent = fit.bend_at(t["N"], t["D"], only_warned=False)
        out.append({"split": split, "train": int(train.sum()), "held_out": int(test.sum()), "gamma": b["gamma"],
                    "se": b["se"], "warned": fit.bend_at(1.0, 1.0) is not None,
                    "mean_abs_error": float(np.abs(pred / t["loss"] - 1).mean()),
                    "mean_abs_error_bent": float(np.abs(pred * np.exp(bent) / t["loss"] - 1).mean()),
                    "mean_abs_error_beta_n": float(np.abs(bn.predict(t["N"], t["D"]) / t["loss"] - 1).mean()),
                    "beta_n_kappa": bn.params["kappa"], "beta_n_status": bn.status})
    return out


def cpu_table() -> pd.DataFrame:
    """The reference CPU ladder's final rows, with every end-to-end design run (this grid's rows only)."""
    frames = [pd.read_csv(ROOT / "data" / "reference" / "probes_default_cpu.csv")]
    for toml in sorted((ROOT / "benchmarks" / "runs" / "design_e2e").glob("**/*.toml")):
        csv = toml.with_suffix(".csv")
        if csv.is_file():
            keep = {(r["width"], t) for r in tomllib.loads(toml.read_text())["run"] for t in r["tokens"]}
            t = pd.read_csv(csv)
            frames.append(t[[(w, d) in keep for w, d in zip(t["width"], t["tokens"])]])
    t = pd.concat(frames, ignore_index=True)
    t = t[t["final"].astype(bool)] if "final" in t.columns else t
    t = t.drop_duplicates(["width", "tokens"])
    return pd.DataFrame({"N": t["params"], "D": t["tokens"], "loss": t["val_loss"]}).reset_index(drop=True)


def main():
    warnings.simplefilter("ignore")
    out = {}
    if (SHARED / "chinchilla_svg_extracted.csv").is_file():
        c = pd.read_csv(SHARED / "chinchilla_svg_extracted.csv").sort_values("loss").iloc[:-5]
        c = pd.DataFrame({"N": c["Model Size"], "D": c["Training FLOP"] / (6 * c["Model Size"]), "loss": c["loss"]})
        out["chinchilla"] = {**bend(c)[0], "held_out": held_out(c)}
    if (SHARED / "farseer_train.csv").is_file():
        f = pd.read_csv(SHARED / "farseer_train.csv")
        f = f.rename(columns={"params": "N", "tokens": "D"})
        out["farseer"] = {**bend(f)[0], "held_out": held_out(f)}
    cpu = cpu_table()
    out["cpu_probes"], fit = bend(cpu)
    bn = fit_loss_surface(cpu, n="N", d="D", loss="loss", form="beta_n", bootstrap=0)
    val = OUT / "validation.csv"
    if val.is_file():
        v = pd.read_csv(val)
        v = v[v["n_kind"] == "non_embedding"]
        foretold = fit.bend_at(v["N"], v["D"], only_warned=False)
        realised = np.log(v["realised"] / fit.predict(v["N"], v["D"]))
        out["cpu_probes"]["validation"] = {
            "runs": len(v), "realised_mean_residual": float(realised.mean()),
            "foretold_mean_residual": float(foretold.mean()),
            "mean_abs_miss": float(realised.abs().mean()),
            "mean_abs_miss_after_bend": float((realised - foretold).abs().mean()),
            "mean_abs_miss_beta_n": float(np.log(v["realised"] / bn.predict(v["N"], v["D"])).abs().mean()),
            "beta_n_kappa": bn.params["kappa"], "beta_n_status": bn.status}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "interaction.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
