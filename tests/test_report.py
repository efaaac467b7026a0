"""The one-page decision report: content, outputs, errors, and rendering in headless Chromium."""
import csv
import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main as plan_main

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _plan(tmp_path, *args):
    r = CliRunner().invoke(plan_main, list(args))
    assert r.exit_code == 0, r.output
    return r


def test_markdown_report_puts_plots_beside_it(tmp_path):
    _plan(tmp_path, "--budget", "1e21", "--report", str(tmp_path / "plan.md"))
    text = (tmp_path / "plan.md").read_text()
    for name in ("data", "alternatives"):
        png = tmp_path / f"plan_{name}.png"
        assert png.stat().st_size > 1000 and f"](plan_{name}.png)" in text
        assert stat.S_IMODE(png.stat().st_mode) & 0o044  # readable by others, not 0600
    for section in ("Plan at 1e+21 FLOPs", "Risk flags", "Data, fitted law and extrapolation",
                    "Alternatives on the same budget", "0.5x N, same budget", "Batch trade-off"):
        assert section in text
    # the default preset's loss is not in Kaplan's unit: no B_crit(L), so no trade-off plot, and it says why
    assert "No critical-batch estimate" in text and not (tmp_path / "plan_batch.png").exists()
    _plan(tmp_path, "--budget", "1e21", "--preset", "kaplan2020", "--report", str(tmp_path / "k.md"))
    assert (tmp_path / "k_batch.png").stat().st_size > 1000 and "](k_batch.png)" in (tmp_path / "k.md").read_text()


def test_report_of_probes_shows_isoflops_and_candidate_forms(tmp_path):
    ref = Path(__file__).resolve().parents[1] / "data" / "reference" / "probes_default_cpu.csv"
    _plan(tmp_path, "--results", str(ref), "--budget", "1e13", "--report", str(tmp_path / "p.html"))
    page = (tmp_path / "p.html").read_text()
    assert "isoFLOP curves" in page and page.count("data:image/png;base64,") >= 3
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_budget_sweep_report_and_bad_destinations(tmp_path):
    _plan(tmp_path, "--budget", "1e19:1e24:6", "--report", str(tmp_path / "s.html"))
    assert "Budget sweep" in (tmp_path / "s.html").read_text()
    keep = tmp_path / "keep.csv"
    keep.write_text("old")
    for bad in ("/sys/x.html", str(keep / "x.html"), str(tmp_path / "x.pdf")):
        r = CliRunner().invoke(plan_main, ["--budget", "1e21", "--report", bad])
        assert r.exit_code == 2 and "--report" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(plan_main, ["--budget", "1e21", "--out", str(keep), "--report", str(tmp_path / "y.pdf")])
    assert r.exit_code == 2 and keep.read_text() == "old"  # checked before anything is written


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                                                     "(.ci/run installs them: apt-get install chromium chromium-driver)")
def test_report_renders_in_headless_chromium(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    _plan(tmp_path, "--budget", "1e21", "--report", str(tmp_path / "plan.html"), "--out", str(tmp_path / "plan.csv"))
    row = next(csv.DictReader((tmp_path / "plan.csv").open()))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
              "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        driver.get((tmp_path / "plan.html").as_uri())
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        urls = [json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
                for e in driver.get_log("performance")]
        fetched = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))]  # the network
        assert not fetched, fetched
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        shown = (tmp_path / "plan.html").read_text().count("<img")
        assert len(images) == shown >= 2 and all(done and w > 100 for done, w in images), images
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        cells = driver.execute_script(
            "return Array.from(document.querySelector('table').rows).slice(1)"
            ".map(r => [r.cells[0].innerText, r.cells[1].innerText])")
        shown = dict(cells)
        for label, key in (("parameters N", "params"), ("tokens D", "tokens"), ("predicted loss", "loss"),
                           ("learning rate", "lr")):
            assert float(shown[label]) == pytest.approx(float(row[key]), rel=5e-4), label
        assert int(shown["batch (tokens)"].replace(",", "")) == int(row["batch_tokens"])
        assert int(shown["steps"].replace(",", "")) == int(row["steps"])
    finally:
        driver.quit()


def test_fit_report(tmp_path):
    from fits.cli import main as fit_main

    ref = Path(__file__).resolve().parents[1] / "data" / "reference" / "probes_default_cpu.csv"
    r = CliRunner().invoke(fit_main, [str(ref), "--loss", "val_loss", "--bootstrap", "30",
                                      "--report", str(tmp_path / "fit.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "fit.html").read_text()
    for section in ("Warnings", "Parameters", "Data and fitted law", "isoFLOP curves"):
        assert f"<h2>{section}</h2>" in page
    r = CliRunner().invoke(fit_main, [str(ref), "--loss", "val_loss", "--report", str(tmp_path / "fit.txt")])
    assert r.exit_code == 2 and "--report" in r.output


def test_bad_destinations_of_fit_leave_existing_outputs_untouched(tmp_path):
    from fits.cli import main as fit_main

    ref = Path(__file__).resolve().parents[1] / "data" / "reference" / "probes_default_cpu.csv"
    old = tmp_path / "old.json"
    old.write_text("old")
    cases = [["--out", str(old), "--plot", "/sys/x.png"], ["--out", str(ref) + "/fit.json"], ["--seed", "-5"],
             ["--out", str(tmp_path / "fit.txt")], ["--out", str(old), "--report", str(ref) + "/r.html"]]
    for extra in cases:
        r = CliRunner().invoke(fit_main, [str(ref), "--loss", "val_loss", "--bootstrap", "5", *extra])
        assert r.exit_code == 2 and "Traceback" not in r.output, (extra, r.output)
        assert old.read_text() == "old"
        errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and r.output.strip().splitlines()[-1] == errors[0], r.output
