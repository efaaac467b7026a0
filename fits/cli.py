"""The ``fit`` command: fit a loss surface to a results CSV and save it."""
from __future__ import annotations

from pathlib import Path

import click

from ._cli import guarded
from .errors import InputError
from ._io import atomic_write_text


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--n", "n", default="params", show_default=True, help="Column of parameter counts N.")
@click.option("--d", "d", default="tokens", show_default=True, help="Column of training tokens D.")
@click.option("--loss", default="loss", show_default=True, help="Column of losses.")
@click.option("--flops", default=None, help="Column of training FLOPs; D = C / 6N when --d is absent.")
@click.option("--form", default="chinchilla", show_default=True, help="Functional form of the law.")
@click.option("--unique-tokens", default=None, help="Column of unique tokens (data_constrained form).")
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap refits for intervals.")
@click.option("--group", default=None, help="Resample whole groups of this column in the bootstrap.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Interval level of the parameter table.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the fit as JSON here, and its parameter table as <stem>_params.csv beside it.")
@click.option("--isoflop", is_flag=True, help="Also run the isoFLOP cross-check (Approaches 1 and 2).")
@click.option("--backtest", "holdout", type=click.IntRange(min=1), default=None,
              help="Also backtest: hold out this many largest budgets and score the predictions.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Save a plot of the fit (PNG).")
@guarded
def main(results, n, d, loss, flops, form, unique_tokens, bootstrap, group, seed, level, out,
         isoflop, holdout, plot):
    """Fit a scaling law L(N, D) to RESULTS (a CSV with one row per run)."""
    from . import backtest, fit_loss_surface, isoflop_analysis
    from ._data import surface_data

    fit = fit_loss_surface(results, n=n, d=d, loss=loss, flops=flops, form=form,
                           unique_tokens=unique_tokens, bootstrap=bootstrap, seed=seed, group=group,
                           progress=bootstrap >= 500)
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
    if plot:
        frame = surface_data(results, n=n, d=d, loss=loss, flops=flops)
        ax = fit.plot(data=frame)
        ax.figure.savefig(plot, dpi=120, bbox_inches="tight")
        click.echo(f"wrote {plot}")


if __name__ == "__main__":  # pragma: no cover
    main()
