"""The ``plan`` command: a budget in, a training plan out (printed, CSV, plot)."""
from __future__ import annotations

import math
from pathlib import Path

import click

from fits import __version__
from scaling_core.cli import check_writable, fail, guarded
from scaling_core.io import atomic_write_bytes, atomic_write_text
from fits.errors import InputError

from scaling_core.budget import UNITS, Budget


def parse_budgets(text: str) -> list[float]:
    """'1e21' -> [1e21]; '1e19:1e24:11' -> 11 log-spaced budgets from 1e19 to 1e24."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--budget: must be a positive number or START:STOP:COUNT; got {text!r}") from None
    if len(values) == 1:
        (v,) = values
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"--budget: must be a finite positive number; got {text!r}")
        return values
    if len(values) != 3:
        raise InputError(f"--budget: a sweep is START:STOP:COUNT; got {text!r}")
    start, stop, count = values
    if not (math.isfinite(start) and math.isfinite(stop) and 0 < start < stop):
        raise InputError(f"--budget: a sweep needs 0 < START < STOP; got {text!r}")
    if count != int(count) or not 2 <= count <= 1000:
        raise InputError(f"--budget: COUNT must be a whole number from 2 to 1000; got {text!r}")
    n = int(count)
    return [math.exp(math.log(start) + i * (math.log(stop) - math.log(start)) / (n - 1)) for i in range(n)]


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v}"


_N_WORDS = {"non_embedding": "non-embedding, as the fit counts N", "total": "total, as the fit counts N",
            "unspecified": "total: the fit does not say, read as Chinchilla's total count"}


def _card(plan, explain: bool = False) -> str:
    s, b = plan.shape, plan.budget
    label = plan.loss_interval if explain else (plan.loss_interval.split(",")[0]
                                                + (" (calibrated)" if "calibrated on" in plan.loss_interval else ""))
    iv = (f"  [{plan.loss_low:.4f}, {plan.loss_high:.4f}] {label}"
          if plan.loss_low is not None else f"  ({plan.loss_interval})")
    tf = plan.training_flops
    spend = (f"  training FLOPs      {tf:.4g} = {tf / b.flops:.2f}x the budget"
             + (" (OVER BUDGET)" if tf > 1.005 * b.flops else "")
             + (f" = {b.hours_for(tf):,.0f} {b.gpu or 'device'}-hours" if b.peak else "")
             + (f" = ${b.cost_for(tf):,.0f}" if b.price_per_hour else ""))
    lines = [
        f"Plan ({plan.variant}) for a budget of {b.flops:.3g} FLOPs"
        + (f" = {b.gpu_hours:,.0f} {b.gpu or 'device'}-hours at MFU {b.mfu}" if b.gpu_hours else "")
        + (f" = ${b.cost_usd:,.0f}" if b.cost_usd else ""),
        spend,
        f"  parameters N        {plan.params:.4g} ({_N_WORDS.get(plan.extra.get('n_kind'), 'total')})"
        + (f"   [{plan.intervals['params_low']:.3g}, {plan.intervals['params_high']:.3g}]"
           if "params_low" in plan.intervals else ""),
        f"  tokens D            {plan.tokens:.4g}"
        + (f"   [{plan.intervals['tokens_low']:.3g}, {plan.intervals['tokens_high']:.3g}]"
           if "tokens_low" in plan.intervals else ""),
        f"  tokens / parameter  {plan.tokens_per_param:.3g}",
        f"  predicted loss      {plan.loss:.4f}" + iv,
        f"  law                 {plan.sources['form']}"
        + (f"; the candidate forms part by {plan.extra['form_spread']:.2%} here" if "form_spread" in plan.extra else ""),
        f"  model               {s.describe()}",
        f"                      {s.params:,} params ({s.non_embedding_params:,} non-embedding), "
        f"{s.flops_per_token:.4g} FLOPs/token",
        f"  batch               {plan.batch_tokens:,} tokens = {plan.batch_sequences:,} sequences",
        f"  steps               {plan.steps:,} (warmup {plan.warmup_steps:,})",
        f"  learning rate       {plan.lr:.3g}" + (f"   [{plan.intervals['lr_low']:.3g}, {plan.intervals['lr_high']:.3g}]"
                                                  if "lr_low" in plan.intervals else ""),
    ]
    if "lr_hidden" in plan.extra:
        e = plan.extra
        lines.append(f"  muP groups          embedding {e['lr_embedding']:.3g}, hidden {e['lr_hidden']:.3g} "
                     f"(= lr / m, m = {e['width_multiplier']:.3g}; the SP-equivalent lr of hidden matrices), "
                     f"readout {e['lr_readout']:.3g} with logits x {e['logit_multiplier']:.3g}")
    lines.append(f"  schedule            {plan.schedule.split(' (')[0]}")
    if "wd_hidden" in plan.extra:
        e = plan.extra
        lines.append(f"  weight decay        base {plan.weight_decay:.3g} (set with the base lr): embedding "
                     f"{e['wd_embedding']:.3g}, hidden {e['wd_hidden']:.3g} (= wd x m, so lr x wd is the same in every "
                     f"matrix group), readout {e['wd_readout']:.3g}, norms and biases 0")
    else:
        lines.append(f"  weight decay        {plan.weight_decay:.3g}")
    for k in ("unique_tokens", "epochs", "effective_tokens", "repetition_risk"):
        if k in plan.extra:
            lines.append(f"  {k.replace('_', ' '):<20}{_fmt(plan.extra[k])}")
    if "batch_crit_tokens" in plan.extra:
        lines.append(f"  critical batch      ~{plan.extra['batch_crit_tokens']:,.0f} tokens; trade-off "
                     "(batch -> tokens, steps for the same loss):")
        lines += [f"    {r['batch_over_bcrit']:>4g} x B_crit = {r['batch_tokens']:>14,.0f}: "
                  f"{r['tokens']:.4g} tokens, {r['steps']:,.0f} steps" for r in plan.batch_tradeoff()]
    if "lifetime_flops" in plan.extra:
        e = plan.extra
        lines.append(f"  serving             {e['inference_tokens']:.3g} tokens at {e['serving_flops_per_token']:.3g} "
                     f"FLOPs each, {e['serving_speed_vs_compute_optimal']:.2f}x the compute-optimal model's speed"
                     + (f" (~{e['serving_tokens_per_second']:,.0f} tokens/s per {b.gpu or 'device'} at MFU {b.mfu})"
                        if "serving_tokens_per_second" in e else ""))
        lines.append(f"  lifetime FLOPs      {e['lifetime_flops']:.4g} (training + serving), "
                     f"{e['lifetime_flops_saved']:.0%} less than the compute-optimal model's")
    if plan.extra.get("downstream"):
        lines += _downstream_lines(plan.extra["downstream"], explain)
    if plan.risks:
        lines.append(f"  risks ({plan.variant} plan, most severe first):")
        lines += [f"    - {r}" for r in plan.risks]
    lines.append("  sources:" + ("" if explain else " (short; --explain for each in full)"))
    src = _sources(plan.sources, explain)
    w = max(map(len, src)) + 2
    lines += [f"    {k:<{w}}{v}" for k, v in src.items()]
    return "\n".join(lines)


def _downstream_lines(records, explain: bool) -> list[str]:
    """The card's task-accuracy block: predictable tasks with their interval, the others' verdicts."""
    level = records[0]["level"]
    lines = [f"  task accuracy       ({level:.0%} intervals; a task that is not predictable gets its verdict only)"]
    w = max(len(r["task"]) for r in records) + 2
    for r in records:
        if r["accuracy"] is not None:
            lines.append(f"    {r['task']:<{w}}{100 * r['accuracy']:5.1f}%  [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"
                         f"  {r['method'].replace('_', '-')}, chance {100 * r['chance']:.0f}%")
        else:
            lines.append(f"    {r['task']:<{w}}  --    {r['verdict']}" + (f": {r['reason']}" if explain else ""))
    return lines


def _short(text: str, width: int = 84) -> str:
    head = text.split("; ")[0]
    return head if len(head) <= width else head[: width - 1].rstrip() + "…"


def _sources(sources: dict, explain: bool) -> dict:
    """Each source in full (``explain``), else its first clause, with repeated ones said once."""
    if explain:
        return dict(sources)
    out: dict[str, str] = {}
    for key, text in sources.items():
        short = _short(text)
        same = next((k for k, v in out.items() if v == short), None)
        if same is None:
            out[key] = short
        else:
            out[f"{same}, {key}"] = out.pop(same)
    return out


def _alternatives_table(plans) -> str:
    """The inference-aware plan beside its alternatives: what each costs over its life."""
    rows = [["", "N", "D", "loss", "training FLOPs", "vs budget", "lifetime FLOPs", "serving speed"]]
    for p in plans:
        e = p.extra
        rows.append([p.variant, f"{p.params:.3g}", f"{p.tokens:.3g}", f"{p.loss:.4f}", f"{p.training_flops:.3g}",
                     f"{p.training_flops / p.budget.flops:.2f}x", f"{e['lifetime_flops']:.3g}",
                     f"{e['serving_speed_vs_compute_optimal']:.2f}x"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
    return ("Alternatives for the same serving volume (the plan above is inference-aware: it spends the budget):\n"
            + text + "\n  same-loss: the compute-optimal loss at the least lifetime FLOPs (Sardana et al. 2024); "
            "it trains beyond the budget by the factor shown")


_TABLE = (("budget_flops", "budget", ".3g"), ("params", "N", ".3g"), ("tokens", "D", ".3g"),
          ("tokens_per_param", "D/N", ".3g"), ("loss", "loss", ".4f"), ("loss_low", "low", ".4f"),
          ("loss_high", "high", ".4f"), ("model_d_model", "d_model", "d"), ("model_n_layers", "layers", "d"),
          ("batch_tokens", "batch", ",d"), ("steps", "steps", ",d"), ("lr", "lr", ".3g"),
          ("gpu_hours", "gpu_h", ",.0f"), ("decades_beyond_fit", "extrap", ".2f"))


def _table(rows) -> str:
    cols = [(k, h, f) for k, h, f in _TABLE if any(r.get(k) is not None for r in rows)]
    if len({r["variant"] for r in rows}) > 1:
        cols.insert(1, ("variant", "plan", "s"))
    cells = [[h for _, h, _ in cols]] + [
        ["-" if r.get(k) is None else format(r[k], f) for k, _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fit_data(fit):
    """The runs behind a saved fit, read back from the file it records as its source (for the
    report's law plot), or None when that file is not at hand or no longer matches."""
    src, cols = fit.provenance.get("source"), fit.options.get("columns") or {}
    if not src or not Path(src).is_file():
        return None
    from fits import surface_data

    try:
        return surface_data(src, n=cols.get("n", "params"), d=cols.get("d", "tokens"), loss=cols.get("loss", "loss"),
                            flops=cols.get("flops"))
    except InputError:
        return None


def _plans_json(plans) -> str:
    import json

    return json.dumps({"version": __version__, "plans": [p.to_dict() for p in plans]}, indent=2)


#: below this many FLOPs no model trains on a single sequence worth of tokens
MIN_FLOPS_BUDGET = 1e10


def check_flops_budget(flops: float) -> None:
    """A FLOPs budget too small to be one (it looks like hours or dollars) fails, naming the fix."""
    if flops < MIN_FLOPS_BUDGET:
        raise InputError(f"--budget: {flops:g} FLOPs is too small to train any model (< {MIN_FLOPS_BUDGET:.0e}); if it "
                         f"is GPU-hours, add --unit gpu-hours --gpu h100; if dollars, --unit usd --price-per-hour P "
                         "--gpu h100; FLOPs are written like 1e21")


def _fit_results(path):
    """Fit a results CSV on the fly: N from params (a probe export's non-embedding count, which
    predicted the validation runs at least as well as the total count; see
    benchmarks/results/validation.json), else params_total; D from tokens, loss from
    loss (else val_loss); a probes export contributes its end-of-cooldown rows only."""
    from fits import fit_loss_surface
    from fits import final_rows, read_table, surface_data

    t = read_table(path, "--results")
    t = final_rows(t)
    n = "params_total" if "params_total" in t.columns and "params" not in t.columns else "params"
    loss = "loss" if "loss" in t.columns or "val_loss" not in t.columns else "val_loss"
    fit = fit_loss_surface(t, n=n, d="tokens", loss=loss, bootstrap=200, seed=0)
    return fit, surface_data(t, n=n, d="tokens", loss=loss)


def _hparams_from_results(path):
    """A fitted lr/batch law when the results sweep learning rates and batch sizes, else None
    (the plan's default: the probes' own settings, or the published prior)."""
    import pandas as pd

    from fits.hparams import fit_hyperparameters

    t = pd.read_csv(path)
    cols = {"params", "tokens", "lr", "batch_tokens"}
    if not cols <= set(t.columns) or t["lr"].nunique() < 3:
        return None
    loss = "val_loss" if "val_loss" in t.columns else "loss"
    try:
        return fit_hyperparameters(t, loss=loss)
    except InputError:
        return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="plan", message="%(prog)s (scaling-planner) %(version)s")
@click.option("--budget", help="Training budget: a number, or START:STOP:COUNT for a log-spaced sweep.")
@click.option("--unit", type=click.Choice(UNITS), default="flops", show_default=True,
              help="Unit of --budget.")
@click.option("--gpu", default=None, help="Accelerator for hours and cost (a100, h100, h200, b200, mi300x, tpu-v5e, ...).")
@click.option("--mfu", type=float, default=0.4, show_default=True, help="Model FLOPs utilisation assumed.")
@click.option("--peak-tflops", type=float, default=None, help="Override the accelerator's dense bf16 peak.")
@click.option("--price-per-hour", type=float, default=None, help="Price of one accelerator-hour (USD).")
@click.option("--preset", default=None, help="Published fit to use (default besiroglu2024); see --list-presets.")
@click.option("--fit", "fit_path", default=None, type=click.Path(dir_okay=False), help="A saved fit (JSON from `fit`).")
@click.option("--results", default=None, type=click.Path(dir_okay=False),
              help="A results CSV to fit on the fly (columns params or params_total, tokens, loss or val_loss).")
@click.option("--list-presets", is_flag=True, help="List the published presets and exit.")
@click.option("--level", type=float, default=0.9, show_default=True, help="Interval level.")
@click.option("--seq-len", type=int, default=None,
              help="Context length [default: the probes' for a fit of probes, else 2048].")
@click.option("--vocab", "vocab_size", type=int, default=None,
              help="Vocabulary [default: the probes' for a fit of probes, else 32000].")
@click.option("--kv-heads", type=int, default=None,
              help="Key/value heads (grouped-query attention) [default: 8, or as many as there are heads; a fit of "
                   "probes: the probes'].")
@click.option("--tp", type=int, default=None,
              help="Tensor-parallel degree: query heads are a multiple of it [default: 8].")
@click.option("--hparams", default=None,
              help="Learning-rate/batch rule: deepseek2024, steplaw2025, probes (the probes' own settings), or a "
                   "fitted law (JSON from fits.fit_hyperparameters) [default: probes for a fit of probes, else "
                   "deepseek2024].")
@click.option("--inference-tokens", type=float, default=None,
              help="Tokens to serve over the model's life: also plan the inference-aware model.")
@click.option("--unique-tokens", type=float, default=None,
              help="Unique training tokens available: plan for repeated data and report its risk.")
@click.option("--downstream", default=None, type=click.Path(dir_okay=False),
              help="Task-accuracy laws (JSON from `fit downstream`): add each predictable task's accuracy with its "
                   "interval to the plan, and the verdict of the others.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the plans: .csv (one row of numbers per plan variant) or .json (every number, interval, "
                   "risk and source).")
@click.option("--json", "as_json", is_flag=True, help="Print the plans as JSON (planner/plan.schema.json) instead of the card.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (files are still written).")
@click.option("--explain", is_flag=True, help="Print every source in full.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Plot loss, N and D against budget (PNG).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a one-page decision report: .html (self-contained, opens offline) or .md (plots "
                   "as PNG files beside it).")
@click.option("--emit-grid", type=click.Path(dir_okay=False), default=None,
              help="Write a probe grid (TOML) that trains the planned model with the probe runner.")
@click.option("--emit-config", type=click.Path(file_okay=False), default=None,
              help="Write the planned model and recipe into DIR: config.json (Hugging Face), recipe.json/.yaml, "
                   "and torchtitan.toml with torchtitan_flavor.py.")
@click.option("--isoflop", "emit_isoflop", is_flag=True,
              help="With --emit-grid: also the shapes nearest N/3 and 3N on the same budget.")
@guarded
def main(budget, unit, gpu, mfu, peak_tflops, price_per_hour, preset, fit_path, results, list_presets,
         level, seq_len, vocab_size, kv_heads, tp, hparams, inference_tokens, unique_tokens, downstream, out, as_json, quiet,
         explain, plot, report, emit_grid, emit_config, emit_isoflop):
    """Plan a language-model training run for a compute budget."""
    from .plan import make_plans
    from fits.presets import DEFAULT_PRESET, list_presets as _list

    if list_presets:
        for p in _list():
            click.echo(f"{p['name']:<24}{p['form']:<18}{p['title']}\n{'':<24}{p['citation']}")
        return
    if budget is None:
        fail("--budget: required (e.g. --budget 1e21, or --budget 1e19:1e24:11)")
    if sum(x is not None for x in (preset, fit_path, results)) > 1:
        fail("--preset/--fit/--results: give at most one source of the law")
    if not 0 < level < 1:
        fail(f"--level: must be strictly between 0 and 1; got {level}")
    if report:
        from fits.report import check_report_path

        check_report_path(report)
    for option, path in (("--out", out), ("--plot", plot), ("--report", report), ("--emit-grid", emit_grid)):
        check_writable(option, path)
    if out and Path(out).suffix.lower() not in (".csv", ".json"):
        fail(f"--out: writes .csv or .json, as its suffix says; got {out!r}")
    if emit_isoflop and not emit_grid:
        fail("--isoflop: goes with --emit-grid PATH")
    amounts = parse_budgets(budget)
    if unit == "flops":
        check_flops_budget(min(amounts))
    hw = dict(gpu=gpu, mfu=mfu, peak_tflops=peak_tflops, price_per_hour=price_per_hour)
    budgets = [Budget.from_unit(a, unit, **hw) for a in amounts]
    hp = hparams
    if hparams is not None and hparams.endswith(".json"):
        from fits.hparams import load_hparams
        hp = load_hparams(hparams)
    data = None
    if results is not None:
        source, data = _fit_results(results)
        if hp is None:
            hp = _hparams_from_results(results)
    else:
        source = fit_path or preset or DEFAULT_PRESET
    for option, value in (("--emit-grid", emit_grid), ("--emit-config", emit_config)):
        if value and len(budgets) != 1:
            fail(f"{option}: needs a single budget, not a sweep")
    from .plan import resolve_fit

    source = resolve_fit(source)
    if report and data is None:
        data = _fit_data(source)
    down = None
    if downstream is not None:
        from fits.downstream import load_downstream

        down = load_downstream(downstream)
    plans = make_plans(source, budgets, level=level, seq_len=seq_len, vocab_size=vocab_size, kv_heads=kv_heads, tp=tp,
                       hparams=hp, inference_tokens=inference_tokens, unique_tokens=unique_tokens)
    if down is not None:
        from .plan import with_downstream

        plans = with_downstream(plans, down, level, source=f"fit downstream ({downstream})")
    rows = [p.to_row() for p in plans]
    if plot:
        from .report import figure_sweep
    png = figure_sweep(plans) if plot else None
    page = None
    if report:
        from .report import build_report

        page = build_report(plans, source, data)
    echo = (lambda *a, **k: None) if quiet else click.echo
    if as_json:
        echo(_plans_json(plans))
    elif len(plans) == 1:
        echo(_card(plans[0], explain))
    elif inference_tokens is not None and len(plans) == 3:
        chosen = next(p for p in plans if p.variant == "inference-aware")
        echo(_card(chosen, explain) + "\n\n" + _alternatives_table(plans))
    else:
        echo(_table(rows))
        echo(f"\nlaw: {_short(plans[0].sources['loss'])}\nform: {_short(plans[0].sources['form'])}"
             f"\nlr/batch: {_short(plans[0].sources['lr'])}")
        common = [r for r in plans[0].risks if all(r in p.risks for p in plans)]  # said once, not per budget
        risky = [f"every budget: {r}" for r in common] + [f"{p.budget.flops:.3g} ({p.variant}): {r}" for p in plans
                                                          for r in p.risks if r not in common]
        if risky:
            echo("risks:\n" + "\n".join(f"  - {r}" for r in risky))
    writes = []  # (option, path, write): everything is computed before the first file is written
    if emit_grid:
        from .emit import plan_grid_toml

        main_plan = next(p for p in plans if p.variant == "compute-optimal")
        text = plan_grid_toml(main_plan, source, fit_path or results, isoflop=emit_isoflop)
        writes.append(("--emit-grid", emit_grid, lambda: [atomic_write_text(Path(emit_grid), text)]))
    if emit_config:
        from .export import write_config_dir

        chosen = next((p for p in plans if p.variant == "inference-aware"), plans[0])  # the plan the card shows
        writes.append(("--emit-config", emit_config, lambda: write_config_dir(chosen, emit_config)))
    if out:
        if Path(out).suffix.lower() == ".json":
            writes.append(("--out", out, lambda: [atomic_write_text(Path(out), _plans_json(plans)) or Path(out)]))
        else:
            writes.append(("--out", out, lambda: [_write_csv(Path(out), rows) or Path(out)]))
    if png:
        writes.append(("--plot", plot, lambda: [atomic_write_bytes(Path(plot), png)]))
    if page is not None:
        writes.append(("--report", report, lambda: page.write(report)))
    for option, path, write in writes:
        try:
            written = write()
        except OSError as exc:
            fail(f"{option}: cannot write {path!r} ({exc.strerror or exc}); choose a writable path")
        echo("wrote " + ", ".join(str(w) for w in written)
                   + (f" (probe run {emit_grid})" if option == "--emit-grid" else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
