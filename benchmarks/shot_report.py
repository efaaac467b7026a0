"""Screenshot of the decision report of the default plan (`plan --budget 1e21 --report ...`) in
headless Chromium, for benchmarks/results/report_plan_1e21.{html,png}. Needs Debian's chromium.

Run from the repository root:  python benchmarks/shot_report.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"


def main():
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium not found: apt-get install chromium")
    page = OUT / "report_plan_1e21.html"
    subprocess.run([sys.executable, "-m", "planner.cli", "--budget", "1e21", "--report", str(page)], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1280,3600",
                        f"--screenshot={OUT / 'report_plan_1e21.png'}", page.as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"wrote {page} and {OUT / 'report_plan_1e21.png'}")


if __name__ == "__main__":
    main()
