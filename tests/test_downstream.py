"""Task-accuracy laws (fits.downstream): recovery of a known two-step law, verdicts, bad input,
and the plan carrying the predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fits import fit_downstream, load_downstream
from fits.downstream import TaskFit, sigmoid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "olmo_ladder_dev.csv"

# the known law: task loss (bits per byte) from (N, D), accuracy from task loss
LAW = dict(E=0.55, A=60.0, B=150.0, alpha=0.3, beta=0.35)
SIG = dict(top=0.92, k=9.0, L0=0.9)


def task_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def ladder(sizes=(2e7, 5e7, 1.2e8, 3e8), mults=(5, 10, 20, 50), chance=0.25, noise=0.004, seed=0,
           flat=False, evals=8):
    """A ladder with checkpoints: every run evaluated at ``evals`` points up to its final D, the 20x
    run repeated with another seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in sizes:
        for i, m in enumerate((*mults, 20)):
            run = f"{N:.0e}-{m}x" + ("-rerun" if i == len(mults) else "")
            Dfin = m * N
            for frac in np.linspace(1 / evals, 1, evals):
                D = frac * Dfin
                L = task_loss(N, D) + rng.normal(0, 0.003)
                acc = (chance + rng.normal(0, noise)) if flat else sigmoid(L, chance, **SIG) + rng.normal(0, noise)
                rows.append({"run": run, "params": N, "tokens": D, "hellaswag_bpb": L,
                             "hellaswag_acc": float(np.clip(acc, 0, 1))})
    return pd.DataFrame(rows)


def test_recovers_known_two_step_law():
    df = ladder()
    down = fit_downstream(df, bootstrap=30, seed=1)
    t = down["hellaswag"]
    assert t.chance == 0.25 and t.chance_known
    assert abs(t.sigmoid["L0"] - SIG["L0"]) < 0.03
    assert abs(t.sigmoid["top"] - SIG["top"]) < 0.05
    # a size beyond the ladder: the two-step prediction is within a point of the truth
    N, D = 8e8, 1.6e10
    truth = float(sigmoid(task_loss(N, D), 0.25, **SIG))
    assert abs(float(t.accuracy(N, D, "two_step")) - truth) < 0.01
    lo, hi = t.interval(N, D, 0.9, "two_step")
    assert lo < truth < hi and hi - lo < 0.15  # calibrated on backtests that fit two and three sizes
    assert t.noise["rerun"] is not None and t.noise["checkpoint"] is not None
    assert t.verdict == "predictable", t.reason
    rec = down.predict(N, D)[0]
    assert rec["accuracy"] is not None and rec["lo"] <= rec["accuracy"] <= rec["hi"]


def test_task_at_chance_is_called_near_chance_and_not_predicted():
    down = fit_downstream(ladder(flat=True), bootstrap=0)
    t = down["hellaswag"]
    assert t.verdict == "near chance"
    assert "chance 0.25" in t.reason
    assert down.predict(1e9, 2e10)[0]["accuracy"] is None


def test_accuracy_without_trend_is_not_monotone():
    df = ladder(flat=True)
    rng = np.random.default_rng(3)
    df["hellaswag_acc"] = 0.25 + rng.uniform(0.05, 0.4, len(df))  # far from chance, no trend
    t = fit_downstream(df, bootstrap=0)["hellaswag"]
    assert t.verdict in ("not monotone", "noisy")


def test_save_load_round_trip(tmp_path):
    down = fit_downstream(ladder(), bootstrap=15)
    path = down.to_json(tmp_path / "down.json")
    back = load_downstream(path)
    a, b = down.predict(5e8, 1e10), back.predict(5e8, 1e10)
    assert [r["verdict"] for r in a] == [r["verdict"] for r in b]
    assert a[0]["accuracy"] == pytest.approx(b[0]["accuracy"]) and a[0]["hi"] == pytest.approx(b[0]["hi"])
    assert isinstance(back["hellaswag"], TaskFit)


@pytest.mark.parametrize("mutate, expect", [
    (lambda df: df.assign(hellaswag_acc=df["hellaswag_acc"] * 100), "fractions in [0, 1]"),
    (lambda df: df.drop(columns=["hellaswag_bpb"]), "no task columns recognised"),
    (lambda df: df[df["params"] == df["params"].min()], "one model size only"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, mutate, expect):
    from fits.cli import downstream_main

    path = tmp_path / "runs.csv"
    mutate(ladder()).to_csv(path, index=False)
    res = CliRunner().invoke(downstream_main, [str(path), "--bootstrap", "0"])
    assert res.exit_code == 2, res.output
    assert expect in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_plots_folder_under_a_file_is_one_line_exit_2(tmp_path):
    from fits.cli import downstream_main

    path = tmp_path / "runs.csv"
    ladder().to_csv(path, index=False)
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(downstream_main, [str(path), "--bootstrap", "0", "--out", str(tmp_path / "d.json"),
                                               "--plots", str(tmp_path / "afile" / "plots")])
    assert res.exit_code == 2 and "--plots" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "d.json").exists()  # checked before any work is written


def test_missing_task_loss_column_named(tmp_path):
    from fits.cli import downstream_main

    path = tmp_path / "runs.csv"
    ladder().to_csv(path, index=False)
    res = CliRunner().invoke(downstream_main, [str(path), "--task-loss", "nope_{task}", "--accuracy", "{task}_acc"])
    assert res.exit_code == 2 and "task_loss: no column matches 'nope_{task}'" in res.output


def test_mapping_file_and_cli_then_plan_carries_accuracy(tmp_path):
    from fits.cli import downstream_main
    from planner.cli import main as plan_main

    df = ladder().rename(columns={"hellaswag_bpb": "hs loss", "hellaswag_acc": "hs acc"})
    runs = tmp_path / "runs.csv"
    df.to_csv(runs, index=False)
    (tmp_path / "map.json").write_text(json.dumps({"hs": {"loss": "hs loss", "accuracy": "hs acc", "chance": 0.25}}))
    out = tmp_path / "down.json"
    res = CliRunner().invoke(downstream_main, [str(runs), "--mapping", str(tmp_path / "map.json"), "--bootstrap", "10",
                                               "--out", str(out), "--at", "8e8,1.6e10",
                                               "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert "hs" in res.output and out.exists() and (tmp_path / "down_tasks.csv").exists()
    assert (tmp_path / "plots" / "hs.png").stat().st_size > 1000
    res = CliRunner().invoke(plan_main, ["--budget", "1e21", "--downstream", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)["plans"][0]["extra"]["downstream"][0]
    assert rec["task"] == "hs" and rec["verdict"] in ("predictable", "unreliable", "saturating")
    card = CliRunner().invoke(plan_main, ["--budget", "1e21", "--downstream", str(out)])
    assert "task accuracy" in card.output and "hs" in card.output
    csv = tmp_path / "plan.csv"
    CliRunner().invoke(plan_main, ["--budget", "1e21", "--downstream", str(out), "--out", str(csv)])
    cols = pd.read_csv(csv).columns
    assert ("acc_hs" in cols) == (rec["accuracy"] is not None)


def test_plan_rejects_a_loss_fit_as_downstream(tmp_path):
    from planner.cli import main as plan_main

    bad = tmp_path / "fit.json"
    bad.write_text(json.dumps({"form": "chinchilla"}))
    res = CliRunner().invoke(plan_main, ["--budget", "1e21", "--downstream", str(bad)])
    assert res.exit_code == 2 and "not a downstream fit" in res.output


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/olmo_ladder_dev.csv not present")
def test_olmo_ladder_smaller_sizes_predict_the_largest():
    d = pd.read_csv(SHARED)
    train = d[d["params"] < 1e9]
    down = fit_downstream(train, d="throughput/total_tokens", bootstrap=0,
                          tasks=["hellaswag_val_rc_5shot", "mmlu_stem_val_rc_5shot", "piqa_val_rc_5shot"])
    assert down["mmlu_stem_val_rc_5shot"].verdict == "near chance"
    final = d[d["params"] > 1e9].sort_values("_step").groupby("run").tail(1)
    t = down["piqa_val_rc_5shot"]
    pred = t.accuracy(final["params"].to_numpy(), final["throughput/total_tokens"].to_numpy())
    err = np.abs(pred - final["eval/downstream/piqa_val_rc_5shot_len_norm"].to_numpy())
    assert err.mean() < 0.02
