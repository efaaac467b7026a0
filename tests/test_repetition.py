"""Repeated data and double descent: published constants, theory vs simulation, risk levels,
the data-constrained fit and the planner's --unique-tokens."""
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import (InputError, data_constrained, detect_double_descent, double_descent_risk, effective_data,
                  epoch_bumps, fit_loss_surface, ridge_risk, ridgeless_risk, theory_curve, capacity_from_bump)
from planner import make_plan
from planner.cli import main as plan_cli

MUENNIGHOFF = dict(E=np.exp(0.6254804), A=np.exp(6.255414), B=np.exp(7.3049974), alpha=0.3526596,
                   beta=0.3526596, R_D_star=15.387756, R_N_star=5.309743)


def test_published_effective_data_constants():
    U = 1e9
    assert effective_data(4 * U, U, 15.387756) / U == pytest.approx(3.73, abs=0.01)
    assert effective_data(40 * U, U, 15.387756) / U == pytest.approx(15.2, abs=0.1)
    assert effective_data(1e6 * U, U, 15.387756) / U == pytest.approx(16.4, abs=0.05)
    assert effective_data(U, U, 15.387756) == pytest.approx(U)


def test_ridgeless_closed_form_matches_simulation():
    rng = np.random.default_rng(0)
    n, snr, sigma = 200, 5.0, 1.0
    for gamma in (0.3, 0.7, 1.5, 3.0):
        p = int(gamma * n)
        risks = []
        for _ in range(30):
            beta = rng.normal(size=p)
            beta *= np.sqrt(snr) / np.linalg.norm(beta)
            X = rng.normal(size=(n, p))
            y = X @ beta + sigma * rng.normal(size=n)
            bhat = np.linalg.pinv(X) @ y  # min-norm least squares
            risks.append(np.sum((bhat - beta) ** 2))
        assert np.mean(risks) == pytest.approx(float(ridgeless_risk(gamma, snr)), rel=0.2), gamma


def test_optimal_ridge_removes_the_peak():
    assert ridge_risk(0.5, 1e-7) == pytest.approx(float(ridgeless_risk(0.5)), rel=1e-4)
    assert ridge_risk(2.0, 1e-7) == pytest.approx(float(ridgeless_risk(2.0)), rel=1e-4)
    curve = theory_curve(gammas=np.array([0.5, 0.9, 0.99, 1.01, 1.1, 2.0]), snrs=(5.0,))
    assert (curve["optimal_ridge"] <= curve["ridgeless"] + 1e-9).all()
    assert curve["optimal_ridge"].max() < 5.0 < curve["ridgeless"].max()
    with pytest.raises(InputError, match="lam"):
        ridge_risk(1.0, lam=-1)


def test_risk_levels_known_answers():
    assert double_descent_risk(1e9, 2e10, 2e10).level == "none"
    high = double_descent_risk(146e6, 59 * 100e6, 100e6)
    assert high.level == "high" and high.epochs == pytest.approx(59)
    assert high.value_kept < 0.5 and "unique data" in high.recommendation
    assert double_descent_risk(1e9, 4e10, 1e10).level == "low"  # 4 epochs, tiny model vs data
    mid = double_descent_risk(1e9, 8e10, 1e10)
    assert mid.level == "medium"
    with pytest.raises(InputError, match="unique_tokens: must be a finite positive"):
        double_descent_risk(1e9, 1e10, -1)


def test_data_constrained_fit_recovers_exponents():
    rows = []
    for n in np.logspace(7, 9, 6):
        for d in np.logspace(9, 11, 5):
            for u in (1e9, 1e10, 1e11):
                rows.append((n, d, u, float(data_constrained(n, d, u, **MUENNIGHOFF))))
    df = pd.DataFrame(rows, columns=["params", "tokens", "U", "loss"])
    fit = fit_loss_surface(df, form="data_constrained", unique_tokens="U", bootstrap=0)
    assert fit.params["alpha"] == pytest.approx(0.3527, rel=0.02)
    assert fit.params["beta"] == pytest.approx(0.3527, rel=0.02)
    assert fit.params["R_D_star"] == pytest.approx(15.387756)  # held at the published value
    assert fit.predict(1e8, 1e11, unique_tokens=1e9) > fit.predict(1e8, 1e11, unique_tokens=1e11)
    free = fit.optimal_allocation(1e21, level=None)
    scarce = fit.optimal_allocation(1e21, level=None, unique_tokens=1e10)
    assert scarce["loss"].iloc[0] > free["loss"].iloc[0]
    with pytest.raises(InputError, match="unique_tokens"):
        fit_loss_surface(df, form="data_constrained", bootstrap=0)


def test_planner_unique_tokens(tmp_path):
    rich = make_plan(budget=1e21, unique_tokens=1e12)
    assert rich.extra["repetition_risk"] == "none" and rich.extra["epochs"] == pytest.approx(1.0)
    base = make_plan(budget=1e21)
    assert rich.params == pytest.approx(base.params)
    scarce = make_plan(budget=1e21, unique_tokens=5e9)
    assert scarce.extra["epochs"] > 4 and scarce.extra["repetition_risk"] in ("medium", "high")
    assert scarce.tokens > scarce.extra["effective_tokens"]
    assert "data-constrained" in scarce.sources["params"]
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--unique-tokens", "5e9", "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = pd.read_csv(out).iloc[0]
    assert row["repetition_risk"] in ("medium", "high") and row["epochs"] > 4
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--unique-tokens", "-3"])
    assert res.exit_code == 2 and "unique_tokens" in res.output


def test_detect_model_wise_bump():
    Ns = np.logspace(4, 6, 9)
    rows = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for i, n in enumerate(Ns):
            bump = 0.5 * np.exp(-((np.log10(n) - 5.0) / 0.2) ** 2)
            rows.append((n, seed, 3 - 0.3 * i / 8 + bump + rng.normal(0, 0.01), 3 - 0.35 * i))
    df = pd.DataFrame(rows, columns=["params", "seed", "val_loss", "train_loss"])
    bumps = detect_double_descent(df)
    assert len(bumps) == 1 and bumps["params_peak"].iloc[0] == pytest.approx(1e5)
    assert bumps["train_loss_falling"].iloc[0]
    flat = df.assign(val_loss=3 - df["params"] / 1e7)
    assert detect_double_descent(flat).empty
    assert capacity_from_bump(1e5, 1e5, 3.6) == pytest.approx(3.6)


def test_epoch_wise_bump():
    steps = np.arange(40)
    v = 3 * np.exp(-steps / 10) + 1 + 0.3 * np.exp(-((steps - 20) / 2.0) ** 2)
    v += np.random.default_rng(0).normal(0, 0.002, len(v))
    found = epoch_bumps(steps, v)
    assert any(abs(b["step"] - 20) <= 1 for b in found)
    assert not epoch_bumps(steps, 3 * np.exp(-steps / 10) + 1)
