"""Learning-rate/batch laws, temperature, critical batch and the muP transfer check."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from fits import InputError, check_transfer, critical_batch, fit_hyperparameters, load_hparams
from fits.hparams import deepseek_prior
from planner import make_plan


def sweep(a_N=-0.3, a_D=0.05, b_D=0.5, noise=0.0, seed=0, ridge_slope=None, b_N=0.0):
    """Synthetic lr x batch sweep: loss quadratic in (log lr, log B) around power-law optima."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in (1e6, 4e6, 16e6):
        for D in (1e8, 4e8, 16e8):
            lo, bo = np.log(0.5 * N ** a_N * D ** a_D), np.log(0.3 * D ** b_D * (N / 4e6) ** b_N)
            for l in np.log(2.0) * np.arange(-3, 4) + lo:
                for b in np.log(2.0) * np.arange(-2, 3) + bo:
                    # with a ridge slope s the best lr at batch b is lo + s (b - bo)
                    shift = 0.0 if ridge_slope is None else ridge_slope * (b - bo)
                    loss = 3 + 0.02 * (l - lo - shift) ** 2 + 0.01 * (b - bo) ** 2
                    rows.append((N, D, np.exp(l), np.exp(b), loss * np.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "val_loss"])


@settings(max_examples=8, deadline=None, derandomize=True)
@given(a_N=st.floats(-0.6, -0.1), a_D=st.floats(-0.2, 0.2), b_D=st.floats(0.3, 0.7), seed=st.integers(0, 99))
def test_recovers_known_exponents_within_intervals(a_N, a_D, b_D, seed):
    hp = fit_hyperparameters(sweep(a_N, a_D, b_D, noise=0.0005, seed=seed), bootstrap=100, level=0.99)
    ci = hp.ci()
    for name, truth in (("lr_a_N", a_N), ("lr_a_D", a_D), ("batch_a_D", b_D)):
        lo, hi = ci.loc[name, "low"], ci.loc[name, "high"]
        slack = 0.02  # quadratic-vertex bias from the noise, at most a few hundredths
        assert lo - slack <= truth <= hi + slack, (name, truth, lo, hi)


def test_cell_optima_bands_penalties_and_prediction():
    hp = fit_hyperparameters(sweep(), bootstrap=50)
    c = hp.cell_optima
    assert len(c) == 9 and (c["method"] == "quadratic").all()
    # 0.02 (ln 2)^2 / 3 = 0.32% loss for lr 2x off
    assert c["penalty_lr_2x"].iloc[0] == pytest.approx(0.02 * np.log(2) ** 2 / 3, rel=1e-3)
    assert (c["lr_band1_low"] <= c["lr_opt"] * 1.01).all() and (c["lr_band1_high"] >= c["lr_opt"] / 1.01).all()
    p = hp.predict(4e6, 4e8)
    assert p["lr_opt"].iloc[0] == pytest.approx(0.5 * 4e6 ** -0.3 * 4e8 ** 0.05, rel=1e-3)
    assert p["lr_opt_low"].iloc[0] <= p["lr_opt"].iloc[0] <= p["lr_opt_high"].iloc[0]
    assert not hp.n_term_needed


@pytest.mark.parametrize("slope, word", [(1.0, "lr/B constant"), (0.5, "lr/sqrt(B)")])
def test_temperature_verdict_follows_the_ridge(slope, word):
    hp = fit_hyperparameters(sweep(ridge_slope=slope), bootstrap=0)
    assert hp.temperature["slope_median"] == pytest.approx(slope, abs=0.15)
    assert word in hp.temperature["verdict"]


def test_priors_compared_and_flagged():
    hp = fit_hyperparameters(sweep(), bootstrap=0)
    lr_ds, b_ds = deepseek_prior(1e21 / 6 / 1e10, 1e10)
    assert lr_ds == pytest.approx(7.39e-4, rel=0.01) and b_ds == pytest.approx(2.16e6, rel=0.01)
    assert {"lr_deepseek", "lr_steplaw", "flag"} <= set(hp.priors.columns)
    assert hp.priors["flag"].dtype == bool


def test_json_round_trip_and_planner_use(tmp_path):
    hp = fit_hyperparameters(sweep(), bootstrap=50)
    path = hp.to_json(tmp_path / "hp.json")
    back = load_hparams(path)
    pd.testing.assert_frame_equal(back.predict(2e6, 2e8), hp.predict(2e6, 2e8))
    plan = make_plan(budget=3e17, hparams=back)
    assert "fitted hyperparameter law" in plan.sources["lr"]
    assert plan.intervals["lr_low"] <= plan.lr <= plan.intervals["lr_high"]
    assert "report" and "lr_opt" in hp.report()


def test_batch_n_term_detected_when_present():
    assert fit_hyperparameters(sweep(b_N=0.4), bootstrap=0).n_term_needed


def test_needs_two_cells():
    df = sweep()
    one = df[(df.params == 1e6) & (df.tokens == 1e8)]
    with pytest.raises(InputError, match="at least two"):
        fit_hyperparameters(one)


def test_critical_batch_recovers_bcrit():
    rows = []
    for target, (s_min, b_crit) in {3.0: (100, 1000), 2.8: (300, 3000)}.items():
        for B in (250, 500, 1000, 2000, 4000, 8000):
            rows.append({"batch_tokens": B, "step": s_min * (1 + b_crit / B), "target_loss": target})
    r = critical_batch(pd.DataFrame(rows)).set_index("target_loss")
    assert r.loc[3.0, "b_crit"] == pytest.approx(1000) and r.loc[2.8, "b_crit"] == pytest.approx(3000)
    assert r.loc[2.8, "e_min"] == pytest.approx(300 * 3000)


def test_transfer_verdicts():
    lrs = 2.0 ** -np.arange(4, 13)

    def table(drift):
        return pd.DataFrame([(w, lr, (np.log(lr) - np.log(4e-3 * (w / 64) ** drift)) ** 2 + 3)
                             for w in (64, 128, 256, 512) for lr in lrs], columns=["width", "lr", "val_loss"])

    good = check_transfer(table(0.0))
    assert good.verdict == "transfers" and abs(good.drift) < 0.05
    bad = check_transfer(table(-1.0))  # SP-like: optimum falls as 1/width
    assert bad.verdict == "does not transfer"
    assert bad.drift == pytest.approx(-1.0, abs=0.1)
    assert bad.drift_interval[0] <= bad.drift <= bad.drift_interval[1]
    assert "transfer" in good.report()


def test_a_fitted_law_is_used_only_near_the_data_it_was_fitted_on():
    hp = fit_hyperparameters(sweep(), bootstrap=50)
    r = hp.data_range
    inside = make_plan(budget=3e17, hparams=hp)  # N, D within a decade of the law's cells
    assert "fitted hyperparameter law" in inside.sources["lr"]
    assert "horizon: lr ~ D^" in inside.sources["lr"]
    assert not any("published prior" in x for x in inside.risks)
    far = make_plan(budget=1e24, hparams=hp)
    assert far.shape.non_embedding_params > 10 * r["N_max"]
    assert "DeepSeek" in far.sources["lr"] and "fitted hyperparameter law" not in far.sources["lr"]
    why = [x for x in far.risks if "lr comes from the published prior" in x]
    assert len(why) == 1 and "decades beyond" in why[0]
    assert "DeepSeek" in far.sources["batch"]
    assert any(x.startswith("note: batch from the published prior") for x in far.risks)


def test_plan_sanity_checks_steps_and_adamw_timescale():
    p = make_plan(budget=1e13, vocab_size=257, seq_len=32768)  # one sequence a step: few steps
    assert p.steps < 1000 and any("optimizer steps" in x for x in p.risks)
    from planner import rules
    tau = rules.adamw_timescale(p.lr, p.weight_decay, p.steps)
    flagged = any("AdamW timescale" in x for x in p.risks)
    assert flagged == (not 0.05 <= tau <= 5.0)


def _sweep_with_targets():
    rows = []
    for N in (1e6, 4e6, 16e6):
        for D in (1e8, 4e8):
            lo, bo = np.log(0.5 * N**-0.3 * D**0.05), np.log(0.3 * D**0.5)
            for l in np.log(2.0) * np.arange(-3, 4) + lo:
                for b in np.log(2.0) * np.arange(-2, 3) + bo:
                    rows.append({"params": N, "tokens": D, "lr": np.exp(l), "batch_tokens": np.exp(b),
                                 "val_loss": 3 + 0.02 * (l - lo) ** 2 + 0.01 * (b - bo) ** 2, "final": True})
    for k, e_min in enumerate((1e7, 3e7, 1e8, 3e8)):  # steps to each target at five batch sizes
        bc = 50 * e_min**0.4
        for B in bc * np.array([0.25, 0.5, 1, 2, 4]):
            rows.append({"params": 1e6, "tokens": np.nan, "lr": 1e-3, "batch_tokens": B, "val_loss": np.nan,
                         "final": False, "phase": "target", "target_loss": 3.5 - 0.1 * k,
                         "step": e_min / bc * (1 + bc / B)})
    return pd.DataFrame(rows)


def test_fit_hparams_cli_fits_the_critical_batch_law_and_the_plan_uses_it(tmp_path):
    from click.testing import CliRunner

    from fits.cli import hparams_main
    from planner import make_plan

    sweep = _sweep_with_targets()
    sweep.to_csv(tmp_path / "sweep.csv", index=False)
    r = CliRunner().invoke(hparams_main, [str(tmp_path / "sweep.csv"), "--out", str(tmp_path / "hp.json")])
    assert r.exit_code == 0, r.output
    hp = load_hparams(tmp_path / "hp.json")
    assert hp.b_crit_law["b"] == pytest.approx(0.4, abs=1e-6)
    assert "B_crit = exp(" in r.output
    plan = make_plan(budget=6 * 4e6 * 3e8, hparams=hp)
    assert plan.sources["batch_crit"].startswith("fitted B_crit(D)")
    bad = CliRunner().invoke(hparams_main, [str(tmp_path / "sweep.csv"), "--out", str(tmp_path / "hp.txt")])
    assert bad.exit_code == 2 and "--out" in bad.output


def test_default_plan_never_warns_against_its_own_batch():
    from planner import make_plan

    plan = make_plan(budget=5.88e23)
    assert not [r for r in plan.risks if r.startswith("warning") and "batch" in r], plan.risks
    # the preset's loss is not in Kaplan's unit: no B_crit(L), so no trade-off to warn or note about
    assert plan.sources["batch_crit"].startswith("not estimated") and plan.batch_tradeoff() == []
    for b in (1e19, 1e21, 1e23):  # in its own unit, Kaplan's B_crit is used and the plan does not warn
        k = make_plan("kaplan2020", budget=b)
        assert "batch_crit_tokens" in k.extra and not [r for r in k.risks if r.startswith("warning") and "batch" in r]


def step_law_like_sweep(seed, noise=0.006, lr_step=2.0, sizes=(6e7, 1.2e8, 2.5e8, 5e8, 1e9), irregular=False):
    """Optima on Step Law's laws, a bowl steeper on the high-lr side, grids off-centre, noise;
    ``irregular``: every lr has its own batch sizes."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in sizes:
        for D in (2e10, 8e10):
            lr0, b0 = 1.79 * N**-0.713 * D**0.307, 0.58 * D**0.571
            bs = b0 * 2.0 ** np.arange(-3, 4) * np.exp(rng.uniform(-0.3, 0.3))
            for lr in lr0 * lr_step ** np.arange(-5, 6) * np.exp(rng.uniform(-0.3, 0.3)):
                for B in (bs * np.exp(rng.uniform(-0.3, 0.3, len(bs))) if irregular else bs):
                    u, v = np.log(lr / lr0), np.log(B / b0)
                    q = 0.012 * u * u + 0.06 * max(u, 0) ** 3 + 0.006 * v * v + 0.004 * u * v
                    rows.append((N, D, lr, B, 2.5 * (1 + q) * (1 + noise * rng.standard_normal())))
    return pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "val_loss"])


def _held_out_error(df, method):
    D = np.array([2e10, 8e10])
    lr0, b0 = 1.79 * 1e9**-0.713 * D**0.307, 0.58 * D**0.571
    p = fit_hyperparameters(df[df["params"] < 1e9], method=method, bootstrap=0).predict(1e9, D)
    return max(np.abs(np.log(p["lr_opt"] / lr0)).max(), np.abs(np.log(p["batch_opt"] / b0)).max())


def test_joint_fit_predicts_a_held_out_size_within_1p25_and_beats_per_cell_fits():
    errs = np.array([[_held_out_error(step_law_like_sweep(s), m) for m in ("joint", "cells")] for s in range(3)])
    assert np.exp(errs[:, 0]).max() < 1.25 and errs[:, 0].mean() < errs[:, 1].mean(), errs


def test_joint_fit_copes_with_irregular_grids():
    errs = np.array([[_held_out_error(step_law_like_sweep(s, irregular=True), m) for m in ("joint", "cells")]
                     for s in range(3)])
    assert np.exp(errs[:, 0]).max() < 1.5 and errs[:, 0].mean() < errs[:, 1].mean(), errs


def test_method_is_checked():
    with pytest.raises(InputError, match="method: must be 'joint'"):
        fit_hyperparameters(sweep(), method="median")


def test_lr_horizon_backtest_recovers_the_horizon_exponent():
    from fits.hparams import lr_horizon_backtest

    rows = []
    for N in (1e6, 4e6):
        for D in (1e8, 2e8, 4e8, 8e8):
            lo = np.log(0.5 * N**-0.3 * D**-0.15)
            for lr in np.exp(lo) * 2.0 ** np.arange(-3, 4) * 1.1:
                rows.append((N, D, lr, 4096, 3 + 0.02 * (np.log(lr) - lo) ** 2))
    df = pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "val_loss"])
    bt = lr_horizon_backtest(df, bootstrap=20)
    assert len(bt) == 2 and (bt["D"] == 8e8).all()
    assert bt["a_D"].iloc[0] == pytest.approx(-0.15, abs=0.01)
    assert (bt["grid_steps_off"].abs() < 0.1).all()
    # ignoring the horizon (the optimum of the next-longest run) is off by 0.15 log2(2) = 0.15 steps
    assert (bt["grid_steps_off_without_horizon"] > 0.1).all()
    with pytest.raises(InputError, match="three or more token horizons"):
        lr_horizon_backtest(df[df["tokens"] <= 2e8])


def wd_sweep(p=-0.5, k=2.0):
    """lr x wd x horizon sweep whose optimal timescale is tau* = k (D/N)^p."""
    rows = []
    N, B = 1e6, 1e4
    for D in (2e7, 8e7, 3.2e8):
        tau_opt = k * (D / N) ** p
        for lr in (1e-3, 2e-3, 4e-3):
            for w in (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
                tau = B / (lr * w * D) if w else np.inf
                pen = 0.01 * np.log(tau / tau_opt) ** 2 if w else 0.05
                rows.append((N, D, lr, B, w, 3 + 0.03 * np.log(lr / 2e-3) ** 2 + pen))
    return pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens", "weight_decay", "val_loss"])


def test_weight_decay_law_recovers_the_timescale_and_the_plan_uses_it(tmp_path):
    from fits.hparams import fit_weight_decay

    w = fit_weight_decay(wd_sweep())
    assert w.law["p"] == pytest.approx(-0.5, abs=0.03)
    assert float(w.tau(1e6, 8e7)) == pytest.approx(2.0 * 80**-0.5, rel=0.05)
    assert (w.per_lr["tau_opt"].groupby(w.per_lr["D"]).agg(lambda s: s.max() / s.min()) < 1.05).all()
    assert (w.cells["gain_vs_no_wd"] > 0).all()
    hp = fit_hyperparameters(wd_sweep(), bootstrap=20)
    assert hp.wd_law["p"] == pytest.approx(-0.5, abs=0.03) and "weight_decay" not in hp.unfitted
    assert "AdamW timescale tau*" in hp.report()
    hp.to_json(tmp_path / "hp.json")
    hp2 = load_hparams(tmp_path / "hp.json")
    assert hp2.wd_law["p"] == pytest.approx(hp.wd_law["p"])
    assert hp2.method == hp.method and hp2.unfitted == hp.unfitted
    # the joint fit's lr* (0.0012) missed the sweep's optimum (2e-3) by 0.7 grid steps: the cells' laws stand in
    assert hp.method == "cells" and float(hp.predict(1e6, 8e7)["lr_opt"].iloc[0]) == pytest.approx(2e-3, rel=0.05)
    plan = make_plan(budget=6 * 1e6 * 8e7 * 3, hparams=hp2, vocab_size=256, seq_len=256)
    from planner import rules
    assert plan.sources["weight_decay"].startswith("wd = B / (lr tau D) with fitted AdamW timescale")
    tpp = plan.tokens / plan.shape.non_embedding_params  # N as the timescale law was fitted
    tau = rules.adamw_timescale(plan.lr, plan.weight_decay, plan.tokens / plan.batch_tokens)
    assert tau == pytest.approx(float(np.exp(hp2.wd_law["log_k"]) * tpp ** hp2.wd_law["p"]), rel=0.01)


def test_weight_decay_needs_a_swept_decay():
    from fits.hparams import fit_weight_decay

    hp = fit_hyperparameters(sweep(), bootstrap=0)
    assert "one weight decay" in hp.unfitted["weight_decay"]
    with pytest.raises(InputError, match="weight_decay"):
        fit_weight_decay(sweep())


def test_default_plan_sets_weight_decay_from_the_prior_timescale():
    from planner import rules

    for budget in (1e20, 1e22, 5.88e23):
        p = make_plan(budget=budget)
        tau = rules.adamw_timescale(p.lr, p.weight_decay, p.tokens / p.batch_tokens)
        assert tau == pytest.approx(rules.TAU_PRIOR, rel=0.01)
        assert "prior AdamW timescale" in p.sources["weight_decay"]
        # the prior is the common recipe's own timescale (wd 0.1 with DeepSeek's lr and batch), 0.27-0.56
        assert 0.25 <= rules.adamw_timescale(p.lr, 0.1, p.tokens / p.batch_tokens) <= 0.6
