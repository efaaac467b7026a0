"""The ``probe`` command: run sweeps, check their status, export results, design grids."""
from __future__ import annotations

import math

from pathlib import Path

import click
import numpy as np

from fits import __version__
from scaling_core.cli import guarded
from fits.errors import InputError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="probe", message="%(prog)s (scaling-planner) %(version)s")
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
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The device's dense bf16 peak (TFLOP/s) for MFU, when the device is not in probes.device's table.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
              help="Where runs execute: this machine's processes, a Ray cluster, or Slurm job arrays (submitit). "
                   "ray and slurm need the 'distributed' extra and a run directory every node can see.")
@click.option("--address", default=None,
              help="ray: 'auto' or 'ray://host:port' joins a running cluster [default: start a local one].")
@click.option("--gpus-per-probe", type=click.FloatRange(min=0, max=8), default=0.0, show_default=True,
              help="ray: GPUs per probe, fractions pack several on one GPU (0.25: four); slurm: rounded up.")
@click.option("--partition", default=None, help="slurm: the partition to submit to.")
@click.option("--time-limit", "timeout_min", type=click.IntRange(min=1), default=240, show_default=True,
              help="slurm: minutes per job; a job that reaches it is requeued and resumes from its checkpoint.")
@click.option("--mlflow", "mlflow_on", is_flag=True,
              help="Log every evaluation row to MLflow: the embedded SQLite store OUT/mlflow.db unless --mlflow-uri.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI (a server, or sqlite:///path.db); implies --mlflow.")
@click.option("--mlflow-experiment", default="probes", show_default=True)
@guarded
def run_cmd(grid, out, workers, device, threads, peak_tflops, quiet, executor, address, gpus_per_probe, partition,
            timeout_min, mlflow_on, mlflow_uri, mlflow_experiment):
    """Run every probe of GRID (a TOML file, or a built-in grid name; default: `default`).
    Finished runs are skipped; interrupted ones resume from their last checkpoint."""
    import dataclasses

    from .sweep import load_grid, run_sweep

    configs = load_grid(grid)
    for name, value in (("device", device), ("peak_tflops", peak_tflops)):
        if value:
            configs = [dataclasses.replace(c, train=dataclasses.replace(c.train, **{name: value})) for c in configs]
    for name, value, only in (("--address", address, "ray"), ("--partition", partition, "slurm")):
        if value is not None and executor != only:
            raise InputError(f"{name}: applies to --executor {only} only; got --executor {executor}")
    options = ({"address": address, "gpus_per_probe": gpus_per_probe} if executor == "ray" else
               {"gpus_per_probe": gpus_per_probe, "partition": partition, "timeout_min": timeout_min}
               if executor == "slurm" else None)
    if mlflow_on or mlflow_uri:
        from fits.tracking import _mlflow

        _mlflow()  # not installed: say so before training, not after
    statuses = run_sweep(configs, out, workers=workers, progress=not quiet, threads=threads, executor=executor,
                         options=options)
    if mlflow_on or mlflow_uri:
        from fits.tracking import default_uri

        from .sweep import sync_mlflow

        uri = mlflow_uri or default_uri(out)
        n = sync_mlflow(out, uri, mlflow_experiment)
        click.echo(f"MLflow: {n} new rows logged to experiment {mlflow_experiment!r} at {uri} "
                   f"(read back with: fit 'mlflow:{uri}#{mlflow_experiment}')")
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
@click.option("--budget", type=float, default=None,
              help="Lay the default isoFLOP ladder that spends this many FLOPs in all.")
@click.option("--target", type=float, default=None,
              help="Design for the plan at this budget (FLOPs): the runs that most shrink its uncertainty.")
@click.option("--probe-budget", type=float, default=None, help="With --target: what the probes may cost (in --unit).")
@click.option("--unit", type=click.Choice(["flops", "gpu-hours", "usd"]), default="flops", show_default=True,
              help="Unit of --probe-budget.")
@click.option("--gpu", default=None, help="Accelerator for gpu-hours/usd (h100, h200, a100, ...).")
@click.option("--mfu", type=float, default=0.4, show_default=True)
@click.option("--price-per-hour", type=float, default=None)
@click.option("--next", "next_results", type=click.Path(dir_okay=False), default=None,
              help="With --target: finished runs (a probe export); propose the --k runs that help most now.")
@click.option("--k", type=click.IntRange(min=1), default=4, show_default=True, help="Runs to propose with --next.")
@click.option("--prior", default=None,
              help="The law the design averages over: a preset name or a fit JSON [default: the reference fit "
                   "of the default CPU ladder, data/reference/probes_default_cpu_fit.json, else besiroglu2024]; "
                   "with --next the fit of the finished runs is the prior.")
@click.option("--criterion", type=click.Choice(["loss", "n_opt"]), default="loss", show_default=True,
              help="What to pin down at the target: the predicted loss, or log N_opt.")
@click.option("--form", default=None,
              help="The loss form the probes will be fitted with (chinchilla, beta_n, ...) [default: the prior's "
                   "form; with --next, chinchilla]. Without --prior, the reference CPU ladder's runs are fitted in "
                   "this form to serve as the prior.")
@click.option("--noise", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Run-to-run sd of log loss [default: the prior fit's, at least 0.01].")
@click.option("--misfit", type=click.FloatRange(min=0), default=None,
              help="sd of the loss form's own misfit, in log loss, a smooth process over 1.5 decades of N and D: "
                   "0 trusts the form [default: 0.03, the best of 0.01-0.05 on replays of the Chinchilla and "
                   "Farseer tables].")
@click.option("--simulate", default=32, show_default=True, type=click.IntRange(min=0),
              help="With --probe-budget: check the candidate designs and the default ladder by this many simulated "
                   "fits each (the fitter itself, on laws drawn from the prior) and keep the best; ~1 min. 0: the "
                   "linearised design alone, in seconds.")
@click.option("--widths", default=None, help="Candidate widths, comma-separated [default: 32..512].")
@click.option("--depth", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--budgets", "n_budgets", default=4, show_default=True, type=click.IntRange(min=1),
              help="isoFLOP levels of the ladder (--budget).")
@click.option("--ratio", default=2.0, show_default=True, type=click.FloatRange(min=1.0, min_open=True),
              help="Compute ratio between neighbouring ladder levels (--budget).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the grid here (TOML).")
@guarded
def design_cmd(budget, target, probe_budget, unit, gpu, mfu, price_per_hour, next_results, k, prior, criterion,
               form, noise, misfit, simulate, widths, depth, n_budgets, ratio, out):
    """Design probe runs. With --budget: the default isoFLOP ladder that spends it (one WSD run per
    width records every level it reaches by branch cooldowns). With --target and --probe-budget: the
    runs, within that cost, that most shrink the interval of the plan at the target (optimal
    design). With --target and --next RESULTS: the --k runs that help most given the runs done."""
    from scaling_core.cli import check_writable
    from scaling_core.io import atomic_write_text

    from .sweep import LADDER_WIDTHS, design_grid

    check_writable("--out", out)
    ws = LADDER_WIDTHS if widths is None else _widths(widths)
    if target is None:
        if budget is None:
            raise InputError("--budget/--target: give --budget FLOPs for the default ladder, or --target FLOPs "
                             "(with --probe-budget or --next) for an optimal design")
        text = design_grid(budget, widths=ws, depth=depth, n_budgets=n_budgets, ratio=ratio)
    else:
        text = _optimal_design(target, probe_budget, unit, dict(gpu=gpu, mfu=mfu, price_per_hour=price_per_hour),
                               next_results, k, prior, criterion, noise, misfit, ws, depth, simulate, form)
    if out:
        atomic_write_text(Path(out), text + "\n")
        click.echo(f"wrote {out} (probe run {out})")
    else:
        click.echo(text)


def _widths(text: str) -> tuple:
    try:
        ws = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise InputError(f"--widths: comma-separated whole numbers, e.g. 32,64,128; got {text!r}") from None
    if not ws or min(ws) < 16 or any(w % 16 for w in ws):
        raise InputError(f"--widths: multiples of the head size 16, at least 16; got {text!r}")
    return ws


def _optimal_design(target, probe_budget, unit, hw, next_results, k, prior, criterion, noise, misfit, widths,
                    depth, simulate=0, form=None) -> str:
    """The optimal (or sequential) design as a grid TOML, its report in the header."""
    import dataclasses

    import pandas as pd

    from fits.design import MISFIT, design_runs, design_variance, simulate_design, summarise_simulation
    from scaling_core.budget import Budget

    from .sweep import cost_words, design_candidates, ladder_levels, ladder_runs, runs_toml

    for name, value in (("--noise", noise), ("--misfit", misfit)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name}: must be a finite number; got {value}")
    form = None if form is None else _form_name(form)
    cand = design_candidates(widths=widths, depth=depth)
    opts = dict(criterion=criterion, noise=noise, misfit=MISFIT if misfit is None else misfit)
    if next_results is not None:
        from fits import fit_loss_surface
        from fits import final_rows, read_table

        done = read_table(next_results, "--next")
        done = final_rows(done)
        loss = "val_loss" if "val_loss" in done.columns else "loss"
        fit = fit_loss_surface(done, n="params", d="tokens", loss=loss, form=form or "chinchilla",
                               bootstrap=200, seed=0)
        existing = pd.DataFrame({"group": done["width"], "N": done["params"], "D": done["tokens"],
                                 "fpt": [cand.loc[cand["width"] == w, "fpt"].iloc[0] if (cand["width"] == w).any()
                                         else np.nan for w in done["width"]]}) if "width" in done.columns else None
        res = design_runs(fit, cand, target, k=k, prior_scale=1.0, existing=existing, **opts)
        head = (f"next {k} runs given {len(done)} finished rows of {next_results}, for the {fit.form} form "
                f"(fit them with --form {fit.form})")
    else:
        if probe_budget is None:
            raise InputError("--probe-budget: an optimal design needs what the probes may cost (or --next RESULTS)")
        flops = Budget.from_unit(probe_budget, unit, **hw).flops
        fit, prior = _design_prior(prior, form)
        res = design_runs(fit, cand, target, budget=flops, simulate=simulate, progress=simulate > 0, **opts)
        if res.runs.empty:
            raise InputError(f"--probe-budget: {flops:.3g} FLOPs buys no candidate run (the cheapest costs "
                             f"{(cand['fpt'] * cand['D']).min():.3g} FLOPs)")
        # the default ladder at the same cost, scored the same way
        try:
            lad = ladder_runs(ladder_levels(res.cost, widths=widths, depth=depth), widths=widths, depth=depth)
        except InputError:  # no ladder fits that cost: nothing to compare with
            lad = []
        rows = pd.DataFrame([{"width": r["width"], "N": float(cand.loc[cand["width"] == r["width"], "N"].iloc[0]),
                              "D": float(t), "group": r["width"],
                              "fpt": float(cand.loc[cand["width"] == r["width"], "fpt"].iloc[0])}
                             for r in lad for t in r["tokens"]])
        runs, cost = _runs_by_width(res.runs), res.cost
        head = (f"optimal design within {flops:.3g} FLOPs (prior: {prior}), for the {fit.form} form "
                f"(fit its runs with --form {fit.form})")
        if len(rows):
            hw90 = design_variance(fit, rows, range(len(rows)), target, **opts)
            res = dataclasses.replace(res, baseline={"cost": sum(r["cost"] for r in lad), "n_runs": len(rows),
                                                     "half_width": hw90})
            if res.simulated is not None:  # the ladder through the same simulated fits (the same laws)
                sim = summarise_simulation(simulate_design(fit, rows, target, simulate, progress=True, **opts))
                table = pd.concat([res.simulated, pd.DataFrame([{
                    "design": "default isoFLOP ladder", "runs": len(rows), "cost": res.baseline["cost"],
                    "half_width": hw90, **sim, "chosen": False}])], ignore_index=True)
                if sim["score"] < res.simulated["score"].min():  # the ladder is the better design here
                    table["chosen"] = table.index == len(table) - 1
                    runs, cost = _runs_by_width(rows), res.baseline["cost"]
                    head += ("\nwritten: the default isoFLOP ladder, whose simulated fits beat every design's at "
                             "this cost (the table below is the best design's)")
                res = dataclasses.replace(res, simulated=table)
        return runs_toml(runs, header="\n".join([head, cost_words(cost), res.report()]), depth=depth)
    return runs_toml(_runs_by_width(res.runs), header="\n".join([head, cost_words(res.cost), res.report()]),
                     depth=depth)


def _form_name(form: str) -> str:
    from fits import get_form

    try:
        return get_form(form).name
    except InputError as exc:
        raise InputError(f"--{exc}") from None


def _design_prior(prior, name):
    """The prior fit of an optimal design and its label: ``prior`` as given (its form must be the form
    ``name`` when both are given), else the reference CPU ladder's fit, refitted in that form when it differs."""
    from fits import fit_loss_surface
    from fits import read_table
    from fits.presets import resolve_fit

    ref = Path(__file__).resolve().parents[1] / "data" / "reference" / "probes_default_cpu_fit.json"
    if prior is None and ref.is_file():
        fit = resolve_fit(ref)
        if name is None or fit.form == name:
            return fit, str(ref)
        runs = ref.with_name("probes_default_cpu.csv")
        fit = fit_loss_surface(read_table(runs, "--prior"), n="params", d="tokens", loss="val_loss", form=name,
                               bootstrap=200, seed=0)
        return fit, f"{runs}, fitted in the {name} form"
    prior = prior or "besiroglu2024"
    fit = resolve_fit(prior)
    if name is not None and fit.form != name:
        raise InputError(f"--form: the prior {prior} is a {fit.form} fit; give a prior fitted in the {name} form, "
                         "or leave out --prior to refit the reference runs in it")
    return fit, prior


def _runs_by_width(rows) -> dict:
    """{width: sorted token counts} of design rows (columns width, D)."""
    runs = {}
    for r in rows.itertuples():
        runs.setdefault(int(r.width), []).append(int(r.D))
    return {w: sorted(t) for w, t in runs.items()}


if __name__ == "__main__":  # pragma: no cover
    main()
