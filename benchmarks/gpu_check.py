"""The GPU path, checked in one script for the day a GPU is there (under 10 minutes on one H100/H200).

    python benchmarks/gpu_check.py              # on a CUDA machine: writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --dry-run    # anywhere: the same steps at toy sizes on the CPU, down the
                                                # emulated GPU path (PROBES_EMULATE_GPU=1); CI runs this

Steps, each recorded with its time and outcome (a failed step is recorded and the rest still run):
  1. tests:      the GPU tests (pytest -m gpu) and the CPU-emulated GPU-path tests
  2. resume:     a probe run killed with SIGKILL after its first checkpoint, restarted: it must resume (not
                 retrain from step 0), with no duplicate or partial row
  3. throughput: tokens/s and MFU per width, eager and compiled (compile time apart), and 1 and 4
                 concurrent probes over one aligned window (benchmarks/bench_throughput.py)
  4. sweep:      a small default GPU sweep (4 widths x 2 token counts) through `probe run`, then `fit`
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _grid(path: Path, widths, tokens, seq, batch, vocab_tokenizer: str, device: str, steps_ckpt: int):
    path.write_text(
        "[model]\ndepth = 2\nd_head = 16\nbase_width = 32\nseq_len = %d\n\n"
        "[train]\nbatch_size = %d\nlr = 0.004\neval_every = %d\ncheckpoint_every = %d\ndevice = %r\n\n"
        "[data]\ncorpus = \"stdlib\"\ntokenizer = %r\n\n[grid]\nwidth = %s\ntokens = %s\n"
        % (seq, batch, steps_ckpt, steps_ckpt, device, vocab_tokenizer, list(widths), list(tokens)))
    return path


def _step(name, results, fn):
    t0 = time.time()
    try:
        out = fn()
        results[name] = {"ok": True, "seconds": round(time.time() - t0, 1), **(out or {})}
    except Exception as exc:  # noqa: BLE001 - a failed step is a result too
        results[name] = {"ok": False, "seconds": round(time.time() - t0, 1), "error": f"{type(exc).__name__}: {exc}"}
    print(name, json.dumps(results[name])[:400], flush=True)


def tests(dry: bool) -> dict:
    if dry:  # the emulated tests run in the suite itself; here only that they are collected
        cmd = [sys.executable, "-m", "pytest", "-q", "--collect-only", "tests/test_gpu_path.py"]
    else:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or not slow", "tests/test_gpu_path.py",
               "tests/test_probes_train.py", "-x"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=480)
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    if p.returncode != 0:
        raise RuntimeError(tail)
    return {"summary": tail}


def resume(work: Path, dry: bool, env: dict) -> dict:
    grid = _grid(work / "resume.toml", [32] if dry else [256], [32768] if dry else [8_000_000], 64 if dry else 512,
                 8 if dry else 32, "byte", "cpu" if dry else "cuda", 8 if dry else 50)
    out = work / "resume_runs"
    cmd = [sys.executable, "-m", "probes.cli", "run", str(grid), "--out", str(out), "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/ckpt.pt")):
        time.sleep(0.2)
        if p.poll() is not None:
            raise RuntimeError("the run finished before its first checkpoint: make it longer")
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed_rows = sum(1 for _ in next(out.glob("*/metrics.jsonl")).open())
    q = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    if q.returncode != 0:
        raise RuntimeError(q.stderr.strip().splitlines()[-1] if q.stderr.strip() else "probe run failed")
    run = next(p for p in out.iterdir() if (p / "done.json").exists())
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    steps = [(r["step"], r["phase"]) for r in rows]
    if (run / "ckpt.pt.corrupt").exists():
        raise RuntimeError("the checkpoint was declared corrupt and the run retrained from step 0")
    if len(steps) != len(set(steps)):
        raise RuntimeError("duplicate rows after the resume")
    return {"rows_before_kill": killed_rows, "rows": len(rows), "final_loss": rows[-1]["val_loss"],
            "device": rows[-1]["device"], "device_kind": rows[-1].get("device_kind")}


def throughput(dry: bool) -> dict:
    from bench_throughput import CPU_SHAPES, GPU_SHAPES, run

    if dry:
        return run([CPU_SHAPES[0]], 3, "cpu", compile_=False, concurrency=(2,))
    return run(GPU_SHAPES, 30, "cuda", compile_=True, concurrency=(1, 4))


def sweep(work: Path, dry: bool, env: dict) -> dict:
    widths = [32, 48] if dry else [64, 128, 256, 512]
    tokens = [16384, 32768] if dry else [20_000_000, 40_000_000]
    grid = _grid(work / "sweep.toml", widths, tokens, 64 if dry else 512, 8 if dry else 32, "byte",
                 "cpu" if dry else "cuda", 50 if dry else 500)
    out, csv = work / "sweep_runs", work / "sweep.csv"
    t0 = time.time()
    for cmd in (["probes.cli", "run", str(grid), "--out", str(out), "--quiet", "--workers", "1"],
                ["probes.cli", "export", str(out), str(csv), "--final-only"]):
        p = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=540)
        if p.returncode != 0:
            raise RuntimeError((p.stderr.strip().splitlines() or ["failed"])[-1])
    import pandas as pd

    t = pd.read_csv(csv)
    return {"runs": int(t["run_id"].nunique()), "rows": len(t), "train_s": round(time.time() - t0, 1),
            "tokens_per_s": t.groupby("width")["tokens_per_s"].max().to_dict(),
            "mfu": t.groupby("width")["mfu"].max().to_dict(), "val_loss": t["val_loss"].tolist()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU's emulated GPU path")
    ap.add_argument("--out", type=Path, default=None, help="results JSON [default: benchmarks/results/gpu_check.json]")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "gpu_check")
    ap.add_argument("--skip", default="", help="steps to skip, comma-separated (tests, resume, throughput, sweep)")
    args = ap.parse_args(argv)
    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the steps on the CPU", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if dry:
        env["PROBES_EMULATE_GPU"] = "1"
        os.environ["PROBES_EMULATE_GPU"] = "1"
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"dry_run": dry, "device": "cpu (emulated GPU path)" if dry else torch.cuda.get_device_name(0),
               "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    skip = set(filter(None, args.skip.split(",")))
    steps = {"tests": lambda: tests(dry), "resume": lambda: resume(args.work, dry, env),
             "throughput": lambda: throughput(dry), "sweep": lambda: sweep(args.work, dry, env)}
    for name, fn in steps.items():
        if name not in skip:
            _step(name, results, fn)
    out = args.out or ROOT / "benchmarks" / "results" / ("gpu_check_dry.json" if dry else "gpu_check.json")
    out.write_text(json.dumps(results, indent=1, default=str))
    print("wrote", out)
    return 0 if all(r.get("ok") for k, r in results.items() if isinstance(r, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
