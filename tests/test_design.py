"""Optimal and sequential probe design (fits.design, probe design --target / --next)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import load_fit
from fits.design import design_runs, design_variance, isoflop_baseline, run_cost
from planner.presets import load_preset

REF = Path(__file__).resolve().parents[1] / "data" / "reference"


def chinchilla_candidates():
    return pd.DataFrame([{"N": n, "D": n * tpp, "group": f"{n:.3g}", "fpt": 6 * n}
                         for n in np.geomspace(2e7, 1e9, 12) for tpp in np.geomspace(4, 500, 16)])


def test_run_cost_counts_branches_as_cooldowns():
    d = pd.DataFrame({"group": [1, 1, 1, 2], "D": [100.0, 200.0, 400.0, 50.0], "fpt": [10.0, 10.0, 10.0, 3.0]})
    assert run_cost(d) == pytest.approx(10 * (400 + 0.2 * 300) + 3 * 50)


def test_design_spends_within_budget_and_beats_the_isoflop_grid():
    prior, cand = load_preset("besiroglu2024"), chinchilla_candidates()
    res = design_runs(prior, cand, 1e23, budget=1e20, noise=0.01)
    assert 0 < res.cost <= 1e20 * (1 + 1e-9)
    chosen = cand.merge(res.runs[["N", "D"]], on=["N", "D"])
    assert run_cost(chosen) == pytest.approx(res.cost, rel=1e-9)  # the greedy's bookkeeping is the cost model's
    hw = res.runs["half_width_after"].to_numpy()
    assert np.all(np.diff(hw) <= 1e-12) and hw[-1] < res.start_half_width
    grid = isoflop_baseline(cand, 1e20)
    assert run_cost(cand.loc[grid]) <= 1e20
    # the criterion the design minimises, evaluated for the grid of (about) the same cost: at least 1.5x wider
    assert design_variance(prior, cand, grid, 1e23, noise=0.01) > 1.5 * res.half_width


def test_n_opt_criterion_and_bad_inputs():
    prior, cand = load_preset("besiroglu2024"), chinchilla_candidates()
    res = design_runs(prior, cand, 1e23, k=5, criterion="n_opt", noise=0.01)
    assert len(res.runs) == 5 and "compute-optimal N" in res.report()
    with pytest.raises(ValueError, match="criterion"):
        design_runs(prior, cand, 1e23, k=5, criterion="speed")
    with pytest.raises(ValueError, match="budget"):
        design_runs(prior, cand, 1e23)
    with pytest.raises(ValueError, match="target"):
        design_runs(prior, cand, -1.0, k=2)


def test_probe_design_cli_writes_a_grid_the_runner_reads(tmp_path):
    from probes.cli import main
    from probes.sweep import load_grid

    r = CliRunner().invoke(main, ["design", "--target", "1e14", "--probe-budget", "1e12", "--out",
                                  str(tmp_path / "d.toml")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "d.toml").read_text()
    assert "expected 90% interval" in text and "default isoFLOP ladder at the same cost" in text
    configs = load_grid(tmp_path / "d.toml")
    assert configs and all(c.train.schedule == "wsd" for c in configs)
    bad = CliRunner().invoke(main, ["design", "--target", "1e14"])
    assert bad.exit_code == 2 and "--probe-budget" in bad.output


def test_probe_design_next_proposes_k_runs_given_finished_ones(tmp_path):
    from probes.cli import main

    r = CliRunner().invoke(main, ["design", "--target", "1e14", "--next", str(REF / "probes_default_cpu.csv"),
                                  "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "next 3 runs given" in r.output and r.output.count("[[run]]") >= 1
    assert "when to stop" in r.output


def test_sequential_prior_from_a_fit_is_narrower_than_the_preset_prior():
    fit = load_fit(REF / "probes_default_cpu_fit.json")
    from probes.sweep import design_candidates

    cand = design_candidates()
    a = design_runs(fit, cand, 1e14, k=4, prior_scale=1.0, noise=0.01)
    b = design_runs(fit, cand, 1e14, k=4, prior_scale=100.0, noise=0.01)
    assert a.start_half_width < b.start_half_width  # the fit's own refits already pin the law
