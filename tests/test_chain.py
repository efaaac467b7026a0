"""The chain from probes to a plan: fit engine optimality, one meaning of N, plans at probe
scale handed back to the probe runner, verification, grouped bootstrap, budgets that hold."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import fit_loss_surface, load_fit, verify
from fits._data import surface_data
from fits._engine import FitData, objective
from fits.cli import main as fit_cli, verify_main
from fits.forms import STATUSES, get_form
from fits.calibration import conformal_quantile
from planner import make_plan
from planner.cli import main as plan_cli
from scaling_core.shape import count_params

# --- the fit engine reaches the optimum of its own objective --------------------------------


def _synthetic_table(rng) -> pd.DataFrame:
    """A small noisy table from a known Chinchilla surface: 8-40 points, 1-2.5 decades in N and
    D, log-normal noise 0.2-3%, loss floors from low to dominant."""
    n = int(rng.integers(8, 41))
    E = rng.uniform(0.5, 2.5)
    A, B = np.exp(rng.uniform(2, 8)), np.exp(rng.uniform(3, 9))
    alpha, beta = rng.uniform(0.15, 0.7, 2)
    logN0, logD0 = rng.uniform(9, 20), rng.uniform(12, 24)
    N = np.exp(logN0 + rng.uniform(0, rng.uniform(1, 2.5) * math.log(10), n))
    D = np.exp(logD0 + rng.uniform(0, rng.uniform(1, 2.5) * math.log(10), n))
    L = (E + A / N**alpha + B / D**beta) * np.exp(rng.normal(0, rng.uniform(0.002, 0.03), n))
    return pd.DataFrame({"params": N, "tokens": D, "loss": L})


def _reference_objective(law, data, delta, rng, starts=24) -> float:
    """A dense multi-start reference: L-BFGS-B on the same objective (analytic gradient) from
    random starts over the whole box of plausible parameters."""
    from scipy.optimize import minimize

    lo, hi = law.theta_bounds()
    bounds = list(zip(lo, hi))
    logL = data["logL"]

    def f(th):
        r = law.log_predict(th, data.arrays) - logL
        c = float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))))
        if not np.isfinite(c):
            return 1e10, np.zeros_like(th)
        return c, law.log_jacobian(th, data.arrays).T @ np.clip(r, -delta, delta)

    best = math.inf
    for _ in range(starts):
        th0 = np.array([rng.uniform(-3, 1.5), rng.uniform(0, 20), rng.uniform(0, 25),
                        rng.uniform(0.02, 1.5), rng.uniform(0.02, 1.5)])
        res = minimize(f, th0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-12})
        best = min(best, float(res.fun))
    return best


@pytest.mark.slow
def test_fit_reaches_the_multistart_optimum_on_hundreds_of_small_noisy_tables():
    rng = np.random.default_rng(2024)
    law, delta = get_form("chinchilla"), 1e-3
    worse = []
    for i in range(200):
        table = _synthetic_table(rng)
        fit = fit_loss_surface(table, check_units=False, bootstrap=0)  # synthetic: N, D and loss over any range
        data = FitData.from_frame(surface_data(table, check_units=False))
        ours = objective(law, law.to_theta(fit.params), data, delta)
        assert ours == pytest.approx(fit.objective, rel=1e-12)
        assert fit.status in STATUSES
        ref = _reference_objective(law, data, delta, rng)
        if ours > ref * (1 + 1e-6):
            worse.append((i, ours, ref))
    assert not worse, f"fit above the multi-start reference on {len(worse)} tables: {worse[:5]}"


def test_fit_of_the_small_reference_table_is_not_the_start_node():
    """Issue case: on 12 noisy probe rows the old polish stopped at its grid start (2.82e-4);
    multi-start L-BFGS reaches 2.45e-4."""
    t = pd.DataFrame({"params": [4.17e4, 1.30e5, 4.62e5, 1.70e6] * 3,
                      "tokens": [1.02e5] * 4 + [4.10e5] * 4 + [1.64e6] * 4,
                      "loss": [2.959, 2.956, 2.955, 2.957, 2.196, 2.228, 2.238, 2.244,
                               1.894, 1.703, 1.568, 1.527]})
    fit = fit_loss_surface(t, bootstrap=0)
    data = FitData.from_frame(surface_data(t))
    ref = _reference_objective(get_form("chinchilla"), data, 1e-3, np.random.default_rng(0), starts=40)
    assert fit.objective <= ref * (1 + 1e-6)
    assert fit.status in STATUSES


def test_status_names_a_parameter_on_its_bound_and_the_report_leads_with_it():
    # no loss floor in the data: E runs to its floor, and the fit says so first
    N, D = np.meshgrid(np.logspace(5, 6, 3), np.logspace(6, 7, 3))
    t = pd.DataFrame({"params": N.ravel(), "tokens": D.ravel()})
    t["loss"] = 50 / t.params**0.3 + 80 / t.tokens**0.3
    fit = fit_loss_surface(t, bootstrap=0)
    assert fit.status in ("at_bound", "not_identified")
    assert fit.report().startswith("WARNINGS")
    assert "fit status" in fit.report().splitlines()[1]
    p = make_plan(fit, 1e14, vocab_size=257)  # plans, and repeats the warning first
    assert p.risks[0].startswith("fit: fit status")


def test_status_round_trips_and_old_files_load(tmp_path):
    N, D = np.meshgrid(np.logspace(6, 8, 4), np.logspace(8, 10, 4))
    t = pd.DataFrame({"params": N.ravel(), "tokens": D.ravel()})
    t["loss"] = 1.7 + 400 / t.params**0.34 + 400 / t.tokens**0.28
    fit = fit_loss_surface(t, bootstrap=0)
    assert fit.status == "converged"
    d = fit.to_dict()
    assert load_fit(fit.to_json(tmp_path / "f.json")).status == "converged"
    del d["status"], d["trust"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    assert load_fit(tmp_path / "old.json").status == "converged"


def test_conformal_quantile_is_unbounded_when_too_few_scores_certify_the_level():
    s = np.arange(1, 11, dtype=float)
    assert conformal_quantile(s, 0.9) == 10.0           # ceil(11 x 0.9) = 10 <= 10
    assert conformal_quantile(s, 0.95) == math.inf      # ceil(11 x 0.95) = 11 > 10


# --- grouped bootstrap -----------------------------------------------------------------------

def _probe_like(rng, runs=6, per_run=3, run_sd=0.02):
    """Rows of WSD probe runs: each run's branches share one offset (its seed, its stable phase)."""
    rows = []
    widths = np.geomspace(32, 256, runs)
    for k, w in enumerate(widths):
        n = 12 * 2 * w * w + 2 * 257 * w
        off = rng.normal(0, run_sd)
        for d in np.geomspace(2e5, 8e6, per_run):
            L = (0.9 + 60 / n**0.4 + 500 / d**0.35) * math.exp(off + rng.normal(0, 0.002))
            rows.append({"run_id": f"r{k}", "params": n, "tokens": d, "loss": L})
    return pd.DataFrame(rows)


def test_bootstrap_resamples_whole_runs_by_default():
    t = _probe_like(np.random.default_rng(3))
    grouped = fit_loss_surface(t, bootstrap=300, seed=0, calibrate=False, trust=False)
    rows = fit_loss_surface(t, bootstrap=300, seed=0, group=None, calibrate=False, trust=False)
    assert grouped.options["group"] == "run_id" and rows.options["group"] is None
    # correlated rows: resampling them one by one gives intervals that are too narrow
    ci = lambda f: float(np.diff(f.ci(0.9).loc["alpha", ["low", "high"]].to_numpy())[0])
    assert ci(grouped) > 1.5 * ci(rows)


# --- one meaning of N, one shape family, plans the probe runner can train ---------------------

def _probe_export(rng) -> pd.DataFrame:
    """A table shaped like `probe export --final-only` of a depth-2 byte-level ladder."""
    from probes.config import ModelConfig

    rows = []
    for w in (32, 48, 64, 96, 128):
        m = ModelConfig(width=w, depth=2, base_width=16)
        for c in (4e11, 1.6e12, 6.4e12):
            tokens = int(c / m.flops_per_token)
            n = m.params_total
            loss = (0.9 + 60 / n**0.4 + 500 / tokens**0.35) * math.exp(rng.normal(0, 0.003))
            rows.append({"run_id": f"w{w}", "width": w, "depth": 2, "n_heads": w // 16, "d_head": 16,
                         "ffn_ratio": 8 / 3, "params": m.non_embedding_params, "params_total": n,
                         "tokens": tokens, "flops": m.flops_per_token * tokens, "lr": 0.01, "batch_size": 8,
                         "seq_len": 128, "vocab_size": 257, "base_width": 16, "warmup_steps": 32,
                         "weight_decay": 0.0, "parametrization": "mup", "corpus": "stdlib",
                         "tokenizer": "byte", "val_loss": loss, "final": True})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("col, kind", [("params_total", "total"), ("params", "non_embedding")])
def test_n_definition_round_trips_from_fit_to_plan_to_probe_config(tmp_path, col, kind):
    from planner.emit import plan_grid_runs
    from probes.sweep import load_grid

    t = _probe_export(np.random.default_rng(0))
    fit = fit_loss_surface(t, n=col, loss="val_loss", bootstrap=100)
    assert fit.n_definition == {"kind": kind, "vocab_size": 257}
    fit = load_fit(fit.to_json(tmp_path / "fit.json"))
    assert fit.shape_family["depth"] == 2 and fit.shape_family["vocab_size"] == 257
    budget = 10 * t["flops"].max()
    plan = make_plan(fit, budget)
    s = plan.shape
    assert (s.vocab_size, s.seq_len, s.n_layers, s.d_head) == (257, 128, 2, 16)
    assert plan.params == count_params(s, kind)            # N as the fit counts it
    assert plan.training_flops == pytest.approx(budget, rel=0.01)
    assert plan.lr == 0.01 and plan.batch_tokens == 8 * 128 and plan.warmup_steps == 32
    # no WebText2-nats prior for the probes' own loss: no critical batch, and the plan says so
    assert plan.batch_tradeoff() == [] and "not estimated" in plan.sources["batch_crit"]
    assert plan.extra["lr_hidden"] == pytest.approx(0.01 * 16 / s.d_model)  # muP: lr / m
    res = CliRunner().invoke(plan_cli, ["--budget", str(budget), "--fit", str(tmp_path / "fit.json"),
                                        "--emit-grid", str(tmp_path / "g.toml"), "--isoflop"])
    assert res.exit_code == 0, res.output
    configs = load_grid(tmp_path / "g.toml")
    runs = plan_grid_runs(plan, fit, isoflop=True)
    assert [c.model.width for c in configs] == [r["width"] for r in runs]
    planned = configs[0]
    assert planned.model.width == s.d_model and planned.model.depth == 2 and planned.model.vocab_size == 257
    n_cfg = planned.model.params_total if kind == "total" else planned.model.non_embedding_params
    assert n_cfg == plan.params
    assert planned.model.flops_per_token == pytest.approx(s.flops_per_token)
    assert planned.train.lr == 0.01 and planned.train.batch_size == 8 and planned.train.warmup_steps == 32
    assert planned.model.base_width == 16 and planned.data.corpus == "stdlib"
    widths = sorted(c.model.width for c in configs)
    assert len(widths) == 3 and widths[0] < s.d_model < widths[-1]


def test_plans_three_to_thirty_times_beyond_the_probes_give_trainable_shapes():
    t = _probe_export(np.random.default_rng(1))
    fit = fit_loss_surface(t, n="params_total", loss="val_loss", bootstrap=100)
    for k in (3, 10, 30):
        p = make_plan(fit, k * t["flops"].max())
        assert p.shape.vocab_size == 257 and p.shape.d_model % 16 == 0
        assert p.params > 1e4 and 1 < p.tokens_per_param < 1e4


def test_plan_flags_extrapolation_in_n_and_d():
    t = _probe_export(np.random.default_rng(2))
    fit = fit_loss_surface(t, n="params_total", loss="val_loss", bootstrap=50)
    p = make_plan(fit, 1e18)
    text = " | ".join(p.risks)
    assert "N = " in text and "outside the fitted N range" in text
    assert "D = " in text and "outside the fitted D range" in text


def test_emit_grid_needs_a_fit_of_probes(tmp_path):
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--emit-grid", str(tmp_path / "g.toml")])
    assert res.exit_code == 2 and "fit of probe results" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "g.toml").exists()
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--isoflop"])
    assert res.exit_code == 2 and "--emit-grid" in res.output


# --- verify ----------------------------------------------------------------------------------

def test_verify_scores_realised_runs_against_the_interval(tmp_path):
    t = _probe_export(np.random.default_rng(4))
    top = t["flops"].max()
    train, test = t[t["flops"] < top * 0.9], t[t["flops"] >= top * 0.9]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    res = CliRunner().invoke(fit_cli, [str(tmp_path / "train.csv"), "--n", "params_total", "--loss", "val_loss",
                                       "--out", str(tmp_path / "fit.json"), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    v = verify(load_fit(tmp_path / "fit.json"), test)
    assert {"predicted", "low", "high", "realised", "inside", "rel_error", "z"} <= set(v.columns)
    assert len(v) == len(test) and (v["low"] < v["predicted"]).all() and (v["predicted"] < v["high"]).all()
    assert ((np.abs(v["z"]) <= 1) == v["inside"]).all()
    res = CliRunner().invoke(verify_main, [str(tmp_path / "fit.json"), str(tmp_path / "test.csv"),
                                           "--out", str(tmp_path / "v.csv")])
    assert res.exit_code == 0, res.output
    assert "inside the 90% interval" in res.output and len(pd.read_csv(tmp_path / "v.csv")) == len(test)


@pytest.mark.parametrize("args, message", [
    (["missing.json", "x.csv"], "fit"),
    (["FIT", "missing.csv"], "realised"),
    (["FIT", "TEST", "--loss", "nope"], "loss: column 'nope' not found"),
])
def test_verify_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    t = _probe_export(np.random.default_rng(5))
    t.to_csv(tmp_path / "t.csv", index=False)
    fit_loss_surface(t, n="params_total", loss="val_loss", bootstrap=20, trust=False).to_json(tmp_path / "f.json")
    args = [a.replace("FIT", str(tmp_path / "f.json")).replace("TEST", str(tmp_path / "t.csv")) for a in args]
    res = CliRunner().invoke(verify_main, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


# --- trust ----------------------------------------------------------------------------------

def test_a_fit_says_when_its_own_backtest_misses():
    # the largest budget bends away from the law: the own backtest must say so, in the report first
    t = _probe_export(np.random.default_rng(6))
    top = t["flops"] > t["flops"].max() * 0.9
    t.loc[top, "val_loss"] *= 1.06
    fit = fit_loss_surface(t, n="params_total", loss="val_loss", bootstrap=200)
    bt = fit.trust["backtest"]
    assert bt["mean_abs_rel_error"] > 0.03
    assert any(w.startswith("own backtest misses") for w in fit.warnings)
    assert fit.report().startswith("WARNINGS")


# --- budgets that hold ----------------------------------------------------------------------

def test_every_variant_spends_the_budget_or_says_by_how_much():
    p = make_plan(budget=1e21, seq_len=32768)
    assert p.training_flops == pytest.approx(1e21, rel=1e-9)
    inf = make_plan(budget=1e21, inference_tokens=2e12)
    assert inf.training_flops == pytest.approx(1e21, rel=1e-9)  # the inference-aware plan spends the budget
    same = inf.extra["same_loss"]  # the same-loss alternative trains beyond it, and says by how much
    over = same.training_flops / 1e21
    assert over > 1
    assert same.risks[0].startswith("OVER BUDGET") and f"{over:.2f}x" in same.risks[0]
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--inference-tokens", "2e12"])
    assert res.exit_code == 0 and f"{over:.2f}x" in res.output


def test_inference_aware_plan_prices_repeated_data():
    p = make_plan(budget=1e21, inference_tokens=2e12, unique_tokens=2e10).extra["same_loss"]
    dc = make_plan(budget=1e21, unique_tokens=2e10)
    assert p.loss == pytest.approx(dc.loss, rel=1e-3)  # same loss target, with repeated data priced in
    assert p.extra["epochs"] == pytest.approx(p.tokens / 2e10, rel=1e-6)  # its own epochs
    assert p.extra["epochs"] > dc.extra["epochs"]
    assert "repetition_risk" in p.extra
    # its loss is the data-constrained law's at its own epochs, not the fresh-data law's
    from fits.presets import load_preset
    fresh_loss = float(load_preset("besiroglu2024").predict(p.params, p.tokens))
    assert p.loss > fresh_loss


# --- shipped reference results are what their documented command gives -----------------------

def test_reference_fit_is_regenerated_by_its_documented_command():
    """data/reference/README.md: `fit probes_default_cpu.csv --n params --d tokens --loss
    val_loss --bootstrap 1000 --out probes_default_cpu_fit.json`."""
    from pathlib import Path

    ref = Path(__file__).resolve().parents[1] / "data" / "reference"
    shipped = load_fit(ref / "probes_default_cpu_fit.json")
    again = fit_loss_surface(ref / "probes_default_cpu.csv", n="params", d="tokens", loss="val_loss",
                             bootstrap=1000, seed=0)
    for p, v in shipped.params.items():
        assert again.params[p] == pytest.approx(v, rel=1e-6), p
    assert again.objective == pytest.approx(shipped.objective, rel=1e-9)
    assert again.status == shipped.status and again.n_definition == shipped.n_definition
    np.testing.assert_allclose(again.bootstrap_params, shipped.bootstrap_params, rtol=1e-6)
    t = pd.read_csv(ref / "probes_default_cpu.csv")
    from probes.sweep import load_grid
    keys = {c.key() for c in load_grid("default")}
    assert set(t["run_id"]) == keys  # the table is an export of the default ladder
