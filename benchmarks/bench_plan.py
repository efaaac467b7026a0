"""Benchmark: wall time of `plan --budget 1e21 --out plan.csv` with the default preset, as a new
process (target < 0.3 s). Run from the repository root: python benchmarks/bench_plan.py

Also times, in the same run, the floor under it: a new Python process that only imports numpy and
click (the plan path's two dependencies), so that a slow machine is told apart from a slow plan."""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wall(cmd, repeats: int) -> list[float]:
    subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main(repeats: int = 15):
    exe = shutil.which("plan") or f"{sys.executable} -m planner.cli"
    with tempfile.TemporaryDirectory() as tmp:
        times = _wall(exe.split() + ["--budget", "1e21", "--out", str(Path(tmp) / "plan.csv")], repeats)
    floor = _wall([sys.executable, "-c", "import numpy, click"], repeats)
    out = {"command": "plan --budget 1e21 --out plan.csv", "repeats": repeats,
           "median_s": statistics.median(times), "max_s": max(times), "target_s": 0.3,
           "import_numpy_click_median_s": statistics.median(floor),
           "plan_over_floor_s": statistics.median(times) - statistics.median(floor)}
    (ROOT / "benchmarks" / "results" / "plan.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
