"""Probe sweeps on Ray (a local cluster) and through submitit (its local cluster standing in for
Slurm): the same run store, the same guarantees, a worker killed mid-run retried and resumed."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fits import InputError  # noqa: E402
from probes.sweep import expand_grid, export_results, run_sweep  # noqa: E402

SPEC = {"grid": {"lr": [3e-3, 1e-2], "seed": [0, 1], "tokens": [16384, 32768]},
        "model": {"width": 32, "depth": 1, "d_head": 16, "base_width": 32, "seq_len": 32},
        "train": {"batch_size": 4, "eval_every": 32, "checkpoint_every": 16, "threads": 1},
        "data": {"corpus": "stdlib"}}


def _complete(out: Path, configs) -> None:
    """Every run finished, every (run, tokens) final row exactly once, no partial line."""
    rows = export_results(out, final_only=True)
    assert sorted(rows["run_id"].unique()) == sorted(c.key() for c in configs)
    counts = rows.groupby(["run_id", "tokens"]).size()
    assert len(counts) == 2 * len(configs) and (counts == 1).all(), counts
    for c in configs:
        assert (out / c.key() / "done.json").exists()
        text = (out / c.key() / "metrics.jsonl").read_text()
        assert text.endswith("\n")


def _kill_one_worker_mid_run(out: Path, stop: threading.Event, killed: list) -> None:
    """SIGKILL the first process found training a run that has checkpointed but not finished."""
    while not stop.is_set() and not killed:
        for d in out.iterdir() if out.is_dir() else []:
            lock, ckpt = d / "lock", d / "ckpt.pt"
            if lock.is_file() and ckpt.is_file() and not (d / "done.json").exists():
                try:
                    pid = int(lock.read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                except (ValueError, IndexError, ProcessLookupError, PermissionError):
                    continue
                killed.append((d.name, pid))
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_matches_a_local_sweep(tmp_path):
    pytest.importorskip("ray")
    configs = expand_grid(SPEC)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_worker_mid_run, args=(tmp_path / "ray", stop, killed))
    killer.start()
    try:
        statuses = run_sweep(configs, tmp_path / "ray", executor="ray", threads=1, progress=False,
                             options={"num_cpus": 2})
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: the runs finished before one checkpointed"
    assert all(not s.startswith("failed") for s in statuses.values()), statuses
    _complete(tmp_path / "ray", configs)
    # the killed run resumed from its checkpoint; every loss equals an uninterrupted local sweep's
    run_sweep(configs, tmp_path / "local", workers=1, threads=1, progress=False)
    a = export_results(tmp_path / "ray", final_only=True).set_index(["run_id", "tokens"])["val_loss"]
    b = export_results(tmp_path / "local", final_only=True).set_index(["run_id", "tokens"])["val_loss"]
    assert (a.sort_index() - b.sort_index()).abs().max() < 1e-6
    # a second sweep trains nothing again
    again = run_sweep(configs, tmp_path / "ray", executor="ray", threads=1, progress=False, options={"num_cpus": 2})
    assert set(again.values()) == {"skipped"}


@pytest.mark.slow
def test_submitit_sweep_fills_the_same_store(tmp_path):
    pytest.importorskip("submitit")
    configs = expand_grid({**SPEC, "grid": {"lr": [3e-3], "seed": [0, 1], "tokens": [16384]}})
    statuses = run_sweep(configs, tmp_path, executor="slurm", threads=1, progress=False,
                         options={"cluster": "local", "timeout_min": 10})
    assert set(statuses.values()) == {"trained"}, statuses
    rows = export_results(tmp_path, final_only=True)
    assert len(rows) == 2 and rows["run_id"].is_unique


def test_executor_choices_and_missing_slurm_are_one_line_errors(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from probes.cli import main as probe

    with pytest.raises(InputError, match="executor: must be one of"):
        run_sweep([], tmp_path, executor="k8s")
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nlr = [0.01]\n[model]\nwidth = 32\ndepth = 1\n[train]\ntokens = [4096]\n')
    r = CliRunner().invoke(probe, ["run", str(grid), "--out", str(tmp_path / "runs"), "--executor", "slurm"])
    assert r.exit_code == 2 and "sbatch is not on the PATH" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(probe, ["run", str(grid), "--out", str(tmp_path / "runs"), "--address", "auto"])
    assert r.exit_code == 2 and "--address: applies to --executor ray only" in r.output
    pytest.importorskip("ray")
    r = CliRunner().invoke(probe, ["run", str(grid), "--out", str(tmp_path / "runs"), "--executor", "ray",
                                   "--address", "127.0.0.1:1"])
    assert r.exit_code == 2 and "no Ray cluster answers at" in r.output and "Traceback" not in r.output


def test_mlflow_round_trip_equals_the_export_and_never_duplicates(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from click.testing import CliRunner

    from fits._data import read_table
    from probes.cli import main as probe
    from probes.sweep import sync_mlflow

    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nlr = [0.003, 0.01]\ntokens = [4096, 8192]\n[model]\nwidth = 32\ndepth = 1\n'
                    'seq_len = 32\nbase_width = 32\n[train]\nbatch_size = 4\neval_every = 16\n'
                    'target_losses = [4.0]\n')
    out = tmp_path / "runs"
    r = CliRunner().invoke(probe, ["run", str(grid), "--out", str(out), "--threads", "1", "--quiet", "--mlflow"])
    assert r.exit_code == 0, r.output
    assert "new rows logged" in r.output
    uri = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    back = read_table(f"mlflow:{uri}#probes")
    want = export_results(out)
    key = ["run_id", "step", "phase", "tokens"]
    back = back.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert len(back) == len(want) and set(want.columns) <= set(back.columns)
    for col in ("val_loss", "tokens", "final", "phase", "lr", "width", "device", "target_loss"):
        a, b = back[col], want[col]
        assert ((a == b) | (a.isna() & b.isna())).all(), col
    from fits.cli import hparams_main

    r = CliRunner().invoke(hparams_main, [f"mlflow:{uri}#probes", "--bootstrap", "0"])
    assert r.exit_code == 0 and "lr_opt = exp(" in r.output, r.output
    assert sync_mlflow(out, uri) == 0  # a second sync logs nothing new
    assert len(read_table(f"mlflow:{uri}#probes")) == len(want)
    with pytest.raises(InputError, match="mlflow:<tracking uri>#<experiment>"):
        read_table("mlflow:nothing")
    with pytest.raises(InputError, match="no MLflow experiment"):
        read_table(f"mlflow:{uri}#other")
