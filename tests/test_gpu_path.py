"""The probes' GPU path exercised on the CPU (CI has no GPU): resume of a checkpoint read onto another
device, compile time kept out of throughput, one compiled graph per run across widths, the executors'
GPU requests and per-worker devices, MFU peaks by exact device name, the device kind in every row, and
mps refused at config time. ``PROBES_EMULATE_GPU=1`` sends a CPU run down the accelerator path (bf16
autocast, fused AdamW, torch.compile)."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fits import InputError  # noqa: E402
from probes.device import EMULATE_ENV, device_kind, peak_flops, resolve_device  # noqa: E402
from probes.train import train_probe  # noqa: E402
from test_probes_train import cache, rows  # noqa: E402,F401 - the tiny probe's corpus cache and its rows
from test_probes_train import _interrupted  # noqa: E402
from test_probes_train import cfg as _tiny  # noqa: E402

SHORT = {"tokens": [4096, 8192], "checkpoint_every": 8}


def cfg(**over):
    """The probe tests' tiny config, shorter, checkpointed every 8 steps."""
    return _tiny(**{**over, "train": {**SHORT, **over.get("train", {})}})


def test_a_checkpoint_loaded_for_another_device_resumes(tmp_path, cache, monkeypatch):
    """A GPU run's checkpoint read with map_location=<its device> put the CPU RNG state on the GPU, so
    set_rng_state raised, the checkpoint was renamed corrupt and the run restarted from step 0 (every
    Ray retry and Slurm requeue). Emulated: torch.load maps every tensor to the 'meta' device unless
    told to load onto the CPU."""
    full = rows(train_probe(cfg(), tmp_path / "full", cache, progress=False))
    run = _interrupted(tmp_path, cache, monkeypatch, at=20, c=cfg())
    load = torch.load

    def gpu_style_load(f, map_location=None, **kw):
        """Loading onto the run's device (a torch.device: here the CPU stands in for a GPU) moves the CPU
        RNG state off the CPU, as map_location=cuda does; only an explicit "cpu" keeps it there."""
        st = load(f, map_location="cpu", **kw)
        if map_location != "cpu":
            st["torch_rng"] = st["torch_rng"].to("meta")
        return st

    monkeypatch.setattr(torch, "load", gpu_style_load)
    res = train_probe(cfg(), tmp_path / "cut", cache, progress=False)
    assert res.resumed and not (run / "ckpt.pt.corrupt").exists()
    np.testing.assert_allclose(rows(res)["val_loss"], full["val_loss"], rtol=1e-6)


def test_a_checkpoint_that_reads_but_does_not_apply_raises(tmp_path, cache, monkeypatch):
    run = _interrupted(tmp_path, cache, monkeypatch, at=20, c=cfg())
    st = torch.load(run / "ckpt.pt", weights_only=False)
    st["model"] = {}
    torch.save(st, run / "ckpt.pt")
    with pytest.raises(RuntimeError):
        train_probe(cfg(), tmp_path / "cut", cache, progress=False)
    assert (run / "ckpt.pt").exists() and not (run / "ckpt.pt.corrupt").exists()


def test_emulated_gpu_path_runs_bf16_fused_and_records_its_kind(tmp_path, cache, monkeypatch):
    monkeypatch.setenv(EMULATE_ENV, "1")
    r = train_probe(cfg(), tmp_path, cache, progress=False)
    df = rows(r)
    assert (df["device_kind"] == "cpu-bf16").all() and df["device"].str.contains("emulating").all()
    assert df["final"].sum() == 2 and np.isfinite(df["val_loss"]).all()
    monkeypatch.delenv(EMULATE_ENV)
    plain = rows(train_probe(cfg(), tmp_path / "fp32", cache, progress=False))
    assert (plain["device_kind"] == "cpu-fp32").all()
    # bf16 autocast moves the loss by about seed noise, not more
    assert abs(df["val_loss"].iloc[-1] / plain["val_loss"].iloc[-1] - 1) < 0.05


def test_fused_adamw_on_the_emulated_path(monkeypatch):
    from probes.config import ModelConfig
    from probes.model import build_model
    from probes.mup import make_optimizer

    model = build_model(ModelConfig(width=32, depth=1, d_head=16, base_width=32, seq_len=32), torch.device("cpu"))
    assert not make_optimizer(model, 1e-3).defaults["fused"]
    monkeypatch.setenv(EMULATE_ENV, "1")
    assert make_optimizer(model, 1e-3).defaults["fused"]


@pytest.mark.slow
def test_compiled_runs_keep_compile_time_apart_and_survive_a_sweep_of_widths(tmp_path, cache, monkeypatch):
    """torch.compile (inductor) on the emulated path: the first compiled step is compile time, not
    throughput; five widths in one process each get their own compiled graph (dynamo reset per run),
    so none falls back to eager past the recompile limit."""
    import torch._dynamo as dynamo

    monkeypatch.setenv(EMULATE_ENV, "1")
    short = {"tokens": [2048], "warmup_steps": 4}
    eager = rows(train_probe(cfg(train=short), tmp_path / "eager", cache, progress=False)).iloc[-1]
    for w in (32, 48, 64, 80, 96):
        before = dynamo.utils.counters["stats"]["unique_graphs"]
        r = train_probe(cfg(model={"width": w}, train={**short, "compile": True}), tmp_path, cache, progress=False)
        last = rows(r).iloc[-1]
        assert last["compile_s"] > 0
        # a graph compiled for this width: past dynamo's recompile limit the run would go on eager
        assert dynamo.utils.counters["stats"]["unique_graphs"] - before >= 1, w
        if w == 32:  # compile time kept out of throughput: not hundreds of times slower than eager
            assert last["tokens_per_s"] > 0.2 * eager["tokens_per_s"], (last["tokens_per_s"], eager["tokens_per_s"])


def test_resolve_device_refuses_silent_fallbacks(monkeypatch):
    with pytest.raises(InputError, match="mps"):
        resolve_device("mps")
    with pytest.raises(InputError, match="mps"):
        cfg(train={"device": "mps"})
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match="refusing to fall back"):
            resolve_device("auto", gpus_expected=True)
    assert device_kind(torch.device("cpu")) == "cpu-fp32"


def test_peak_table_by_exact_name_and_mig():
    assert peak_flops("NVIDIA H100 NVL") == 835e12 and peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == pytest.approx(989e12 / 7)
    assert peak_flops("NVIDIA RTX A1000 Laptop GPU") is None  # not the A100's 312
    assert peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("Tesla V100-SXM2-16GB") is None
    assert peak_flops("some new GPU", override_tflops=500) == 500e12
    with pytest.raises(InputError, match="peak_tflops"):
        cfg(train={"peak_tflops": -1})


def test_ray_asks_for_threads_and_explicit_gpus():
    from probes.executors import gpu_env, ray_options

    o = ray_options(threads=1, gpus_per_probe=0.25, attempts=3)
    assert o["num_cpus"] == 1 and o["num_gpus"] == 0.25 and o["max_retries"] == 2
    assert o["runtime_env"]["env_vars"] == {"PROBES_GPUS_EXPECTED": "1"}
    assert gpu_env(0.0) == {"CUDA_VISIBLE_DEVICES": ""}  # 0 GPUs: none visible, not GPU 0 uncounted


def test_local_workers_get_one_gpu_each(monkeypatch):
    from probes.sweep import gpu_slots, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    assert gpu_slots(3, visible_gpus()) == ["2", "3", "2"]
    assert gpu_slots(2, []) == [None, None]


def test_worker_initializer_sets_its_gpu(monkeypatch):
    import queue

    import probes.sweep as S

    q = queue.Queue()
    q.put("1")
    monkeypatch.setattr(S, "_die_with_parent", lambda parent: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    S._init_worker(0, q)
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")


def test_ray_default_threads_is_one_core(monkeypatch, tmp_path):
    import probes.executors as X
    import probes.sweep as S

    seen = {}
    monkeypatch.setattr(X, "run_ray", lambda configs, out, threads, **kw: seen.update(threads=threads) or {})
    S.run_sweep([cfg()], tmp_path, executor="ray", progress=False)
    assert seen["threads"] == 1


@pytest.mark.slow
def test_gpu_check_script_runs_dry_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: every step of the GPU check (kill-and-resume, throughput with
    aligned concurrent windows, a sweep and its export) at toy sizes down the emulated GPU path."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out), "--work",
                        str(tmp_path / "work")], cwd=root, capture_output=True, text=True, timeout=600)
    res = json.loads(out.read_text())
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    assert res["resume"]["ok"] and res["resume"]["device_kind"] == "cpu-bf16"
    assert res["throughput"]["concurrent"][0]["processes"] == 2
    assert res["sweep"]["runs"] == 2 and res["tests"]["ok"]
