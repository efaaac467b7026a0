"""Kill -9 soak: kill a sweep at random moments until it finishes; then account for every row
against an uninterrupted sweep with the same seeds.

    python benchmarks/reliability_soak.py [--kills 50] [--seed 0] [--executor local|ray]

local: kill a `probe run --workers 2` sweep (the whole process group: the sweep and its workers)
and restart it. ray: one sweep on a local Ray cluster (2 CPUs) whose training worker processes
(found by the pid in each run's lock) are SIGKILLed at random moments; Ray retries each killed
task, which resumes from its checkpoint.

Checks: the same (run, tokens, phase) rows, no duplicate and no partial line, and losses equal
(bitwise on CPU with one thread per probe). Writes benchmarks/results/reliability_soak.json and
appends the verdict to benchmarks/results/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "soak"
GRID = """[grid]
width = [32, 48]
seed = [0, 1]
[model]
depth = 1
base_width = 16
seq_len = 32
[train]
tokens = [65536, 131072, 196608]
batch_size = 8
eval_every = 32
checkpoint_every = 16
"""


def sweep(out: Path, kill_after: float | None):
    """Run the sweep; with ``kill_after``, SIGKILL its process group after that many seconds.
    Returns True when the sweep finished by itself."""
    proc = subprocess.Popen([sys.executable, "-m", "probes.cli", "run", str(RUNS / "grid.toml"), "--out", str(out),
                             "--workers", "2", "--threads", "1", "--quiet"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def ray_soak(out: Path, kills: int, rng, spacing: float) -> tuple[int, int]:
    """One Ray sweep with ``kills`` SIGKILLs of its training workers. Returns (kills, restarts)."""
    import threading

    from probes.sweep import load_grid, run_sweep

    configs = load_grid(RUNS / "grid.toml")
    done = threading.Event()
    n = [0]

    def killer():
        while not done.is_set() and n[0] < kills:
            time.sleep(rng.uniform(0.5 * spacing, 1.5 * spacing))
            for d in sorted(out.iterdir()) if out.is_dir() else []:
                if (d / "lock").is_file() and (d / "ckpt.pt").is_file() and not (d / "done.json").exists():
                    try:
                        os.kill(int((d / "lock").read_text().split()[0]), signal.SIGKILL)
                        n[0] += 1
                        break
                    except (ValueError, IndexError, ProcessLookupError, PermissionError):
                        continue

    t = threading.Thread(target=killer)
    t.start()
    restarts = 0
    try:
        while True:  # a task whose retries ran out fails its run; the next sweep resumes it
            statuses = run_sweep(configs, out, executor="ray", threads=1, attempts=kills + 1, progress=False,
                                 options={"num_cpus": 2})
            if not any(s.startswith("failed") for s in statuses.values()):
                break
            restarts += 1
    finally:
        done.set()
        t.join()
    return n[0], restarts


def rows(out: Path):
    import pandas as pd

    from probes.sweep import export_results

    t = export_results(out)
    for d in out.iterdir():  # no torn line in any metrics file
        m = d / "metrics.jsonl"
        if m.exists():
            assert m.read_bytes().endswith(b"\n") or m.stat().st_size == 0, f"partial line in {m}"
    return t.sort_values(["run_id", "step", "phase", "tokens"]).reset_index(drop=True) if len(t) else pd.DataFrame()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", choices=["local", "ray"], default="local")
    args = ap.parse_args()
    import shutil

    shutil.rmtree(RUNS, ignore_errors=True)
    RUNS.mkdir(parents=True)
    (RUNS / "grid.toml").write_text(GRID)
    t0 = time.time()
    assert sweep(RUNS / "clean", None)
    clean_s = time.time() - t0
    reference = rows(RUNS / "clean")
    rng = random.Random(args.seed)
    kills, restarts = 0, 0
    t0 = time.time()
    if args.executor == "ray":
        kills, restarts = ray_soak(RUNS / "killed", args.kills, rng, spacing=max(1.0, clean_s / args.kills))
    while args.executor == "local" and kills < args.kills:
        restarts += 1
        if sweep(RUNS / "killed", rng.uniform(1.0, max(2.0, clean_s / 3))):
            break  # finished before the kill: start over to keep killing
        kills += 1
        if kills % 10 == 0:
            print(f"{kills} kills", flush=True)
    while args.executor == "local" and not sweep(RUNS / "killed", None):
        restarts += 1
    soaked = rows(RUNS / "killed")
    keys = ["run_id", "step", "phase", "tokens"]
    same_rows = soaked[keys].equals(reference[keys])
    dup = int(soaked.duplicated(keys).sum())
    diff = float((soaked["val_loss"] - reference["val_loss"]).abs().max()) if same_rows else float("nan")
    out = {"executor": args.executor, "kills": kills, "restarts": restarts, "rows": len(soaked), "reference_rows": len(reference),
           "same_rows": bool(same_rows), "duplicates": dup, "max_abs_val_loss_difference": diff,
           "clean_sweep_s": clean_s, "soak_s": time.time() - t0}
    print(json.dumps(out, indent=1))
    res = ROOT / "benchmarks" / "results"
    (res / f"reliability_soak{'' if args.executor == 'local' else '_' + args.executor}.json").write_text(
        json.dumps(out, indent=1))
    verdict = ("passed" if same_rows and dup == 0 and diff == 0.0 else "FAILED")
    with open(res / "reliability.md", "a") as fh:
        what = ("the whole sweep (process group, 2 workers)" if args.executor == "local" else
                "Ray training workers (local Ray cluster, 2 CPUs; Ray retried each task, which resumed)")
        fh.write(f"\n## Kill -9 soak, {args.executor} executor ({time.strftime('%Y-%m-%d')})\n\n"
                 f"`python benchmarks/reliability_soak.py --kills {args.kills} --executor {args.executor}`: {kills} "
                 f"SIGKILLs of {what} at random moments, {restarts} restarts, {len(soaked)} rows against "
                 f"{len(reference)} of an uninterrupted sweep: same rows {same_rows}, duplicates {dup}, largest "
                 f"val_loss difference {diff:.3g}. Verdict: {verdict}.\n")


if __name__ == "__main__":
    main()
