"""Kill -9 soak of the local executor: kill a `probe run --workers 2` sweep (the whole process
group: the sweep and its workers) at random moments, restart it, until it finishes; then account
for every row against an uninterrupted sweep with the same seeds.

    python benchmarks/reliability_soak.py [--kills 50] [--seed 0]

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
    while kills < args.kills:
        restarts += 1
        if sweep(RUNS / "killed", rng.uniform(1.0, max(2.0, clean_s / 3))):
            break  # finished before the kill: start over to keep killing
        kills += 1
        if kills % 10 == 0:
            print(f"{kills} kills", flush=True)
    while not sweep(RUNS / "killed", None):
        restarts += 1
    soaked = rows(RUNS / "killed")
    keys = ["run_id", "step", "phase", "tokens"]
    same_rows = soaked[keys].equals(reference[keys])
    dup = int(soaked.duplicated(keys).sum())
    diff = float((soaked["val_loss"] - reference["val_loss"]).abs().max()) if same_rows else float("nan")
    out = {"kills": kills, "restarts": restarts, "rows": len(soaked), "reference_rows": len(reference),
           "same_rows": bool(same_rows), "duplicates": dup, "max_abs_val_loss_difference": diff,
           "clean_sweep_s": clean_s, "soak_s": time.time() - t0}
    print(json.dumps(out, indent=1))
    res = ROOT / "benchmarks" / "results"
    (res / "reliability_soak.json").write_text(json.dumps(out, indent=1))
    verdict = ("passed" if same_rows and dup == 0 and diff == 0.0 else "FAILED")
    with open(res / "reliability.md", "a") as fh:
        fh.write(f"\n## Kill -9 soak, local executor ({time.strftime('%Y-%m-%d')})\n\n"
                 f"`python benchmarks/reliability_soak.py --kills {args.kills}`: {kills} SIGKILLs of the whole sweep "
                 f"(process group, 2 workers) at random moments, {restarts} restarts, {len(soaked)} rows against "
                 f"{len(reference)} of an uninterrupted sweep: same rows {same_rows}, duplicates {dup}, largest "
                 f"val_loss difference {diff:.3g}. Verdict: {verdict}.\n")


if __name__ == "__main__":
    main()
