"""Probe training on CPU: tiny runs, WSD branches, determinism, kill-and-resume, export, bad input."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fits import InputError  # noqa: E402
from probes.cli import main as probe_cli  # noqa: E402
from probes.config import ProbeConfig  # noqa: E402
from probes.data import load_corpus  # noqa: E402
from probes.sweep import export_results, expand_grid, load_grid  # noqa: E402
from probes.train import train_probe  # noqa: E402

TINY = {"model": {"width": 32, "depth": 1, "d_head": 16, "base_width": 32, "seq_len": 32},
        "train": {"tokens": [8192, 16384], "batch_size": 8, "eval_every": 16, "lr": 1e-2,
                  "checkpoint_every": 16},
        "data": {"corpus": "stdlib"}}


def cfg(**over):
    d = json.loads(json.dumps(TINY))
    for sec, kv in over.items():
        d[sec].update(kv)
    return ProbeConfig.from_dict(d)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    load_corpus(cfg().data, path)  # tokenise the standard library once
    return path


def rows(result):
    return pd.read_json(result.run_dir / "metrics.jsonl", lines=True)


def test_tiny_run_records_rows_and_learns(tmp_path, cache):
    r = train_probe(cfg(), tmp_path, cache, progress=False)
    df = rows(r)
    final = df[df["final"]]
    assert list(final["tokens"]) == [8192, 16384]  # one end-of-cooldown row per token count
    assert final["val_loss"].iloc[-1] < np.log(257) - 1.0
    for col in ("run_id", "width", "depth", "n_heads", "params", "params_total", "tokens", "flops", "lr",
                "batch_tokens", "seq_len", "seed", "step", "train_loss", "val_loss", "val_bpb", "schedule",
                "wall_s", "tokens_per_s", "mfu", "grad_noise_scale", "diverged", "corpus", "tokenizer",
                "vocab_size", "device", "code_version"):
        assert col in df, col
    assert (df["val_bpb"] > 0).all() and not df["diverged"].any()
    assert json.loads((r.run_dir / "done.json").read_text())["rows"] == len(df)
    again = train_probe(cfg(), tmp_path, cache, progress=False)  # finished: skipped
    assert not again.resumed and len(rows(again)) == len(df)


def test_same_seed_same_losses(tmp_path, cache):
    a = rows(train_probe(cfg(), tmp_path / "a", cache, progress=False))
    b = rows(train_probe(cfg(), tmp_path / "b", cache, progress=False))
    np.testing.assert_array_equal(a["val_loss"].to_numpy(), b["val_loss"].to_numpy())


def test_branch_does_not_disturb_the_main_run(tmp_path, cache):
    """The main run with a branch cooldown equals a run that records only the largest count."""
    # one warmup length for both (by default it is a fraction of the shortest count)
    both = rows(train_probe(cfg(train={"warmup_steps": 3}), tmp_path / "a", cache, progress=False))
    only = rows(train_probe(cfg(train={"tokens": [16384], "warmup_steps": 3}), tmp_path / "b", cache,
                            progress=False))
    assert both[both["final"]]["val_loss"].iloc[-1] == pytest.approx(only[only["final"]]["val_loss"].iloc[-1], abs=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path, cache, monkeypatch):
    c = cfg()
    full = rows(train_probe(c, tmp_path / "full", cache, progress=False))
    # interrupt after the checkpoint at step 32 by failing the next training step
    import probes.train as T

    calls = {"n": 0}
    real = T._Trainer.train_step

    def flaky(self, step, end):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real(self, step, end)

    monkeypatch.setattr(T._Trainer, "train_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_probe(c, tmp_path / "cut", cache, progress=False)
    monkeypatch.setattr(T._Trainer, "train_step", real)
    res = train_probe(c, tmp_path / "cut", cache, progress=False)
    assert res.resumed
    resumed = rows(res)
    assert len(resumed) == len(full)
    np.testing.assert_allclose(resumed["val_loss"], full["val_loss"], rtol=1e-6)


@pytest.mark.slow
def test_kill_9_mid_run_leaves_no_partial_or_duplicate_rows(tmp_path, cache):
    grid = tmp_path / "grid.toml"
    grid.write_text("""
[grid]
width = [32]
tokens = [65536, 131072]
[model]
depth = 1
base_width = 32
seq_len = 32
[train]
batch_size = 8
eval_every = 8
checkpoint_every = 48
""")
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "probes.cli", "run", str(grid), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = list(out.glob("*/metrics.jsonl"))
        if found and found[0].read_text().count("\n") >= 9:
            metrics = found[0]
            break
        time.sleep(0.05)
    assert metrics is not None, "the run never wrote rows"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (metrics.parent / "done.json").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    df = export_results(out)
    assert not df.duplicated(["run_id", "step", "phase", "tokens"]).any()
    assert df["final"].sum() == 2
    assert (metrics.parent / "done.json").exists()


def test_divergence_is_recorded_not_hidden(tmp_path, cache):
    r = train_probe(cfg(train={"lr": 50.0, "grad_clip": 0.0}), tmp_path, cache, progress=False)
    assert r.diverged
    df = rows(r)
    assert df["diverged"].iloc[-1] and df["phase"].iloc[-1] == "diverged"


def test_repeated_data_and_label_noise(tmp_path, cache):
    r = train_probe(cfg(data={"unique_tokens": 4096, "label_noise": 0.2}), tmp_path, cache, progress=False)
    df = rows(r)
    assert df["unique_tokens"].iloc[0] == 4096
    assert df["epoch"].iloc[-1] == pytest.approx(16384 / 4096)


def test_save_pretrained_round_trip(tmp_path, cache):
    from transformers import AutoModelForCausalLM

    r = train_probe(cfg(train={"save_model": True, "tokens": [4096]}), tmp_path, cache, progress=False)
    loaded = AutoModelForCausalLM.from_pretrained(r.run_dir / "model")
    from probes.model import build_model
    fresh = build_model(cfg().model)
    fresh.load_state_dict(loaded.state_dict())
    x = torch.randint(0, 257, (2, 16))
    torch.testing.assert_close(loaded(input_ids=x).logits, fresh(input_ids=x).logits)
    assert loaded.config.logits_scaling == fresh.config.logits_scaling


def test_gradient_noise_scale_and_target_losses(tmp_path, cache):
    r = train_probe(cfg(train={"gns_every": 1, "target_losses": [5.0, 0.1]}), tmp_path, cache, progress=False)
    df = rows(r)
    stable = df[df["phase"] == "stable"]
    assert np.isfinite(stable["gns_trace"]).all()
    hits = df[df["phase"] == "target"]
    assert list(hits["target_loss"]) == [5.0]  # 0.1 is never reached


# --- grids, CLI, bad input ------------------------------------------------------------------

def test_grid_expansion_and_unknown_keys():
    configs = expand_grid({"grid": {"width": [32, 64], "lr": [1e-3, 1e-2], "tokens": [1000, 2000]},
                           "model": {"base_width": 32}})
    assert len(configs) == 4 and all(c.train.tokens == (1000, 2000) for c in configs)
    assert len({c.key() for c in configs}) == 4
    with pytest.raises(InputError, match="unknown key 'widht'"):
        expand_grid({"grid": {"widht": [32]}})
    with pytest.raises(InputError, match=r"unknown key\(s\) \['colour'\] in \[model\]"):
        expand_grid({"model": {"colour": "red"}})
    assert len(load_grid("default")) == 5  # one run per ladder width


def test_bad_inputs(tmp_path, cache):
    with pytest.raises(InputError, match="less than one step"):
        train_probe(cfg(train={"tokens": [10]}), tmp_path, cache, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    with pytest.raises(InputError, match="empty train or validation split"):
        train_probe(cfg(data={"corpus": str(empty)}), tmp_path, cache, progress=False)
    bad = tmp_path / "tokens.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="cannot read token file"):
        train_probe(cfg(data={"corpus": str(bad)}), tmp_path, cache, progress=False)


def test_token_file_corpus(tmp_path, cache):
    arr = (np.arange(50_000) * 7 % 200).astype(np.uint16)
    path = tmp_path / "toks.bin"
    arr.tofile(path)
    r = train_probe(cfg(data={"corpus": str(path)}, model={"vocab_size": 200}, train={"tokens": [4096]}),
                    tmp_path / "runs", cache, progress=False)
    assert np.isnan(rows(r)["val_bpb"]).all()  # bytes per token unknown for pre-tokenised data


def test_cli_run_status_export_design(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nwidth = [32]\ntokens = [4096]\n[model]\ndepth = 1\nbase_width = 32\nseq_len = 32\n'
                    '[train]\nbatch_size = 8\neval_every = 8\n')
    out = tmp_path / "runs"
    runner = CliRunner()
    res = runner.invoke(probe_cli, ["run", str(grid), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "1 trained" in res.output
    res = runner.invoke(probe_cli, ["run", str(grid), "--out", str(out), "--quiet"])
    assert "1 skipped" in res.output
    res = runner.invoke(probe_cli, ["status", str(out)])
    assert res.exit_code == 0 and "done" in res.output
    res = runner.invoke(probe_cli, ["export", str(out), str(tmp_path / "r.csv"), "--final-only"])
    assert res.exit_code == 0 and len(pd.read_csv(tmp_path / "r.csv")) == 1
    res = runner.invoke(probe_cli, ["design", "--budget", "1e15"])
    assert res.exit_code == 0
    from probes.sweep import expand_grid
    import tomllib
    configs = expand_grid(tomllib.loads(res.output))
    total = sum(c.model.flops_per_token * c.train.tokens[-1] for c in configs)
    assert total == pytest.approx(1e15, rel=0.05)  # the design spends the budget
    per_level = {}
    for c in configs:  # every level gathers the widths that reach it
        for t in c.train.tokens:
            level = round(math.log10(c.model.flops_per_token * t), 1)
            per_level.setdefault(level, set()).add(c.model.width)
    assert len(per_level) >= 3 and sum(len(w) >= 3 for w in per_level.values()) >= 3
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nwidht = [32]\n")
    res = runner.invoke(probe_cli, ["run", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "unknown key 'widht'" in res.output and "Traceback" not in res.output
    res = runner.invoke(probe_cli, ["design", "--budget", "1e6"])
    assert res.exit_code == 2 and "less than one training step" in res.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_on_gpu_records_mfu(tmp_path, cache):
    r = train_probe(cfg(train={"device": "cuda"}), tmp_path, cache, progress=False)
    df = rows(r)
    assert df["device"].str.contains("NVIDIA|AMD", regex=True).all()
    assert (df["tokens_per_s"] > 0).all()
    assert df["final"].sum() == 2 and not df["diverged"].any()


@pytest.mark.slow
def test_two_workers_share_a_sweep(tmp_path):
    from probes.sweep import run_sweep

    configs = expand_grid({"grid": {"width": [32, 48], "tokens": [4096]},
                           "model": {"depth": 1, "base_width": 16, "seq_len": 32},
                           "train": {"batch_size": 8, "eval_every": 8}})
    statuses = run_sweep(configs, tmp_path, workers=2, progress=False)
    assert sorted(statuses.values()) == ["trained", "trained"]
    df = export_results(tmp_path, final_only=True)
    assert sorted(df["width"]) == [32, 48]


# --- schedules that measure the model, threads, dead workers ---------------------------------

def test_warmup_is_a_fraction_of_the_shortest_branch_and_recorded():
    from probes.train import _Schedule

    t = cfg(train={"tokens": [8192, 65536], "warmup_frac": 0.25}).train
    sched = _Schedule(t, [32, 256])
    assert sched.warmup == 8                            # 25% of the shortest count, not the longest
    assert sched.cooldown_start(32) > sched.warmup      # the short branch keeps a stable phase
    assert _Schedule(cfg(train={"warmup_steps": 5}).train, [32, 256]).warmup == 5


def test_branch_equals_a_standalone_run_of_that_length(tmp_path, cache):
    """A branch's end-of-cooldown loss is what a standalone run of that size and length reaches:
    same warmup, same stable phase, same cooldown (bit-for-bit here: same seed, same data)."""
    both = train_probe(cfg(train={"tokens": [8192, 16384], "warmup_steps": 4}), tmp_path / "a", cache,
                       progress=False)
    alone = train_probe(cfg(train={"tokens": [8192], "warmup_steps": 4}), tmp_path / "b", cache,
                        progress=False)
    b, a = rows(both), rows(alone)
    branch = b[b["final"] & (b["tokens"] == 8192)]["val_loss"].iloc[0]
    standalone = a[a["final"]]["val_loss"].iloc[0]
    assert branch == pytest.approx(standalone, abs=1e-4)


def test_rows_record_threads_versions_and_schedule(tmp_path, cache):
    r = train_probe(cfg(train={"threads": 1, "tokens": [4096]}), tmp_path, cache, progress=False)
    df = rows(r)
    assert (df["threads"] == 1).all() and (df["torch_version"] == torch.__version__).all()
    for col in ("transformers_version", "python_version", "warmup_steps", "d_head", "ffn_ratio", "base_depth"):
        assert col in df, col
    # threads do not change the run's identity
    assert cfg(train={"threads": 1}).key() == cfg(train={"threads": 2}).key()


def test_a_run_that_fails_does_not_fail_the_sweep(tmp_path):
    from probes.sweep import run_sweep

    good = expand_grid({"grid": {"width": [32], "tokens": [2048]},
                        "model": {"depth": 1, "base_width": 16, "seq_len": 32}, "train": {"batch_size": 8}})
    bad = expand_grid({"grid": {"width": [32], "tokens": [2048]},
                       "model": {"depth": 1, "base_width": 16, "seq_len": 32, "vocab_size": 10},
                       "train": {"batch_size": 8}})  # the byte corpus needs 257 tokens: this run fails
    statuses = run_sweep(good + bad, tmp_path, workers=2, progress=False)
    assert statuses[good[0].key()] == "trained"
    assert statuses[bad[0].key()].startswith("failed")
    from probes.sweep import sweep_status

    st = sweep_status(tmp_path).set_index("run_id")
    assert st.loc[bad[0].key(), "status"] == "failed" and st.loc[bad[0].key(), "error"]  # its last error line
    # a live process holding a run's lock shows it as running, not interrupted
    import fcntl

    with open(tmp_path / bad[0].key() / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep_status(tmp_path).set_index("run_id").loc[bad[0].key(), "status"] == "running"


@pytest.mark.slow
def test_killed_worker_fails_its_run_not_the_sweep(tmp_path):
    """kill -9 one worker of a two-worker sweep: the sweep restarts the pool, the killed run resumes
    from its checkpoint, and `probe run` ends normally with both runs done."""
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nwidth = [32, 48]\ntokens = [400000]\n[model]\ndepth = 1\nbase_width = 16\n'
                    'seq_len = 32\n[train]\nbatch_size = 8\neval_every = 400\ncheckpoint_every = 50\n')
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "probes.cli", "run", str(grid), "--out", str(out),
                             "--workers", "2", "--threads", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:
        for lock in out.glob("*/lock"):
            text = lock.read_text().strip()
            if text and (lock.parent / "ckpt.pt").exists():
                victim = int(text)
                break
        time.sleep(0.2)
    assert victim is not None, "no worker started"
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "BrokenProcessPool" not in output
    assert "2 runs" in output
    df = export_results(out, final_only=True)
    assert sorted(df["width"]) == [32, 48]


@pytest.mark.parametrize("toml, message", [
    ('[grid]\nwidth = []\n[train]\ntokens = [4096]\n', "empty list"),
    ('[train]\neval_every = 0\ntokens = [4096]\n', "train.eval_every"),
    ('[data]\ntokenizer = "sentencepiece"\n[train]\ntokens = [4096]\n', "data.tokenizer"),
    ('[train]\ntokens = "many"\n', "train.tokens"),
    ('[train]\ntokens = [4096]\ndevice = "tpu"\n', "train.device"),
])
def test_bad_grids_are_refused_with_the_key_named(tmp_path, toml, message):
    from probes.sweep import load_grid

    (tmp_path / "g.toml").write_text(toml)
    with pytest.raises(ValueError, match=message):
        load_grid(tmp_path / "g.toml")


def _interrupted(tmp_path, cache, monkeypatch, at=40, c=None):
    """Train config ``c`` (the tiny one by default) into tmp_path/cut and interrupt it at training step
    call ``at`` (after its first checkpoint); returns its run directory."""
    import probes.train as T

    calls = {"n": 0}
    real = T._Trainer.train_step

    def flaky(self, step, end):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real(self, step, end)

    c = c or cfg()
    monkeypatch.setattr(T._Trainer, "train_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_probe(c, tmp_path / "cut", cache, progress=False)
    monkeypatch.setattr(T._Trainer, "train_step", real)
    return tmp_path / "cut" / c.key()


def test_resume_keeps_throughput_and_a_torn_checkpoint_retrains(tmp_path, cache, monkeypatch):
    full = rows(train_probe(cfg(), tmp_path / "full", cache, progress=False))
    run = _interrupted(tmp_path, cache, monkeypatch)
    res = train_probe(cfg(), tmp_path / "cut", cache, progress=False)
    resumed = rows(res)
    # timed tokens are restored with timed seconds: throughput stays of the same order after a resume
    ratio = resumed["tokens_per_s"].iloc[-1] / full["tokens_per_s"].iloc[-1]
    assert 0.2 < ratio < 5, ratio
    # a truncated checkpoint: the run starts again, and its rows equal an uninterrupted run's
    run = _interrupted(tmp_path / "b", cache, monkeypatch)
    ckpt = run / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    res = train_probe(cfg(), tmp_path / "b" / "cut", cache, progress=False)
    assert not res.resumed and (run / "ckpt.pt.corrupt").exists()
    np.testing.assert_allclose(rows(res)["val_loss"], full["val_loss"], rtol=1e-6)


def test_status_names_corrupt_failed_and_torn_runs(tmp_path, cache, monkeypatch):
    from probes.sweep import sweep_status

    train_probe(cfg(), tmp_path, cache, progress=False)
    other = cfg(train={"lr": 5e-3})
    train_probe(other, tmp_path, cache, progress=False)
    a, b = tmp_path / cfg().key(), tmp_path / other.key()
    (a / "done.json").write_text("")                     # empty done.json
    (b / "config.json").write_text("{not json")          # corrupt config.json
    st = sweep_status(tmp_path).set_index("run_id")
    assert st.loc[a.name, "status"] == "corrupt" and "done.json" in st.loc[a.name, "error"]
    assert st.loc[b.name, "status"] == "corrupt" and "config.json" in st.loc[b.name, "error"]
    # a finished run whose last metrics line is torn: export names the file instead of dropping the row
    (a / "done.json").write_text(json.dumps({"rows": 1, "diverged": False}))
    text = (a / "metrics.jsonl").read_text()
    (a / "metrics.jsonl").write_text(text[:-10])
    with pytest.raises(InputError, match="partial line"):
        export_results(tmp_path)
    r = CliRunner().invoke(probe_cli, ["status", str(tmp_path)])
    assert r.exit_code == 0 and "corrupt" in r.output


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killing_the_sweep_stops_its_workers(tmp_path):
    (tmp_path / "g.toml").write_text("[grid]\nwidth = [32, 48]\n[model]\ndepth = 1\nbase_width = 16\nseq_len = 32\n"
                                     "[train]\ntokens = [50000000]\nbatch_size = 8\n")
    proc = subprocess.Popen([sys.executable, "-m", "probes.cli", "run", str(tmp_path / "g.toml"), "--out",
                             str(tmp_path / "runs"), "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    for _ in range(120):
        time.sleep(0.5)
        workers = [c for c in _children(proc.pid) if "spawn_main" in (Path(f"/proc/{c}/cmdline").read_text(
            errors="replace") if Path(f"/proc/{c}/cmdline").exists() else "")]
        if len(workers) >= 2:
            break
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(20):
        time.sleep(0.5)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text()
                 .rsplit(")", 1)[1].split()[0]]
        if not alive:
            break
    assert not alive, f"orphan workers still training: {alive}"


def test_a_truncated_corpus_cache_is_rebuilt_not_trained_on(tmp_path):
    full = load_corpus(cfg().data, tmp_path)
    cdir = next(tmp_path.glob("corpus-*"))
    data = (cdir / "train.bin").read_bytes()
    (cdir / "train.bin").write_bytes(data[: len(data) // 100])  # 1% of the corpus
    again = load_corpus(cfg().data, tmp_path)
    assert again.train.size == full.train.size
    assert (cdir / "train.bin").stat().st_size == len(data)
