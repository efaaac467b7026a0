"""The ``fit`` command: fit a loss surface to a results CSV and save it."""
from __future__ import annotations

from pathlib import Path

import click

from . import __version__
from scaling_core.cli import check_writable, guarded
from .errors import InputError
from scaling_core.io import atomic_write_text


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fit", message="%(prog)s (scaling-planner) %(version)s")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--n", "n", default="params", show_default=True, help="Column of parameter counts N.")
@click.option("--d", "d", default="tokens", show_default=True, help="Column of training tokens D.")
@click.option("--loss", default="loss", show_default=True, help="Column of losses.")
@click.option("--flops", default=None, help="Column of training FLOPs; D = C / 6N when --d is absent.")
@click.option("--form", default="chinchilla", show_default=True,
              help="Functional form of the law: chinchilla, beta_n, interaction, kaplan, farseer, data_constrained, "
                   "or auto (choose by the table's own extrapolation backtests; intervals carry the forms' disagreement).")
@click.option("--unique-tokens", default=None, help="Column of unique tokens (data_constrained form).")
@click.option("--n-kind", type=click.Choice(["total", "non_embedding", "unspecified"]), default=None,
              help="What N counts: total parameters (embeddings and readout included, Chinchilla's count) or "
                   "non_embedding (Kaplan's) [default: read from a probe export, else unspecified].")
@click.option("--loss-unit", default=None,
              help="What the loss measures, e.g. \"nats per token (my corpus, Llama 3 tokenizer)\" or \"bits per byte\" "
                   "[default: read from the table (a *bpb or *bits column, a probe export)].")
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap refits for intervals.")
@click.option("--group", default="auto", show_default=True,
              help="Resample whole groups of this column in the bootstrap; auto: run_id when the table has one "
                   "(rows of one probe run are not independent); none: single rows.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--run-noise", type=click.FloatRange(min=0), default=None,
              help="Seed-to-seed sd of log loss measured elsewhere [default: from rows that repeat a cell "
                   "with other seeds].")
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Interval level of the parameter table.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the fit as JSON here, and its parameter table as <stem>_params.csv beside it.")
@click.option("--isoflop", is_flag=True, help="Also run the isoFLOP cross-check (Approaches 1 and 2).")
@click.option("--backtest", "holdout", type=click.IntRange(min=1), default=None,
              help="Also backtest: hold out this many largest budgets and score the predictions.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Save a plot of the fit (PNG); with --form auto, also <stem>_forms.png: every form's "
                   "backtest extrapolation.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a one-page report of the fit: .html (self-contained) or .md (plots beside it).")
@guarded
def main(results, n, d, loss, flops, form, unique_tokens, n_kind, loss_unit, bootstrap, group, seed, run_noise, level,
         out, isoflop, holdout, plot, report):
    """Fit a scaling law L(N, D) to RESULTS (a CSV with one row per run).

    \b
    Subcommands:
      fit hparams SWEEP ...   fit the learning-rate/batch-size (and weight-decay) laws to an lr x batch
                              sweep (see `fit hparams --help`)
      fit downstream RUNS ... fit task-accuracy laws to an eval table (see `fit downstream --help`)
      fit-verify ...          score a saved fit against held-out runs (see `fit-verify --help`)
    """
    from . import backtest, fit_loss_surface, isoflop_analysis
    from ._data import surface_data

    if report:
        from .report import check_report_path

        check_report_path(report)
    if out and Path(out).suffix.lower() != ".json":
        raise InputError(f"--out: the fit is written as JSON; give a .json path, not {out!r}")
    for option, path in (("--out", out), ("--plot", plot), ("--report", report)):
        check_writable(option, path)
    fit = fit_loss_surface(results, n=n, d=d, loss=loss, flops=flops, form=form,
                           unique_tokens=unique_tokens, bootstrap=bootstrap, seed=seed,
                           group=None if group == "none" else group, run_noise=run_noise, n_kind=n_kind,
                           loss_unit=loss_unit, progress=bootstrap >= 500)
    click.echo(fit.report(level))
    if out:
        out = Path(out)
        csv_path = out.with_name(out.stem + "_params.csv")
        table = fit.to_frame(level).to_csv()
        fit.to_json(out)
        atomic_write_text(csv_path, table)
        click.echo(f"\nwrote {out} and {csv_path}")
    # optional cross-checks: the fit is saved whatever they say
    if isoflop:
        try:
            click.echo("\n" + isoflop_analysis(results, n=n, d=d, loss=loss, flops=flops, seed=seed).report())
        except InputError as exc:
            click.echo(f"\nisoFLOP analysis skipped: {exc}", err=True)
    if holdout:
        extra = {"unique_tokens": unique_tokens} if unique_tokens else {}
        try:
            click.echo("\n" + backtest(results, n=n, d=d, loss=loss, flops=flops, form=form, holdout=holdout,
                                       bootstrap=max(bootstrap, 50), seed=seed, **extra).report())
        except InputError as exc:
            click.echo(f"\nbacktest skipped: {exc}", err=True)
    if report:
        from .report import build_fit_report

        frame = surface_data(results, n=n, d=d, loss=loss, flops=flops)
        click.echo("wrote " + ", ".join(str(w) for w in build_fit_report(fit, frame).write(report)))
    if plot:
        frame = surface_data(results, n=n, d=d, loss=loss, flops=flops)
        ax = fit.plot(data=frame)
        ax.figure.savefig(plot, dpi=120, bbox_inches="tight")
        click.echo(f"wrote {plot}")
        if fit.selection is not None:
            from .selection import plot_forms

            forms_png = Path(plot).with_name(Path(plot).stem + "_forms.png")
            ax = plot_forms(fit, frame)
            ax.figure.savefig(forms_png, dpi=120, bbox_inches="tight")
            click.echo(f"wrote {forms_png}")


if __name__ == "__main__":  # pragma: no cover
    main()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fit-verify", message="%(prog)s (scaling-planner) %(version)s")
@click.argument("fit_json", type=click.Path(dir_okay=False))
@click.argument("realised", type=click.Path(dir_okay=False))
@click.option("--n", "n", default=None, help="Column of N [default: the fit's own].")
@click.option("--d", "d", default=None, help="Column of tokens [default: the fit's own].")
@click.option("--loss", default=None, help="Column of the realised loss [default: the fit's own].")
@click.option("--level", default=0.9, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table as CSV.")
@guarded
def verify_main(fit_json, realised, n, d, loss, level, out):
    """Score FIT_JSON against REALISED runs (a results CSV): predicted loss, its interval, the
    realised loss, inside or not, and the error in units of the interval."""
    from .surface import load_fit
    from .verification import verify

    table = verify(load_fit(fit_json), realised, n=n, d=d, loss=loss, level=level)
    show = table.copy()
    show["inside"] = show["inside"].map({True: "yes", False: "NO"})
    click.echo(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo(f"\n{int(table['inside'].sum())}/{len(table)} inside the {level:.0%} interval; "
               f"mean |error| {table['rel_error'].abs().mean():.2%}, worst {table['rel_error'].abs().max():.2%}")
    if out:
        check_writable("--out", out)
        atomic_write_text(Path(out), table.to_csv(index=False))
        click.echo(f"wrote {out}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fit hparams", message="%(prog)s (scaling-planner) %(version)s")
@click.argument("sweep", type=click.Path(dir_okay=False))
@click.option("--n", "n", default="params", show_default=True, help="Column of (non-embedding) parameters N.")
@click.option("--d", "d", default="tokens", show_default=True, help="Column of training tokens D.")
@click.option("--lr", default="lr", show_default=True, help="Column of learning rates.")
@click.option("--batch", default="batch_tokens", show_default=True, help="Column of batch sizes in tokens.")
@click.option("--loss", default="val_loss", show_default=True, help="Column of losses.")
@click.option("--wd", default="weight_decay", show_default=True, help="Column of AdamW weight decays.")
@click.option("--method", type=click.Choice(["joint", "cells"]), default="joint", show_default=True,
              help="joint: every run near each cell's optimum fitted at once; cells: a quadratic per cell, "
                   "then power laws through the cell optima.")
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the laws as JSON (plan --hparams reads it).")
@guarded
def hparams_main(sweep, n, d, lr, batch, loss, wd, method, bootstrap, seed, out):
    """Fit every hyperparameter law SWEEP (an lr x batch sweep, e.g. a probe export) supports:
    lr_opt(N, D) = k N^a_N D^a_D (the D exponent is the horizon law), B_opt(D), the AdamW timescale
    (an lr x weight-decay sweep) and B_crit(D) from steps-to-target rows; say which could not be
    fitted, and why. `plan --hparams` uses each law only within one decade of its data."""
    from .hparams import fit_hyperparameters

    if out and Path(out).suffix.lower() != ".json":
        raise InputError(f"--out: the laws are written as JSON; give a .json path, not {out!r}")
    check_writable("--out", out)
    hp = fit_hyperparameters(sweep, n=n, d=d, lr=lr, batch=batch, loss=loss, wd=wd, method=method,
                             bootstrap=bootstrap, seed=seed)
    click.echo(hp.report())
    if out:
        hp.to_json(out)
        click.echo(f"\nwrote {out}")


def _parse_at(value: str | None):
    if value is None:
        return None
    try:
        n, d = (float(x) for x in value.split(","))
    except ValueError:
        raise InputError(f"--at: give N,D (e.g. 7e9,1.4e12); got {value!r}") from None
    if not (n > 0 and d > 0):
        raise InputError(f"--at: N and D must be positive; got {value!r}")
    return n, d


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fit downstream",
                      message="%(prog)s (scaling-planner) %(version)s")
@click.argument("runs", type=click.Path(dir_okay=False))
@click.option("--n", "n", default="params", show_default=True, help="Column of parameter counts N.")
@click.option("--d", "d", default="tokens", show_default=True,
              help="Column of tokens trained so far (of each evaluation).")
@click.option("--run", default="auto", show_default=True,
              help="Column naming each evaluation's run (auto: run, run_id or name; none: one row per run).")
@click.option("--task-loss", default=None,
              help="Task-loss column, or a pattern with {task} (e.g. \"eval/downstream_bpb/{task}_bpb\") "
                   "[default: the known eval-harness namings].")
@click.option("--accuracy", multiple=True,
              help="Accuracy column, or a pattern with {task}; repeat to try several in order "
                   "(e.g. {task}_len_norm then {task}_acc).")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None,
              help="JSON/YAML file: task -> {loss: column, accuracy: column, chance: level}.")
@click.option("--task", "tasks", multiple=True, help="Fit only this task (repeatable).")
@click.option("--form", default="chinchilla", show_default=True, help="Loss form of step 1 (task loss from N, D).")
@click.option("--bootstrap", default=100, show_default=True, type=click.IntRange(min=0),
              help="Joint bootstrap refits by run.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--level", default=0.9, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--sigmoid-rows", type=click.Choice(["after_warmup", "final"]), default="after_warmup",
              show_default=True, help="Evaluations the sigmoid step is fitted on.")
@click.option("--at", default=None, help="Predict at N,D (e.g. 7e9,1.4e12): a column in the table, a star on the plots.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the fit as JSON (plan --downstream reads it) and the per-task table as <stem>_tasks.csv.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Write one PNG per task into this folder: both steps, the data and the prediction at --at.")
@guarded
def downstream_main(runs, n, d, run, task_loss, accuracy, mapping, tasks, form, bootstrap, seed, level,
                    sigmoid_rows, at, out, plots):
    """Fit task-accuracy laws to RUNS (an eval table: N, D, a run label, and a loss and an accuracy
    column per task): the two-step chain (task loss from N, D; accuracy from task loss) and the
    direct law on log accuracy, chosen per task by rolling-origin backtests over model sizes, with a
    predictability verdict per task."""
    from .downstream_fit import fit_downstream

    target = _parse_at(at)
    if out and Path(out).suffix.lower() != ".json":
        raise InputError(f"--out: the fit is written as JSON; give a .json path, not {out!r}")
    check_writable("--out", out)
    if plots:  # checked before the fit, so that a bad folder costs no work and leaves nothing half-written
        check_writable("--plots", Path(plots) / "plot.png")
    down = fit_downstream(runs, n=n, d=d, run=None if run == "none" else run, task_loss=task_loss,
                          accuracy=list(accuracy) or None, mapping=mapping, tasks=list(tasks) or None, form=form,
                          bootstrap=bootstrap, seed=seed, level=level, sigmoid_rows=sigmoid_rows,
                          progress=bootstrap >= 50)
    click.echo(down.report(target, level))
    if out:
        out = Path(out)
        csv_path = out.with_name(out.stem + "_tasks.csv")
        table = down.to_frame().to_csv()
        down.to_json(out)
        atomic_write_text(csv_path, table)
        click.echo(f"\nwrote {out} and {csv_path}")
    if plots:
        from scaling_core.io import atomic_write_bytes
        from .report import png_bytes

        folder = Path(plots)
        for name in down.tasks:
            fig = down.plot(name, target, level)
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            atomic_write_bytes(folder / f"{safe}.png", png_bytes(fig))
        click.echo(f"wrote {len(down.tasks)} plot(s) into {folder}")


_SUBCOMMANDS = {"hparams": hparams_main, "downstream": downstream_main}


def entry():
    """The ``fit`` command: ``fit RESULTS ...`` fits a loss surface; ``fit hparams SWEEP ...`` fits
    the hyperparameter laws; ``fit downstream RUNS ...`` the task-accuracy laws."""
    import sys

    sub = _SUBCOMMANDS.get(sys.argv[1] if len(sys.argv) > 1 else "")
    if sub is not None:
        return sub(sys.argv[2:], prog_name=f"fit {sys.argv[1]}")
    return main()
