"""Build data/presets/*.json: published loss-surface fits with their citations.

Point estimates are the published numbers (../shared/reference/published-laws.md). The
``besiroglu2024`` preset also carries uncertainty: 1000 bootstrap refits and conformal
calibration scores from this project's replication of Besiroglu et al.'s procedure on the
240 Chinchilla points (../shared/data/chinchilla_svg_extracted.csv), so plans made from it
come with a calibrated prediction interval. Run from the repository root:

    python scripts/build_presets.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from fits import fit_loss_surface
from scaling_core.io import atomic_write_text, to_jsonable

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "chinchilla_svg_extracted.csv"
OUT = ROOT / "data" / "presets"

CHINCHILLA_RANGE = dict(N_min=5.73e7, N_max=1.62e10, D_min=8.19e8, D_max=3.18e11,
                        C_min=1.4e18, C_max=1.3e22, loss_min=2.0, loss_max=3.4, n_budgets=16)


MASSIVETEXT = "nats per token (MassiveText, SentencePiece 32k)"


def base(form, params, data_range, n_points, citation, title, notes, url, n_kind="total", loss_unit=MASSIVETEXT):
    return {
        "schema": "scaling-planner/loss-surface-fit", "schema_version": 1,
        "form": form, "params": params, "objective": 0.0, "success": True,
        "message": "published point estimates", "n_points": n_points, "data_range": data_range,
        "residual_scale": 0.0, "residuals": [], "bootstrap_params": None, "conformal_scores": None,
        "fixed": [], "diagnostics": [], "options": {"seed": 0, "n_definition": {"kind": n_kind},
                                                 "loss_unit": loss_unit},
        "provenance": {"source": citation},
        "preset": {"title": title, "citation": citation, "url": url, "notes": notes},
    }


def besiroglu2024():
    d = base("chinchilla", dict(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
             CHINCHILLA_RANGE, 240, "Besiroglu et al. 2024, 'Chinchilla Scaling: A replication attempt', "
             "arXiv:2404.10102, Table 1", "Chinchilla replication (default)",
             "Loss in nats/token on MassiveText; N counts all parameters. Published point estimates; "
             "intervals from this project's replication (1000 bootstrap refits of the 240 points, "
             "seed 0) with prediction intervals calibrated on extrapolation backtests.",
             "https://arxiv.org/abs/2404.10102")
    df = pd.read_csv(SHARED_CSV).sort_values("loss").iloc[:-5]
    fit = fit_loss_surface(df, n="Model Size", d=None, flops="Training FLOP", loss="loss",
                           bootstrap=1000, seed=0)
    rep = fit.to_dict()
    for key in ("residual_scale", "residuals", "bootstrap_params", "conformal_scores", "data_range"):
        d[key] = rep[key]
    d["options"] = {**rep["options"], "columns": None, "n_definition": {"kind": "total"}, "loss_unit": MASSIVETEXT}
    d["provenance"]["replication"] = {"params": rep["params"], "objective": rep["objective"],
                                      "code_version": rep["provenance"]["code_version"]}
    return d


def hoffmann2022():
    return base("chinchilla", dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28), CHINCHILLA_RANGE,
                400, "Hoffmann et al. 2022, 'Training Compute-Optimal Large Language Models', "
                "arXiv:2203.15556, eq. 10 (rounded)", "Chinchilla, as printed",
                "The paper's printed (rounded) values; Besiroglu et al. 2024 show they do not fit the "
                "paper's own data well. No uncertainty.", "https://arxiv.org/abs/2203.15556")


def hoffmann2022_unrounded():
    return base("chinchilla", dict(E=1.6934, A=math.exp(6.0073404), B=math.exp(6.0179186),
                                   alpha=0.33917084, beta=0.2849083), CHINCHILLA_RANGE, 400,
                "Hoffmann et al. 2022, arXiv:2203.15556 (unrounded values from its TeX source)",
                "Chinchilla, unrounded", "No uncertainty.", "https://arxiv.org/abs/2203.15556")


def kaplan2020():
    rng = dict(N_min=768.0, N_max=1.5e9, D_min=2.2e7, D_max=2.3e10, C_min=1e11, C_max=2e20,
               loss_min=2.0, loss_max=6.0, n_budgets=0)
    return base("kaplan", dict(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103), rng, 0,
                "Kaplan et al. 2020, 'Scaling Laws for Neural Language Models', arXiv:2001.08361, eq. 1.5 "
                "with the joint-fit constants of Table 2",
                "Kaplan et al. 2020", "N counts non-embedding parameters; loss in nats/token on WebText2 "
                "(not comparable to the Chinchilla presets). The joint law L(N, D) (alpha_N 0.076, "
                "alpha_D 0.103, N_c 6.4e13, D_c 1.8e13), not the single-variable fits; the plan is the "
                "minimum of that law under C = 6ND, which is not Kaplan's compute-efficient frontier "
                "(their Sec. 6, N ~ C^0.73). Data range approximate. No uncertainty.",
                "https://arxiv.org/abs/2001.08361", n_kind="non_embedding",
                loss_unit="nats per token (WebText2, GPT-2 BPE)")


def muennighoff2023():
    rng = dict(N_min=1e7, N_max=9e9, D_min=1e8, D_max=9e11, C_min=1e17, C_max=1e22,
               loss_min=2.0, loss_max=6.0, n_budgets=0)
    return base("data_constrained",
                dict(E=math.exp(0.6254804), A=math.exp(6.255414), B=math.exp(7.3049974),
                     alpha=0.3526596, beta=0.3526596, R_D_star=15.387756, R_N_star=5.309743), rng, 0,
                "Muennighoff et al. 2023, 'Scaling Data-Constrained Language Models', arXiv:2305.16264, "
                "Appendix A", "Data-constrained (repeated data)",
                "Chinchilla form in effective data D' and parameters N' given unique tokens U; loss in "
                "nats/token on C4. Data range approximate. No uncertainty.",
                "https://arxiv.org/abs/2305.16264", loss_unit="nats per token (C4, GPT-2 BPE)")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in (("besiroglu2024", besiroglu2024), ("hoffmann2022", hoffmann2022),
                        ("hoffmann2022_unrounded", hoffmann2022_unrounded),
                        ("kaplan2020", kaplan2020), ("muennighoff2023", muennighoff2023)):
        d = build()
        d["preset"]["name"] = name
        atomic_write_text(OUT / f"{name}.json", json.dumps(to_jsonable(d), indent=1))
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
