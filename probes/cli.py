"""The ``probe`` command: run sweeps, check their status, export results, design grids."""
from __future__ import annotations

from pathlib import Path

import click

from fits._cli import guarded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Train small muP probes and collect their evaluations into a results table."""


@main.command("run")
@click.argument("grid", default="default")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Concurrent probe processes (several small probes share one GPU well).")
@click.option("--device", default=None, help="Override train.device (cpu, cuda, auto).")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch CPU threads per probe process [default: CPU cores / workers].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@guarded
def run_cmd(grid, out, workers, device, threads, quiet):
    """Run every probe of GRID (a TOML file, or a built-in grid name; default: `default`).
    Finished runs are skipped; interrupted ones resume from their last checkpoint."""
    import dataclasses

    from .sweep import load_grid, run_sweep

    configs = load_grid(grid)
    if device:
        configs = [dataclasses.replace(c, train=dataclasses.replace(c.train, device=device)) for c in configs]
    statuses = run_sweep(configs, out, workers=workers, progress=not quiet, threads=threads)
    counts = {}
    for s in statuses.values():
        s = s.split(":")[0]
        counts[s] = counts.get(s, 0) + 1
    click.echo(f"{len(configs)} runs in {out}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    failed = {k: s for k, s in statuses.items() if s.startswith("failed")}
    if failed:
        for k, s in failed.items():
            click.echo(f"run {k} {s}", err=True)
        click.echo("`probe run` again retries the failed runs (interrupted ones resume)", err=True)
        raise SystemExit(1)


@main.command("status")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--grid", default=None, help="Also list the grid's runs that have not started.")
@guarded
def status_cmd(out, grid):
    """Status of every run in OUT."""
    from .sweep import load_grid, sweep_status

    table = sweep_status(out, load_grid(grid) if grid else None)
    if table.empty:
        click.echo(f"no runs in {out}")
        return
    click.echo(table.to_string(index=False))
    click.echo("\n" + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()))


@main.command("export")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("csv", type=click.Path(dir_okay=False))
@click.option("--final-only", is_flag=True, help="Only end-of-cooldown rows (one per run and token count).")
@guarded
def export_cmd(out, csv, final_only):
    """Write every evaluation row of the runs in OUT to CSV."""
    from .sweep import export_results

    df = export_results(out, csv, final_only=final_only)
    click.echo(f"wrote {len(df)} rows to {csv}")


@main.command("design")
@click.option("--budget", type=float, required=True, help="Total probe compute (FLOPs).")
@click.option("--depth", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--budgets", "n_budgets", default=4, show_default=True, type=click.IntRange(min=1),
              help="isoFLOP levels.")
@click.option("--ratio", default=2.0, show_default=True, type=click.FloatRange(min=1.0, min_open=True),
              help="Compute ratio between neighbouring levels.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the grid here (TOML).")
@guarded
def design_cmd(budget, depth, n_budgets, ratio, out):
    """Propose an isoFLOP probe ladder that spends BUDGET FLOPs: one WSD run per width records every
    level it reaches (4-500 tokens per parameter) by branch cooldowns."""
    from fits._io import atomic_write_text

    from .sweep import design_grid

    text = design_grid(budget, depth=depth, n_budgets=n_budgets, ratio=ratio)
    if out:
        atomic_write_text(Path(out), text + "\n")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
