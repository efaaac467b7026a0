"""The docs cannot drift from the code: the site builds strictly, every Python block in the docs
and the README runs, every command line in their shell blocks parses against the real commands,
and the benchmark page is what the recorded results give."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(path: Path, lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(path.read_text()) if kind == lang]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the files the docs' examples read, as a user's would hold them."""
    d = tmp_path_factory.mktemp("docs")
    (d / "data").symlink_to(ROOT / "data")
    ref = pd.read_csv(ROOT / "data" / "reference" / "probes_default_cpu.csv")
    ref.to_csv(d / "results.csv", index=False)
    ref.to_csv(d / "runs.csv", index=False)
    ref.sort_values("flops").tail(3).to_csv(d / "realised.csv", index=False)
    shutil.copy(ROOT / "benchmarks" / "results" / "lr_batch.csv", d / "lr_batch.csv")
    mt = pd.read_csv(ROOT / "benchmarks" / "results" / "mup_transfer.csv")
    mt[mt["parametrization"] == "mup"].to_csv(d / "sweep.csv", index=False)
    # a data-constrained table: repeated epochs of U unique tokens (Muennighoff et al.'s law)
    from fits.forms import data_constrained

    N, D, U = (a.ravel() for a in np.meshgrid([5e7, 1e8, 2e8, 4e8], [2e9, 8e9, 3e10], [1e9, 4e9]))
    L = data_constrained(N, D, U, E=1.9, A=400.0, B=1500.0, alpha=0.34, beta=0.28, R_D_star=15.4, R_N_star=5.3)
    pd.DataFrame({"params": N, "tokens": D, "U": U, "loss": L}).to_csv(d / "repeated.csv", index=False)
    # an eval ladder for the task-accuracy examples
    rng = np.random.default_rng(0)
    rows = []
    for n in (2e7, 5e7, 1.2e8, 3e8):
        for m in (5, 10, 20, 50):
            for f in np.linspace(0.125, 1, 8):
                t = f * m * n
                bpb = 0.55 + 60 / n ** 0.3 + 150 / t ** 0.35 + rng.normal(0, 0.003)
                acc = 0.25 + 0.67 / (1 + np.exp(9 * (bpb - 0.9))) + rng.normal(0, 0.004)
                rows.append({"run": f"{n:.0e}-{m}x", "params": n, "tokens": t, "hellaswag_bpb": bpb,
                             "hellaswag_acc": acc})
    pd.DataFrame(rows).to_csv(d / "ladder.csv", index=False)
    return d


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page, workdir, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(workdir)
    scope: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks(page, "python")):
        try:
            exec(compile(code, f"{page.name}[python block {i + 1}]", "exec"), scope)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{page.name}, python block {i + 1}: {type(exc).__name__}: {exc}")


def _commands():
    """Every command line of the project's own commands in the docs' shell blocks."""
    out = []
    for page in PAGES:
        for code in blocks(page, "bash"):
            for line in code.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                for part in re.split(r"&&|;", line):
                    words = shlex.split(part.strip())
                    if words and words[0] in ("plan", "fit", "fit-verify", "probe"):
                        out.append((page.name, words))
    return out


def _resolve(words):
    from fits import cli as fcli
    from planner import cli as pcli

    prog, args = words[0], words[1:]
    if prog == "plan":
        return pcli.main, "plan", args
    if prog == "fit-verify":
        return fcli.verify_main, prog, args
    if prog == "fit":
        if args and args[0] in fcli._SUBCOMMANDS:
            return fcli._SUBCOMMANDS[args[0]], f"fit {args[0]}", args[1:]
        return fcli.main, prog, args
    if importlib.util.find_spec("torch") is None:
        return None
    from probes import cli as prcli

    return prcli.main, prog, args


@pytest.mark.parametrize("page, words", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_shell_commands_parse(page, words):
    import click

    found = _resolve(words)
    if found is None:
        pytest.skip("probe needs torch")
    cmd, prog, args = found
    try:
        if isinstance(cmd, click.Group):  # the group has no options of its own: name, then the subcommand's
            sub = cmd.get_command(click.Context(cmd), args[0])
            assert sub is not None, f"{page}: `{prog} {args[0]}` is not a command"
            sub.make_context(f"{prog} {args[0]}", list(args[1:]))
        else:
            cmd.make_context(prog, list(args))
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        pytest.fail(f"{page}: `{' '.join(words)}` does not parse: {exc.format_message()}")


def test_benchmark_page_is_current():
    spec = importlib.util.spec_from_file_location("benchmark_tables", ROOT / "scripts" / "benchmark_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "docs/benchmarks.md is stale: run python scripts/benchmark_tables.py"


def test_site_builds_strict(tmp_path):
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocs_click"):
        pytest.importorskip(mod)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists() and (tmp_path / "site" / "cli" / "index.html").exists()
