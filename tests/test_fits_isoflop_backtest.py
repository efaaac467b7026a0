"""IsoFLOP Approaches 1/2, backtests, and the `fit` command."""
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import InputError, backtest, budget_groups, isoflop_analysis, load_fit
from fits.cli import main as fit_cli

from conftest import BESIROGLU, isoflop_sweep

A_TRUE = BESIROGLU["beta"] / (BESIROGLU["alpha"] + BESIROGLU["beta"])  # N_opt ~ C^a


def test_approach2_recovers_allocation_exponent():
    r = isoflop_analysis(isoflop_sweep(BESIROGLU, sizes=11), bootstrap=0)
    assert r.exponents.loc[2, "a"] == pytest.approx(A_TRUE, abs=0.01)
    assert r.exponents.loc[2, "a"] + r.exponents.loc[2, "b"] == pytest.approx(1.0, abs=1e-9)


def test_isoflop_intervals_contain_truth_with_noise():
    r = isoflop_analysis(isoflop_sweep(BESIROGLU, sizes=11, noise=0.003, seed=4), bootstrap=200, level=0.95)
    e = r.exponents.loc[2]
    assert e["a_low"] <= A_TRUE <= e["a_high"]
    assert {"params_low", "params_high"} <= set(r.budgets.columns)
    pred = r.predict(1e21)
    assert pred["params"].iloc[0] * pred["tokens"].iloc[0] * 6 == pytest.approx(1e21, rel=0.2)


def test_isoflop_on_chinchilla_matches_hoffmann_approach2(chinchilla_points):
    r = isoflop_analysis(chinchilla_points, bootstrap=100)
    # Hoffmann et al. Table 2, Approach 2: a = 0.49 (0.462, 0.534)
    assert 0.44 <= r.exponents.loc[2, "a"] <= 0.56


def test_isoflop_needs_two_convex_budgets():
    df = isoflop_sweep(BESIROGLU, budgets=(1e18,))
    with pytest.raises(InputError, match="Approach 2 needs at least two budgets"):
        isoflop_analysis(df)


def test_budget_groups_exact_and_binned():
    assert budget_groups(np.array([1e18] * 3 + [1e19] * 3)).tolist() == [0, 0, 0, 1, 1, 1]
    continuous = np.logspace(18, 20, 50)
    labels = budget_groups(continuous, width_decades=0.25)
    assert labels.max() + 1 == 9 and np.all(np.diff(labels) >= 0)


def test_backtest_reports_errors_and_coverage():
    df = isoflop_sweep(BESIROGLU, budgets=np.logspace(17, 20, 7), noise=0.004, seed=2)
    r = backtest(df, holdout=2, bootstrap=100, level=0.9)
    s = r.summary
    assert s["n_test"] == 14 and s["n_holdout_budgets"] == 2
    assert s["mean_abs_rel_error"] < 0.02
    assert abs(s["n_opt_rel_error"]) < 0.5
    assert 0.0 <= s["coverage"] <= 1.0
    assert {"abs_rel_error", "inside", "low", "high"} <= set(r.points.columns)
    assert "coverage" in r.report()
    with pytest.raises(InputError, match="holdout"):
        backtest(df, holdout=7)


# --- the `fit` command -------------------------------------------------------------------------

def test_fit_cli_writes_json_and_params_csv(tmp_path):
    csv = tmp_path / "runs.csv"
    isoflop_sweep(BESIROGLU, noise=0.003).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    res = CliRunner().invoke(fit_cli, [str(csv), "--out", str(out), "--bootstrap", "50", "--isoflop"])
    assert res.exit_code == 0, res.output
    assert "alpha" in res.output and "IsoFLOP" in res.output
    assert load_fit(out).n_bootstrap == 50
    table = pd.read_csv(tmp_path / "fit_params.csv", index_col=0)
    assert list(table.index) == ["E", "A", "B", "alpha", "beta"]


def test_fit_cli_flop_side_input(tmp_path):
    csv = tmp_path / "runs.csv"
    isoflop_sweep(BESIROGLU).drop(columns="tokens").to_csv(csv, index=False)
    res = CliRunner().invoke(fit_cli, [str(csv), "--flops", "flops", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, message", [
    (["--n", "size"], "n: column 'size' not found"),
    (["--form", "bogus"], "form: must be one of"),
    (["--bootstrap", "-3"], "-3"),
])
def test_fit_cli_bad_input_exits_2_and_keeps_old_output(tmp_path, args, message):
    csv = tmp_path / "runs.csv"
    isoflop_sweep(BESIROGLU).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    out.write_text("precious")
    res = CliRunner().invoke(fit_cli, [str(csv), "--out", str(out), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert out.read_text() == "precious"


def test_fit_cli_unreadable_file(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00")
    res = CliRunner().invoke(fit_cli, [str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
