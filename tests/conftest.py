from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHINCHILLA_CSV = SHARED / "data" / "chinchilla_svg_extracted.csv"

BESIROGLU = dict(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)


@pytest.fixture(scope="session")
def chinchilla_points() -> pd.DataFrame:
    """The 240 points of Besiroglu et al. 2024 (the 5 highest losses dropped), D = C / 6N."""
    if not CHINCHILLA_CSV.is_file():
        pytest.skip(f"shared data not present at {CHINCHILLA_CSV}")
    df = pd.read_csv(CHINCHILLA_CSV).sort_values("loss").iloc[:-5]
    return pd.DataFrame({"params": df["Model Size"].to_numpy(),
                         "tokens": (df["Training FLOP"] / (6 * df["Model Size"])).to_numpy(),
                         "flops": df["Training FLOP"].to_numpy(),
                         "loss": df["loss"].to_numpy()})


def isoflop_sweep(params: dict, budgets=(1e17, 3e17, 1e18, 3e18, 1e19), sizes=7, noise=0.0,
                  seed=0) -> pd.DataFrame:
    """Synthetic isoFLOP sweep from a Chinchilla surface, multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt = (c / 6) ** 0.5
        for n in n_opt * np.logspace(-1.0, 1.0, sizes):
            d = c / (6 * n)
            loss = params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]
            rows.append((n, d, c, loss * np.exp(rng.normal(0, noise)), f"{c:.0e}"))
    return pd.DataFrame(rows, columns=["params", "tokens", "flops", "loss", "budget"])


@pytest.fixture
def sweep():
    return isoflop_sweep(BESIROGLU, noise=0.004)
