"""The planner: known answers, invariants, the `plan` command and its bad-input handling."""
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from fits import InputError, fit_loss_surface
from planner import Budget, make_plan, make_plans
from planner.cli import main as plan_cli, parse_budgets
from fits.presets import list_presets, load_preset
from planner.rules import deepseek_batch, deepseek_lr
from scaling_core.shape import shape_for_params

from conftest import BESIROGLU, isoflop_sweep


# --- known answers --------------------------------------------------------------------------

def test_default_preset_known_answers():
    """The law's allocation is Besiroglu et al.'s; the plan's shape is within 2% of it and spends
    the budget at its own FLOPs per token."""
    a = load_preset("besiroglu2024").optimal_allocation([5.88e23, 1e21], level=None)
    assert a["params"].tolist() == pytest.approx([7.30e10, 2.78e9], rel=0.01)
    assert a["tokens"].tolist() == pytest.approx([1.342e12, 6.00e10], rel=0.01)
    for budget, n in ((5.88e23, 7.30e10), (1e21, 2.78e9)):
        p = make_plan(budget=budget)
        assert p.params == pytest.approx(n, rel=0.02)
        assert p.training_flops == pytest.approx(budget, rel=1e-9)
        assert p.tokens == pytest.approx(budget / p.shape.flops_per_token, rel=1e-9)
    assert p.loss == pytest.approx(float(load_preset("besiroglu2024").predict(p.params, p.tokens)), rel=1e-9)
    assert p.loss == pytest.approx(2.308, abs=2e-3)  # the law at (2.78e9, 6.0e10)
    assert p.loss_low < p.loss < p.loss_high
    assert "calibrated" in p.loss_interval


def test_hoffmann_preset_known_answer():
    a = load_preset("hoffmann2022").optimal_allocation(5.88e23, level=None)
    assert a["params"][0] == pytest.approx(3.25e10, rel=0.01)
    assert a["tokens"][0] == pytest.approx(3.02e12, rel=0.01)
    p = make_plan("hoffmann2022", 5.88e23)
    assert p.params == pytest.approx(3.25e10, rel=0.02)
    assert p.loss_low is None  # no published uncertainty


def test_deepseek_rule_reproduces_paper_example():
    assert deepseek_lr(1e21) == pytest.approx(7.4e-4, rel=0.01)
    assert deepseek_batch(1e21) == pytest.approx(2.2e6, rel=0.03)


def test_every_preset_loads_and_plans():
    names = [p["name"] for p in list_presets()]
    assert {"besiroglu2024", "hoffmann2022", "kaplan2020", "muennighoff2023"} <= set(names)
    for name in names:
        p = make_plan(name, 1e21)
        assert p.params > 0 and p.tokens > 0 and math.isfinite(p.loss)
        assert name in p.sources["loss"]


# --- invariants -----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(log_budget=st.floats(17, 25), vocab=st.sampled_from([32000, 50304, 128256]))
def test_shape_parameter_count_within_2_percent(log_budget, vocab):
    n = float(load_preset("besiroglu2024").allocation(10 ** log_budget, level=None)["params"][0])
    if 2 * vocab * 64 > 0.25 * n:  # embeddings would dominate the model: a shape or a clear error
        try:
            shape_for_params(n, vocab_size=vocab)
        except InputError as exc:
            assert "give the vocabulary your runs use" in str(exc)
        return
    s = shape_for_params(n, vocab_size=vocab)
    assert abs(s.params / n - 1) <= 0.02
    assert s.d_model == s.n_heads * s.d_head
    assert s.flops_per_token > 6 * s.non_embedding_params


@settings(max_examples=100, deadline=None)
@given(hours=st.floats(1e-2, 1e8), mfu=st.floats(0.05, 1.0), gpu=st.sampled_from(["a100", "h100", "mi300x", "tpu-v5e"]),
       price=st.floats(0.1, 50))
def test_budget_unit_round_trip(hours, mfu, gpu, price):
    b = Budget.from_gpu_hours(hours, gpu=gpu, mfu=mfu, price_per_hour=price)
    assert b.gpu_hours == pytest.approx(hours, rel=1e-9)
    assert Budget(b.flops, gpu=gpu, mfu=mfu).gpu_hours == pytest.approx(hours, rel=1e-9)
    u = Budget.from_usd(b.cost_usd, price, gpu=gpu, mfu=mfu)
    assert u.flops == pytest.approx(b.flops, rel=1e-9)


def test_plan_numbers_are_consistent():
    p = make_plan(budget=Budget(3e22, gpu="h100", mfu=0.4, price_per_hour=2.5))
    assert p.training_flops == pytest.approx(3e22, rel=1e-9)  # the shape's own FLOPs per token
    assert p.steps * p.batch_tokens >= p.tokens
    assert p.batch_tokens == p.batch_sequences * p.shape.seq_len
    assert p.budget.cost_usd == pytest.approx(p.budget.gpu_hours * 2.5)
    row = p.to_row()
    for key in ("budget_flops", "params", "tokens", "tokens_per_param", "loss", "loss_low", "loss_high",
                "model_d_model", "model_n_layers", "model_n_heads", "model_d_ff", "model_vocab_size",
                "model_seq_len", "model_flops_per_token", "steps", "batch_tokens", "batch_sequences",
                "lr", "warmup_steps", "schedule", "weight_decay", "gpu_hours", "cost_usd",
                "decades_beyond_fit", "risk_level", "model_n_kv_heads"):
        assert key in row, key
    assert not any(k.startswith("source") for k in row) and "risks" not in row  # words live in the JSON
    assert p.to_frame().iloc[0]["params"] == p.params
    d = p.to_dict()
    assert "not fitted to your runs" in d["sources"]["lr"]
    assert d["shape"]["n_kv_heads"] == p.shape.kv_heads and d["loss"]["point"] == p.loss


def test_extrapolation_is_flagged():
    p = make_plan(budget=1e25)
    assert p.decades_beyond_fit > 2
    assert any(r.startswith("HIGH") and "beyond the fitted range" in r for r in p.risks)
    assert [r for r in make_plan(budget=1e21).risks if "the loss is the preset's" not in r] == []


def test_inference_aware_plan_spends_the_budget_and_is_cheaper_over_lifetime():
    plans = make_plans(budgets=[1e21], inference_tokens=2e12)
    opt, inf, same = plans
    assert (opt.variant, inf.variant, same.variant) == ("compute-optimal", "inference-aware", "same-loss")
    assert inf.training_flops == pytest.approx(1e21, rel=1e-9)  # within the training budget, exactly
    assert inf.params < opt.params and inf.tokens > opt.tokens and inf.loss > opt.loss
    assert inf.extra["lifetime_flops"] < opt.extra["lifetime_flops"]
    assert same.loss == pytest.approx(opt.loss, rel=1e-4) and same.params < opt.params
    assert same.extra["extra_training_flops"] > 0  # the same-loss model trains beyond the budget, and says so
    # more serving, a smaller model; none, the compute-optimal one
    sizes = [make_plan(budget=1e21, inference_tokens=t, level=None).params for t in (1e9, 1e12, 1e13)]
    assert sizes[0] == pytest.approx(opt.params, rel=0.1) and sizes[0] > sizes[1] > sizes[2]


@pytest.mark.parametrize("log_budget", range(18, 27))
def test_preset_plans_have_production_shapes(log_budget):
    """Heads divide into 8-way tensor parallelism and into the 8 kv heads, d_model and d_ff are
    multiples of 128, depth is even, and the counts are exact for that shape."""
    from scaling_core.shape import decoder_flops_per_token

    p = make_plan(budget=10.0 ** log_budget, level=None)
    s = p.shape
    assert s.production and s.n_heads % 8 == 0 and s.n_heads % s.kv_heads == 0 and s.kv_heads == 8
    assert s.d_model % 128 == 0 and s.d_ff % 128 == 0 and s.n_layers % 2 == 0 and s.vocab_size % 128 == 0
    assert s.d_head in (64, 128) and s.n_heads * s.d_head == s.d_model
    kv = s.kv_heads * s.d_head
    per_layer = 2 * s.d_model ** 2 + 2 * s.d_model * kv + 3 * s.d_model * s.d_ff + 2 * s.d_model
    assert s.params == s.n_layers * per_layer + s.d_model + 2 * s.vocab_size * s.d_model
    assert s.flops_per_token == decoder_flops_per_token(s.d_model, s.n_layers, s.d_ff, s.vocab_size, s.seq_len, kv)
    assert p.params == pytest.approx(float(load_preset("besiroglu2024").allocation(10.0 ** log_budget, level=None)
                                           ["params"][0]), rel=0.02)


def test_steps_and_lr_move_smoothly_with_the_budget():
    plans = make_plans(budgets=[10 ** (20 + k / 4) for k in range(13)], level=None)
    steps, lrs = [p.steps for p in plans], [p.lr for p in plans]
    assert steps == sorted(steps) and lrs == sorted(lrs, reverse=True)
    for p in plans:  # the rounded batch stays within ~3% of the rule, and the lr follows it by sqrt
        assert p.batch_sequences % 2 ** max(0, int(math.log2(p.batch_sequences / 32))) == 0


def test_kv_heads_and_tp_options():
    p = make_plan(budget=1e22, level=None, kv_heads=4, tp=16)
    assert p.shape.kv_heads == 4 and p.shape.n_heads % 16 == 0
    with pytest.raises(InputError, match="kv_heads: must be a positive integer"):
        make_plan(budget=1e22, kv_heads=0)


def test_plan_from_a_fit_object_and_its_json(tmp_path):
    fit = fit_loss_surface(isoflop_sweep(BESIROGLU, noise=0.003), bootstrap=50)
    p = make_plan(fit, 1e19)
    path = fit.to_json(tmp_path / "fit.json")
    q = make_plan(str(path), 1e19)
    assert p.params == pytest.approx(q.params) and p.loss_high == pytest.approx(q.loss_high)


# --- the command ----------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(plan_cli, [str(a) for a in args])


def test_cli_single_budget_writes_csv(tmp_path):
    out = tmp_path / "plan.csv"
    res = run("--budget", "1e21", "--out", out)
    assert res.exit_code == 0, res.output
    assert "parameters N        2.7" in res.output and "sources:" in res.output
    df = pd.read_csv(out)
    assert len(df) == 1 and df["params"].iloc[0] == pytest.approx(2.78e9, rel=0.01)


def test_cli_sweep_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    res = run("--budget", "1e19:1e24:11", "--out", out, "--plot", png)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 11 and df["budget_flops"].is_monotonic_increasing
    assert png.stat().st_size > 10_000


def test_cli_units():
    res = run("--budget", "2000", "--unit", "gpu-hours", "--gpu", "h100", "--mfu", "0.4")
    assert res.exit_code == 0, res.output and "2.85e+21" in res.output
    res = run("--budget", "50000", "--unit", "usd", "--price-per-hour", "2.5", "--gpu", "h100")
    assert res.exit_code == 0 and "$50,000" in res.output
    res = run("--budget", "100", "--unit", "gpu-hours", "--peak-tflops", "500")
    assert res.exit_code == 0, res.output


def test_cli_list_presets_and_sources(tmp_path):
    res = run("--list-presets")
    assert res.exit_code == 0 and "besiroglu2024" in res.output and "arXiv" in res.output
    csv = tmp_path / "runs.csv"
    isoflop_sweep(BESIROGLU, noise=0.003).to_csv(csv, index=False)
    res = run("--budget", "1e19", "--results", csv)
    assert res.exit_code == 0, res.output and "fit (chinchilla" in res.output
    res = run("--budget", "1e21", "--inference-tokens", "1e12")
    assert res.exit_code == 0 and "inference-aware" in res.output


@pytest.mark.parametrize("args, message", [
    (["--budget", "-5"], "--budget: must be a finite positive number"),
    (["--budget", "abc"], "--budget: must be a positive number or START:STOP:COUNT"),
    (["--budget", "1e19:1e18:3"], "0 < START < STOP"),
    (["--budget", "1e19:1e20:2.5"], "COUNT must be a whole number"),
    (["--budget", "1e21", "--preset", "nope"], "preset: must be one of"),
    (["--budget", "1e21", "--gpu", "z80"], "gpu: must be one of"),
    (["--budget", "10", "--unit", "gpu-hours"], "needs --gpu or --peak-tflops"),
    (["--budget", "10", "--unit", "usd", "--gpu", "h100"], "needs --price-per-hour"),
    (["--budget", "1e21", "--mfu", "1.5"], "mfu: must be in (0, 1]"),
    (["--budget", "1e21", "--level", "2"], "--level"),
    (["--budget", "1e21", "--preset", "hoffmann2022", "--fit", "x.json"], "at most one source"),
    (["--budget", "1e21", "--fit", "missing.json"], "no file at"),
    (["--budget", "1e21", "--hparams", "guess"], "hparams: must be one of"),
])
def test_cli_bad_input_exits_2_without_output(tmp_path, args, message):
    out = tmp_path / "plan.csv"
    out.write_text("keep me")
    res = run(*args, "--out", out)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert out.read_text() == "keep me"


def test_cli_corrupt_and_foreign_fit_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    res = run("--budget", "1e21", "--fit", bad)
    assert res.exit_code == 2 and "not valid JSON" in res.output
    bad.write_text('{"hello": 1}')
    res = run("--budget", "1e21", "--fit", bad)
    assert res.exit_code == 2 and "not a loss-surface fit" in res.output


def test_cli_results_without_needed_columns(tmp_path):
    csv = tmp_path / "runs.csv"
    pd.DataFrame({"size": [1, 2], "loss": [3, 2]}).to_csv(csv, index=False)
    res = run("--budget", "1e21", "--results", csv)
    assert res.exit_code == 2 and "column 'params' not found" in res.output


def test_parse_budgets():
    assert parse_budgets("1e21") == [1e21]
    sweep = parse_budgets("1e19:1e23:5")
    assert len(sweep) == 5 and sweep[0] == pytest.approx(1e19) and sweep[-1] == pytest.approx(1e23)
    with pytest.raises(InputError):
        parse_budgets("1:2:3:4")


def test_cli_results_from_a_probes_export(tmp_path):
    sweep = isoflop_sweep(BESIROGLU, noise=0.003)
    export = pd.DataFrame({"params": sweep["params"] * 0.8, "params_total": sweep["params"],
                           "tokens": sweep["tokens"], "val_loss": sweep["loss"], "final": True})
    stale = export.assign(final=False, val_loss=export["val_loss"] + 1.0)  # mid-run rows are ignored
    csv = tmp_path / "results.csv"
    pd.concat([export, stale]).to_csv(csv, index=False)
    out = tmp_path / "plan.csv"
    res = run("--budget", "1e19", "--results", csv, "--out", out)
    assert res.exit_code == 0, res.output
    # N is the export's non-embedding count (params), as the fit and the plan say
    direct = make_plan(fit_loss_surface(export, n="params", loss="val_loss", bootstrap=0), 1e19)
    row = pd.read_csv(out).iloc[0]
    assert row["params"] == pytest.approx(direct.params, rel=1e-6)
    assert row["n_kind"] == "non_embedding" and row["params"] == row["model_non_embedding_params"]


def test_the_preset_plan_path_imports_neither_pandas_nor_scipy():
    import subprocess
    import sys

    code = ("import sys; from planner import make_plan; make_plan(budget=1e21); "
            "print(sorted(m for m in ('pandas', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# --- output a person (or a program) reads -------------------------------------------------------

def test_json_output_validates_against_the_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[1] / "planner" / "plan.schema.json").read_text())
    res = run("--budget", "1e21", "--json", "--inference-tokens", "1e12", "--gpu", "h100")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    jsonschema.validate(doc, schema)
    assert [p["variant"] for p in doc["plans"]] == ["compute-optimal", "inference-aware", "same-loss"]
    out = tmp_path / "p.json"
    assert run("--budget", "1e19:1e21:3", "--out", out, "-q").exit_code == 0
    jsonschema.validate(json.loads(out.read_text()), schema)


def test_out_writes_what_its_suffix_says_and_quiet_is_quiet(tmp_path):
    res = run("--budget", "1e21", "--out", tmp_path / "p.txt")
    assert res.exit_code == 2 and "--out: writes .csv or .json" in res.output and not (tmp_path / "p.txt").exists()
    res = run("--budget", "1e21", "--out", tmp_path / "p.csv", "--quiet")
    assert res.exit_code == 0 and res.output == ""
    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 1 and not any(c.startswith("source") for c in df.columns) and len(df.columns) < 60


def test_card_sources_short_unless_explained():
    short, full = run("--budget", "1e21").output, run("--budget", "1e21", "--explain").output
    assert "--explain for each in full" in short and "benchmarks/results/hparam_warmup.json" in full
    assert "hparam_warmup.json" not in short and max(map(len, short.splitlines())) < max(map(len, full.splitlines()))


def test_risks_are_ordered_by_severity_and_say_what_to_do():
    from planner.plan import SEVERITIES, risk_severity

    p = make_plan(budget=1e25)
    ranks = [SEVERITIES.index(risk_severity(r)) for r in p.risks]
    assert ranks == sorted(ranks) and p.risk_level == "HIGH"
    assert all("do:" in r or "fit your own runs" in r for r in p.risks)


@pytest.mark.parametrize("args, message", [
    (["--budget", "2000"], "--unit gpu-hours"),
    (["--budget", "5e6"], "FLOPs is too small to train any model"),
])
def test_a_budget_that_looks_like_hours_or_dollars(args, message):
    res = run(*args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.assign(params=t["params"] / 1e9), "N looks like it is in millions or billions"),
    (lambda t: t.assign(params=t["params"] / 1e6), "N looks like it is in thousands or millions"),
    (lambda t: t.assign(tokens=t["tokens"] / 1e9), "D looks like it is in millions or billions"),
    (lambda t: t.assign(loss=np.exp(t["loss"])), "it looks like a perplexity"),
    (lambda t: t.assign(loss=t["loss"] / 100), "looks like an accuracy"),
])
def test_wrong_units_are_named(tmp_path, mutate, message):
    table = mutate(isoflop_sweep(BESIROGLU, noise=0.003))
    with pytest.raises(InputError, match=message):
        fit_loss_surface(table, bootstrap=0)
    csv = tmp_path / "runs.csv"
    table.to_csv(csv, index=False)
    res = run("--budget", "1e21", "--results", csv)
    assert res.exit_code == 2 and message.split()[0] in res.output and "Traceback" not in res.output


def test_a_nan_row_is_named_by_its_row():
    table = isoflop_sweep(BESIROGLU, noise=0.003)
    table.loc[4, "loss"] = float("nan")
    with pytest.raises(InputError, match=r"first at data row 5 \(line 6 of a CSV with a header; value nan\)"):
        fit_loss_surface(table, bootstrap=0)


def test_cli_and_api_agree():
    from fits.cli import main as fit_cli

    help_text = CliRunner().invoke(fit_cli, ["--help"]).output
    assert "fit hparams" in help_text and "--n-kind" in help_text and "--loss-unit" in help_text
    with pytest.raises(InputError, match="'auto'"):
        fit_loss_surface(isoflop_sweep(BESIROGLU), form="nope", bootstrap=0)
    fit = load_preset("besiroglu2024")
    assert isinstance(fit.predict(1e9, 2e10), float) and fit.predict(np.array([1e9]), np.array([2e10])).shape == (1,)
    assert all(isinstance(v, float) for v in fit.interval(1e9, 2e10))
