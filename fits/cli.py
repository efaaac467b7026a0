"""The ``fit`` command: fit a loss surface to a results CSV and save it."""
from __future__ import annotations

from pathlib import Path

import click

from . import __version__
from ._cli import check_writable, guarded
from .errors import InputError
from ._io import atomic_write_text


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


def entry():
    """The ``fit`` command: ``fit RESULTS ...`` fits a loss surface; ``fit hparams SWEEP ...`` fits
    the hyperparameter laws."""
    import sys

    if sys.argv[1:2] == ["hparams"]:
        return hparams_main(sys.argv[2:], prog_name="fit hparams")
    return main()
