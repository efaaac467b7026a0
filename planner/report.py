"""A one-page decision report of a plan: HTML (self-contained, plots inlined) or Markdown (plots
as PNG files beside it).

What the page shows, top to bottom: the plan table (every number with its interval and source);
every risk flag; the data and the fitted law with the plan's target marked; how far the plan
extrapolates and the backtest that calibrated its interval; isoFLOP curves where the runs have
them; the alternatives side by side (compute-optimal, inference-aware, data-constrained, 0.5x and
2x N on the same budget); the batch trade-off; for a budget sweep, loss and N_opt against budget.
"""
from __future__ import annotations

import html

from fits.report import Report, figure_data, fmt, law_sections, png_bytes, table

__all__ = ["build_report", "figure_sweep"]


# --- figures ---------------------------------------------------------------------------------

def _fig_alternatives(rows):
    from fits._plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 2.9))
    for k, r in enumerate(rows):
        err = None if r["low"] is None else [[r["loss"] - r["low"]], [r["high"] - r["loss"]]]
        ax.errorbar([k], [r["loss"]], yerr=err, fmt="o", color=f"C{k}", capsize=4)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], fontsize="small")
    ax.set_ylabel("predicted loss (90% interval)")
    ax.set_title("Alternatives: predicted loss", fontsize="small")
    return png_bytes(fig)


def _fig_batch(plan):
    from fits._plot import pyplot

    rows = plan.batch_tradeoff()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 3.0))
    b = [r["batch_tokens"] for r in rows]
    ax.loglog(b, [r["steps"] for r in rows], "o-", label="steps to the plan's loss")
    ax2 = ax.twinx()
    ax2.loglog(b, [r["tokens"] for r in rows], "s--", color="C1", label="tokens to the plan's loss")
    ax.axvline(plan.extra["batch_crit_tokens"], color="k", ls=":", lw=1, label="critical batch")
    ax.axvline(plan.batch_tokens, color="C3", lw=1, label="planned batch")
    ax.set_xlabel("batch (tokens)")
    ax.set_ylabel("optimizer steps")
    ax2.set_ylabel("training tokens")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize="x-small")
    ax.set_title("Batch trade-off (McCandlish et al. 2018 with the plan's critical batch)", fontsize="small")
    return png_bytes(fig)


def figure_sweep(plans) -> bytes:
    """Loss, N and D against budget with their intervals, as PNG bytes (``plan --plot`` and the
    report's budget sweep)."""
    from fits._plot import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    C = [p.budget.flops for p in plans]
    for ax, (key, label, color) in zip(axes, (("loss", "predicted loss", "C0"), ("params", "parameters N", "C1"),
                                              ("tokens", "tokens D", "C2"))):
        ax.plot(C, [getattr(p, key) for p in plans], "o-", color=color)
        low = [p.loss_low if key == "loss" else p.intervals.get(f"{key}_low") for p in plans]
        high = [p.loss_high if key == "loss" else p.intervals.get(f"{key}_high") for p in plans]
        if all(v is not None for v in low + high):
            ax.fill_between(C, low, high, color=color, alpha=0.2,
                            label=plans[0].loss_interval.split(",")[0] if key == "loss" else "90% interval")
            ax.legend(fontsize="x-small")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        if key != "loss":
            ax.set_yscale("log")
        ax.set_xlabel("budget (training FLOPs)")
    fig.tight_layout()
    return png_bytes(fig)


# --- tables ----------------------------------------------------------------------------------

def _plan_rows(p):
    s = p.shape
    iv = p.intervals
    rng = lambda k: (f"{fmt(iv[k + '_low'], '.3g')} - {fmt(iv[k + '_high'], '.3g')}" if k + "_low" in iv else "-")
    cost = (f"{p.budget.hours_for(p.training_flops):,.0f} {p.budget.gpu or 'device'}-hours" if p.budget.peak else "-")
    if p.budget.price_per_hour:
        cost += f" = ${p.budget.cost_for(p.training_flops):,.0f}"
    return [
        ("parameters N", fmt(p.params), rng("params"), p.sources.get("params", "")),
        ("tokens D", fmt(p.tokens), rng("tokens"), p.sources.get("tokens", "")),
        ("tokens per parameter", fmt(p.tokens_per_param, ".3g"), "-", "D / N"),
        ("predicted loss", fmt(p.loss), "-" if p.loss_low is None else f"{p.loss_low:.4g} - {p.loss_high:.4g}",
         p.sources.get("loss", "")),
        ("shape", f"d_model {s.d_model}, {s.n_layers} layers", "-", f"{s.describe()}; {p.sources.get('shape', '')}"),
        ("learning rate", fmt(p.lr, ".3g"), rng("lr"), p.sources.get("lr", "")),
        ("batch (tokens)", f"{p.batch_tokens:,}", rng("batch"), p.sources.get("batch", "")),
        ("steps", f"{p.steps:,}", "-", f"tokens / batch; warmup {p.warmup_steps:,} ({p.sources.get('warmup', '')})"),
        ("training FLOPs", fmt(p.training_flops), "-", "the shape's own FLOPs per token x tokens"),
        ("cost", cost, "-", p.sources.get("hardware", "")),
        ("law", p.sources.get("form", ""), "-", f"{p.decades_beyond_fit:.2f} decades beyond the fitted budgets"),
    ]


def _settings_rows(p):
    """What a trainer types in, from the plan's recipe (``planner.export.recipe``)."""
    from .export import recipe

    r = recipe(p)
    s, sched, opt = p.shape, r["schedule"], r["optimizer"]
    rows = [
        ("model", f"{r['model']['architecture']}: {s.describe()}"),
        ("parameters", f"{s.params:,} ({s.non_embedding_params:,} non-embedding)"),
        ("optimizer", f"AdamW, betas {opt['betas'][0]}, {opt['betas'][1]}, eps {opt['eps']:g}, "
                      f"gradient clip {opt['grad_clip']:g}"),
    ]
    rows += [(f"group: {g['group']}", f"lr {g['lr']:.3g}, weight decay {g['weight_decay']:.3g}, eps {g['eps']:.3g} "
                                      f"({g['params']})") for g in opt["param_groups"]]
    rows += [
        ("schedule", f"WSD: warmup {sched['warmup_steps']:,} steps, stable {sched['stable_steps']:,}, linear decay "
                     f"to 0 over {sched['decay_steps']:,} (total {sched['total_steps']:,})"),
        ("batch", f"{p.batch_sequences:,} sequences x {s.seq_len:,} tokens = {p.batch_tokens:,} tokens"),
        ("tokens", f"{r['tokens']:,} ({p.steps:,} steps)"),
        ("evaluate / checkpoint", f"every {r['eval']['every_steps']:,} steps; keep the checkpoints at steps "
                                  + ", ".join(f"{c:,}" for c in r["eval"]["checkpoint_steps"])),
    ]
    return rows


def _alternatives(fit, plans, budget_flops):
    """Rows (name, N, D, loss, low, high, training FLOPs) for the plan's alternatives on one budget."""
    from .plan import _n_kind, count_params

    same = [p for p in plans if p.budget.flops == budget_flops]
    main = next(p for p in same if p.variant == "compute-optimal")
    rows = []
    for p in same:
        name = p.variant + (" (data-constrained)" if "unique_tokens" in p.extra else "")
        rows.append({"name": name, "params": p.params, "tokens": p.tokens, "loss": p.loss, "low": p.loss_low,
                     "high": p.loss_high, "flops": p.training_flops})
    if "U" in fit.law.variables or "unique_tokens" in main.extra:
        return rows
    family = main.family
    kind = _n_kind(fit)
    for factor in (0.5, 2.0):
        shape = family.for_params(factor * main.params, kind)
        n = float(count_params(shape, kind))
        d = budget_flops / shape.flops_per_token
        if fit.n_bootstrap:
            loss, lo, hi = (float(v) for v in fit.interval(n, d, level=0.9))
        else:
            loss, lo, hi = float(fit.predict(n, d)), None, None
        rows.append({"name": f"{factor:g}x N, same budget", "params": n, "tokens": d, "loss": loss, "low": lo,
                     "high": hi, "flops": shape.flops_per_token * d})
    return rows


def build_report(plans, fit, data=None) -> Report:
    """The report of ``plans`` (from :func:`planner.make_plans`) made with ``fit``; ``data`` is the
    runs behind the fit (a tidy frame with N, D, C, loss) when they are at hand."""
    main_plans = [p for p in plans if p.variant == "compute-optimal"]
    head = main_plans[-1] if len(main_plans) == 1 else main_plans[len(main_plans) // 2]
    sweep = len(main_plans) > 1
    figures = {"data": figure_data(fit, data, [(p.budget.flops, p.loss, p.loss_low, p.loss_high)
                                               for p in main_plans])}
    sections = []
    hdr = ["quantity", "value", "90% interval", "source"]
    chosen = next((p for p in plans if p.variant == "inference-aware" and p.budget.flops == head.budget.flops), head)
    rows = _plan_rows(chosen)
    title = (f"Training plan: {head.budget.flops:.3g} FLOPs" if not sweep else
             f"Training plans: {main_plans[0].budget.flops:.3g} - {main_plans[-1].budget.flops:.3g} FLOPs")
    sections.append((f"Plan at {head.budget.flops:.3g} FLOPs ({chosen.variant})",
                     table(hdr, rows, False), table(hdr, rows, True)))
    srows = _settings_rows(chosen)
    sh = ["setting", "value"]
    sections.append((f"Trainer's settings ({chosen.variant} plan)", table(sh, srows, False, numeric=()),
                     table(sh, srows, True)))
    if chosen.extra.get("downstream"):
        recs = chosen.extra["downstream"]
        dh = ["task", "accuracy", f"{recs[0]['level']:.0%} interval", "method / verdict"]
        drows = [(r["task"], fmt(r["accuracy"], ".1%") if r["accuracy"] is not None else "not predicted",
                  f"[{r['lo']:.1%}, {r['hi']:.1%}]" if r["accuracy"] is not None else "",
                  r["method"].replace("_", "-") if r["accuracy"] is not None else f"{r['verdict']}: {r['reason']}")
                 for r in recs]
        sections.append((f"Task accuracy ({chosen.variant} plan)", table(dh, drows, False), table(dh, drows, True)))
    variants = {p.variant for p in plans}
    shared = [r for r in head.risks if all(r in p.risks for p in plans)]  # said once, not per plan
    risks = list(dict.fromkeys([*(("every plan: " if len(variants) > 1 else "") + r for r in shared),
                                *(f"{p.variant}{'' if len(plans) == len(variants) else f' at {p.budget.flops:.3g}'}: {r}"
                                  for p in plans for r in p.risks if r not in shared)]))
    rh = "<ul>" + "".join(f'<li class="risk">{html.escape(r)}</li>' for r in risks) + "</ul>" if risks else \
        "<p>No risk flags.</p>"
    sections.append(("Risk flags", rh, "\n".join(f"- {r}" for r in risks) or "No risk flags."))
    bt = fit.trust.get("backtest")
    extrap = (f"The plan lies {head.decades_beyond_fit:.2f} decades of compute beyond the largest budget the law "
              f"was fitted on ({fit.data_range['C_max']:.3g} FLOPs; {fit.n_points} runs, N "
              f"{fit.data_range['N_min']:.3g}-{fit.data_range['N_max']:.3g}). Interval: {fit.interval_method}.")
    if bt:
        extrap += (f" Own backtest: fitted without the largest budget ({bt['holdout_flops']:.3g} FLOPs), the law "
                   f"predicted its {bt['n_test']} runs with mean |error| {bt['mean_abs_rel_error']:.2%} (worst "
                   f"{bt['max_abs_rel_error']:.2%}); its 90% interval covered {bt['coverage']:.0%} of them.")
    if fit.selection is not None:
        extrap += f" Form: {fit.selection_reason}."
    sections.append(("Data, fitted law and extrapolation", f"{{fig:data}}<p>{html.escape(extrap)}</p>",
                     f"{{fig:data}}\n\n{extrap}"))
    law_sections(fit, data, sections, figures)
    alts = _alternatives(fit, plans, head.budget.flops)
    figures["alternatives"] = _fig_alternatives(alts)
    arows = [(a["name"], fmt(a["params"], ".3g"), fmt(a["tokens"], ".3g"), fmt(a["loss"]),
              "-" if a["low"] is None else f"{a['low']:.4g} - {a['high']:.4g}", fmt(a["flops"], ".3g"))
             for a in alts]
    h = ["alternative", "N", "D", "predicted loss", "90% interval", "training FLOPs"]
    sections.append(("Alternatives on the same budget", "{fig:alternatives}" + table(h, arows, False),
                     "{fig:alternatives}\n\n" + table(h, arows, True)))
    if head.batch_tradeoff():
        figures["batch"] = _fig_batch(head)
        brows = [(f"{r['batch_over_bcrit']:g} x B_crit", f"{r['batch_tokens']:,.0f}", fmt(r["tokens"], ".4g"),
                  f"{r['steps']:,.0f}") for r in head.batch_tradeoff()]
        h = ["batch", "tokens per batch", "tokens to the loss", "steps"]
        sections.append(("Batch trade-off", "{fig:batch}" + table(h, brows, False),
                         "{fig:batch}\n\n" + table(h, brows, True)))
    else:
        msg = "No critical-batch estimate for this law's loss unit: " + head.sources.get("batch_crit", "")
        sections.append(("Batch trade-off", f"<p class=\"muted\">{html.escape(msg)}</p>", msg))
    if sweep:
        figures["sweep"] = figure_sweep(main_plans)
        srows = [(fmt(p.budget.flops, ".3g"), fmt(p.params, ".3g"), fmt(p.tokens, ".3g"), fmt(p.loss),
                  "-" if p.loss_low is None else f"{p.loss_low:.4g} - {p.loss_high:.4g}") for p in main_plans]
        h = ["budget", "N", "D", "loss", "90% interval"]
        sections.append(("Budget sweep", "{fig:sweep}" + table(h, srows, False), "{fig:sweep}\n\n"
                         + table(h, srows, True)))
    return Report(title=title, sections=sections, figures=figures)
