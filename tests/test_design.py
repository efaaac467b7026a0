"""Optimal and sequential probe design (fits.design, probe design --target / --next)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import load_fit
from fits.design import (UNUSABLE, design_runs, design_variance, isoflop_baseline, run_cost, simulate_design,
                          summarise_simulation)
from fits.presets import load_preset

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
    # the criterion the design minimises, evaluated for the grid of (about) the same cost: wider. The form's
    # misfit at the target is a floor no probe removes, so the ratio is larger when the form is trusted
    assert design_variance(prior, cand, grid, 1e23, noise=0.01) > 1.15 * res.half_width
    iid = dict(noise=0.01, misfit=0.0, shared_noise=0.0)  # the form trusted, branches independent
    trusting = design_runs(prior, cand, 1e23, budget=1e20, **iid)
    assert design_variance(prior, cand, grid, 1e23, **iid) > 1.5 * trusting.half_width


def test_without_misfit_the_criterion_is_the_linearised_posterior_variance():
    """Known answer: g' (Lambda0 + J_S' J_S / sigma^2)^-1 g, averaged over the draws, from the rank-one
    updates in function space."""
    from fits.design import _Z90, _criterion_gradient, _jacobian, _samples

    prior, cand = load_preset("besiroglu2024"), chinchilla_candidates()
    rows = [3, 50, 100, 150, 191]
    got = design_variance(prior, cand, rows, 1e23, noise=0.02, n_draws=4, misfit=0.0, shared_noise=0.0)
    thetas, boot = _samples(prior, 4, 0)
    cov = np.cov(boot.T) * 100.0
    cov = cov + 1e-12 * np.trace(cov) * np.eye(len(cov))
    sub = cand.loc[rows]
    v = []
    for t in thetas:
        J = _jacobian(prior.law, t, sub["N"].to_numpy(), sub["D"].to_numpy())
        g = _criterion_gradient(prior.law, t, 1e23, "loss")
        v.append(g @ np.linalg.inv(np.linalg.inv(cov) + J.T @ J / 0.02**2) @ g)
    assert got == pytest.approx(_Z90 * np.sqrt(np.mean(v)), rel=1e-6)


def test_the_misfit_enters_as_a_smooth_gaussian_process_and_runs_done_inform_it():
    from fits.design import _build

    prior, cand = load_preset("besiroglu2024"), chinchilla_candidates()
    args = (prior, cand, 1e23, "loss", 0.01, 100.0, 1, 0)
    plain, with_misfit = _build(*args, misfit=0.0), _build(*args, misfit=0.03, misfit_length=1.5)
    # branches of one run share the run's noise: 80% of sigma^2 within a group, none across groups
    shared = _build(*args, shared_noise=0.8).C[0, 1:, 1:] - plain.C[0, 1:, 1:]
    same = (cand["group"].to_numpy()[:, None] == cand["group"].to_numpy()[None])
    np.testing.assert_allclose(shared, np.where(same & ~np.eye(len(cand), dtype=bool), 0.8 * 0.01**2, 0.0),
                               atol=1e-15)  # the diagonal (a run's own variance) is sigma^2 either way
    diff = with_misfit.C[0] - plain.C[0]
    n, d = (float(np.ravel(v)[0]) for v in prior.law.optimal(1e23, prior.params))
    x = np.column_stack([np.log10(cand["N"]), np.log10(cand["D"])])
    k = lambda a, b: 0.03**2 * np.exp(-((a - b) ** 2).sum(-1) / (2 * 1.5**2))
    assert diff[0, 0] == pytest.approx(0.03**2)  # the misfit at the target's optimum
    np.testing.assert_allclose(diff[0, 1:], k(x, np.log10([n, d])), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(diff[1:, 1:], k(x[:, None], x[None]), rtol=1e-9, atol=1e-15)
    # runs already done near the target's optimum shrink the misfit part; runs far from it barely do
    near = cand.assign(N=1e9, D=2e10).iloc[:3]
    far = cand.assign(N=2e7, D=1e8).iloc[:3]
    kw = dict(k=1, noise=0.01, prior_scale=1.0)
    base = design_runs(prior, cand, 1e23, **kw).start_half_width
    assert design_runs(prior, cand, 1e23, existing=near, **kw).start_half_width < base - 1e-3
    assert design_runs(prior, cand, 1e23, existing=far, **kw).start_half_width == pytest.approx(base, abs=1e-3)
    with pytest.raises(ValueError, match="misfit"):
        design_runs(prior, cand, 1e23, k=1, misfit=-0.1)
    with pytest.raises(ValueError, match="misfit_length"):
        design_runs(prior, cand, 1e23, k=1, misfit_length=0)


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
    with pytest.raises(ValueError, match="noise"):
        design_runs(prior, cand, 1e23, k=2, noise=float("nan"))


def test_probe_design_cli_writes_a_grid_the_runner_reads(tmp_path):
    from probes.cli import main
    from probes.sweep import load_grid

    r = CliRunner().invoke(main, ["design", "--target", "1e14", "--probe-budget", "1e12", "--simulate", "2",
                                  "--out", str(tmp_path / "d.toml")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "d.toml").read_text()
    assert "expected 90% interval" in text and "default isoFLOP ladder at the same cost" in text
    # every design and the ladder went through the same simulated fits; one of them was written
    assert "simulated fits" in text and text.count("<- chosen") == 1
    assert "#     default isoFLOP ladder" in text
    configs = load_grid(tmp_path / "d.toml")
    assert configs and all(c.train.schedule == "wsd" for c in configs)
    bad = CliRunner().invoke(main, ["design", "--target", "1e14"])
    assert bad.exit_code == 2 and "--probe-budget" in bad.output
    for opt in ("--misfit", "--noise"):
        bad = CliRunner().invoke(main, ["design", "--target", "1e14", "--probe-budget", "1e12", opt, "nan"])
        assert bad.exit_code == 2 and f"{opt}: must be a finite number" in bad.output


def test_probe_design_next_proposes_k_runs_given_finished_ones(tmp_path):
    from probes.cli import main

    r = CliRunner().invoke(main, ["design", "--target", "1e14", "--next", str(REF / "probes_default_cpu.csv"),
                                  "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "next 3 runs given" in r.output and r.output.count("[[run]]") >= 1
    assert "when to stop" in r.output


def test_probe_design_serves_the_form_the_probes_will_be_fitted_with(tmp_path):
    from probes.cli import main

    r = CliRunner().invoke(main, ["design", "--target", "1e14", "--probe-budget", "1e12", "--form", "beta_n",
                                  "--simulate", "0"])
    assert r.exit_code == 0, r.output
    assert "probes_default_cpu.csv, fitted in the beta_n form" in r.output and "[[run]]" in r.output
    nxt = CliRunner().invoke(main, ["design", "--target", "1e14", "--next", str(REF / "probes_default_cpu.csv"),
                                    "--k", "2", "--form", "beta_n"])
    assert nxt.exit_code == 0, nxt.output
    for args, msg in ((["--form", "beta_n", "--prior", "besiroglu2024"], "--form: the prior besiroglu2024 is a chinchilla"),
                      (["--form", "nope"], "--form: must be one of")):
        bad = CliRunner().invoke(main, ["design", "--target", "1e14", "--probe-budget", "1e12", "--simulate", "0", *args])
        assert bad.exit_code == 2 and msg in bad.output, bad.output


def test_sequential_prior_from_a_fit_is_narrower_than_the_preset_prior():
    fit = load_fit(REF / "probes_default_cpu_fit.json")
    from probes.sweep import design_candidates

    cand = design_candidates()
    assert cand["D"].min() >= 800 * 8 * 128  # no candidate run is mostly warmup (25x its 32 steps)
    a = design_runs(fit, cand, 1e14, k=4, prior_scale=1.0, noise=0.01)
    b = design_runs(fit, cand, 1e14, k=4, prior_scale=100.0, noise=0.01)
    assert a.start_half_width < b.start_half_width  # the fit's own refits already pin the law


def test_simulated_fits_recover_a_known_law_and_refuse_too_few_runs():
    prior = load_preset("besiroglu2024")
    n, d = (float(np.ravel(v)[0]) for v in prior.law.optimal(1e22, prior.params))
    # 16 runs around a tenth of the target, nearly noiseless, the form exact: the fitter finds every law
    rows = pd.DataFrame([{"N": n * f, "D": d * g, "group": f} for f in np.geomspace(0.05, 0.5, 4)
                         for g in np.geomspace(0.05, 0.5, 4)])
    exact = dict(noise=1e-4, misfit=0.0, shared_noise=0.0, interaction=0.0, seed=3)
    sim = simulate_design(prior, rows, 1e22, n_sims=4, **exact)
    assert list(sim.columns) == ["sim", "error", "status", "usable"]
    assert sim["usable"].all() and sim["error"].abs().max() < 0.01
    pd.testing.assert_frame_equal(sim, simulate_design(prior, rows, 1e22, n_sims=4, **exact))  # the seed fixes all
    # the form's misfit at the target, and a bend it lacks, are errors no probe removes: the misses grow with them
    misfit = simulate_design(prior, rows, 1e22, n_sims=4, **{**exact, "misfit": 0.05})
    assert misfit["error"].abs().mean() > 3 * sim["error"].abs().mean()
    bent = simulate_design(prior, rows, 1e22, n_sims=4, **{**exact, "interaction": 0.05})
    assert bent["error"].abs().mean() > 3 * sim["error"].abs().mean()
    # five runs cannot pin five parameters: the fitter refuses each table, and each counts as unusable
    few = simulate_design(prior, rows.iloc[:5], 1e22, n_sims=2, seed=3)
    assert (few["status"] == "failed").all() and summarise_simulation(few)["score"] == UNUSABLE
    with pytest.raises(ValueError, match="n_sims"):
        simulate_design(prior, rows, 1e22, n_sims=0)


def test_simulated_fits_use_the_prior_form():
    from fits import fit_loss_surface, get_form

    truth = dict(E=1.7, A=300.0, B=900.0, alpha=0.33, beta=0.30, kappa=-0.03)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e8, 3e9, 6), np.geomspace(2e9, 3e11, 6)))
    table = pd.DataFrame({"N": N, "D": D, "loss": get_form("beta_n")(N, D, truth)})
    prior = fit_loss_surface(table, n="N", d="D", loss="loss", form="beta_n", bootstrap=20, seed=0)
    rows = table.assign(group=table["N"])
    exact = dict(noise=1e-4, misfit=0.0, shared_noise=0.0, interaction=0.0, seed=3)
    sim = simulate_design(prior, rows, 1e22, n_sims=3, **exact)
    assert sim["status"].isin(["converged", "at_bound", "not_identified"]).all()
    assert sim["error"].abs().max() < 0.01  # a Chinchilla fit of these truths misses by 3.5%


def test_a_simulation_checked_design_keeps_the_proposal_whose_fits_miss_least():
    prior, cand = load_preset("besiroglu2024"), chinchilla_candidates()
    res = design_runs(prior, cand, 1e23, budget=1e20, noise=0.01, simulate=2)
    table = res.simulated
    assert len(table) >= 2 and table["chosen"].sum() == 1
    best = table.loc[table["chosen"]].iloc[0]
    assert best["score"] == table["score"].min() and best["runs"] == len(res.runs)
    assert res.cost == pytest.approx(best["cost"]) and (table["cost"] <= 1e20 * (1 + 1e-9)).all()
    assert "simulated fits" in res.report() and "<- chosen" in res.report()
    # unchecked, the design is the first proposal, and says nothing of simulations
    plain = design_runs(prior, cand, 1e23, budget=1e20, noise=0.01)
    assert plain.simulated is None and "simulated fits" not in plain.report()
    assert len(plain.runs) == table["runs"].iloc[0]
    with pytest.raises(ValueError, match="simulate"):
        design_runs(prior, cand, 1e23, budget=1e20, simulate=-1)
