"""Turning a loss-surface fit (or a published preset) and a budget into a training plan."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fits.errors import InputError
from fits.presets import resolve_fit
from scaling_core.budget import Budget
from scaling_core.shape import PRODUCTION_TP, ModelShape, ShapeFamily, count_params, family_shapes

from . import rules
from .optimizer import _beyond, _critical_batch, _group_lrs, _hyperparameters, _weight_decay

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AllocationError", "Plan", "make_plan", "make_plans", "plans_to_frame", "resolve_fit", "risk_severity"]

EXTRAPOLATION_WARN_DECADES = 1.0
MIN_STEPS = 1000               # fewer optimizer steps: the lr/batch rules were not fitted there
TIMESCALE_RANGE = (0.05, 5.0)  # sensible AdamW timescale 1/(lr wd) as a fraction of the run


@dataclass(frozen=True)
class Plan:
    """A training plan for one budget. Every number's origin is in ``sources``."""

    variant: str
    budget: Budget
    params: float
    tokens: float
    loss: float
    loss_low: float | None
    loss_high: float | None
    loss_interval: str
    shape: ModelShape
    batch_tokens: int
    batch_sequences: int
    steps: int
    lr: float
    warmup_steps: int
    schedule: str
    weight_decay: float
    decades_beyond_fit: float
    risks: tuple = ()
    sources: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    family: ShapeFamily = field(default_factory=ShapeFamily)

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def training_flops(self) -> float:
        """FLOPs of training this plan's shape on its tokens (its own FLOPs per token, not 6ND)."""
        return self.shape.flops_per_token * self.tokens

    def batch_tradeoff(self) -> list[dict]:
        """Tokens and steps to this plan's loss at 0.5, 1, 2 and 4 x the critical batch (empty when
        the plan has no critical-batch estimate)."""
        if "batch_crit_tokens" not in self.extra:
            return []
        return rules.batch_tradeoff(self.tokens, self.batch_tokens, self.extra["batch_crit_tokens"])

    @property
    def risk_level(self) -> str:
        """The most severe of the plan's risks: "HIGH", "warning", "note" or "none"."""
        return min((risk_severity(r) for r in self.risks), key=SEVERITIES.index, default="none")

    def to_row(self) -> dict:
        """One flat record of numbers (the CSV row): plan figures, intervals, shape, optimiser,
        hardware. Words (risks, sources) are in :meth:`to_dict`."""
        b = self.budget
        row = {
            "variant": self.variant, "budget_flops": b.flops, "training_flops": self.training_flops,
            "params": self.params, "tokens": self.tokens, "tokens_per_param": self.tokens_per_param,
            "loss": self.loss, "loss_low": self.loss_low, "loss_high": self.loss_high,
        }
        row.update({k: v for k, v in self.intervals.items()})
        row.update({f"model_{k}": v for k, v in self.shape.to_dict().items()})
        row.update({
            "batch_tokens": self.batch_tokens, "batch_sequences": self.batch_sequences,
            "steps": self.steps, "lr": self.lr, "warmup_steps": self.warmup_steps,
            "schedule": self.schedule.split(":")[0], "weight_decay": self.weight_decay,
            "gpu": b.gpu, "mfu": b.mfu if b.peak else None, "gpu_hours": b.gpu_hours,
            "cost_usd": b.cost_usd, "decades_beyond_fit": self.decades_beyond_fit,
        })
        row.update({k: v for k, v in self.extra.items()
                    if (isinstance(v, (int, float)) and not isinstance(v, bool)) or k in _ROW_LABELS})
        for r in self.extra.get("downstream", ()):  # predictable tasks only: the others have no number
            if r["accuracy"] is not None:
                row.update({f"acc_{r['task']}": r["accuracy"], f"acc_{r['task']}_low": r["lo"],
                            f"acc_{r['task']}_high": r["hi"]})
        row["risk_level"] = self.risk_level
        return row

    def to_dict(self) -> dict:
        """Every number, interval, risk and source of the plan, JSON-ready (``plan --json``;
        the schema is ``planner/plan.schema.json``)."""
        b = self.budget
        extra = {k: v for k, v in self.extra.items() if not isinstance(v, Plan)}
        d = {
            "variant": self.variant,
            "budget": {"flops": b.flops, "gpu": b.gpu, "peak_tflops": b.peak / 1e12 if b.peak else None,
                       "mfu": b.mfu, "price_per_hour": b.price_per_hour, "gpu_hours": b.gpu_hours,
                       "cost_usd": b.cost_usd},
            "params": self.params, "n_kind": self.extra.get("n_kind", "unspecified"), "tokens": self.tokens,
            "tokens_per_param": self.tokens_per_param, "training_flops": self.training_flops,
            "loss": {"point": self.loss, "low": self.loss_low, "high": self.loss_high,
                     "interval": self.loss_interval, "unit": self.extra.get("loss_unit")},
            "intervals": dict(self.intervals),
            "shape": self.shape.to_dict(),
            "optimizer": {"lr": self.lr, "weight_decay": self.weight_decay, "batch_tokens": self.batch_tokens,
                          "batch_sequences": self.batch_sequences, "steps": self.steps,
                          "warmup_steps": self.warmup_steps, "schedule": self.schedule},
            "decades_beyond_fit": self.decades_beyond_fit,
            "risk_level": self.risk_level,
            "risks": [{"severity": risk_severity(r), "text": r} for r in self.risks],
            "sources": dict(self.sources),
            "extra": extra,
        }
        alternatives = {k: v.to_dict() for k, v in self.extra.items() if isinstance(v, Plan)}
        if alternatives:
            d["alternatives"] = alternatives
        return _jsonable(d)

    def to_frame(self) -> "pd.DataFrame":
        """The plan as a one-row DataFrame (see :func:`plans_to_frame` for several)."""
        return plans_to_frame([self])


def with_downstream(plans, down, level: float = 0.9, source: str = "downstream fit") -> list:
    """Each plan with the task accuracies of ``down`` (a :class:`fits.downstream.DownstreamFit`) at
    its (N, D) in ``extra["downstream"]``: the accuracy and its interval for predictable tasks, the
    verdict and its reason for the others. A plan beyond the eval table's largest model by more than
    a decade gets a note. Needs numpy only."""
    import dataclasses

    n_max = max(down.options.get("sizes") or [0.0])
    out = []
    for p in plans:
        recs = down.predict(p.params, p.tokens, level)
        risks = p.risks
        beyond = math.log10(p.params / n_max) if n_max else 0.0
        if beyond > 1 and any(r["accuracy"] is not None for r in recs):
            risks = (*risks, f"note: task accuracies are extrapolated {beyond:.1f} decades of N beyond the eval "
                             f"table's largest model ({n_max:.3g}); the interval is calibrated one size step out; "
                             "do: add an eval run nearer the plan")
        out.append(dataclasses.replace(p, risks=risks, extra={**p.extra, "downstream": recs},
                                       sources={**p.sources, "downstream": source}))
    return out


SEVERITIES = ("HIGH", "warning", "note")
_ROW_LABELS = ("n_kind", "loss_unit", "repetition_risk")  # the words a row of numbers needs to be read


def risk_severity(text: str) -> str:
    """A risk line's severity: "HIGH" (HIGH, OVER BUDGET), "note", or "warning" (the rest)."""
    head = text.split(":", 1)[0]
    return "HIGH" if head in ("HIGH", "OVER BUDGET") else "note" if head == "note" else "warning"


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def plans_to_frame(plans) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame([p.to_row() for p in plans])


def _fit_label(fit) -> str:
    preset = fit.provenance.get("preset")
    if preset:
        return f"preset {preset.get('name')}: {preset.get('citation')}"
    return f"fit ({fit.form}, {fit.n_points} points, {fit.provenance.get('source', 'unknown data')})"


def _severity(decades: float) -> str:
    return "HIGH" if decades > 2 else "warning" if decades > EXTRAPOLATION_WARN_DECADES else "note"


def _risks(fit, decades: float, steps: int, tpp: float, params: float, tokens: float,
           overtrained: bool = False) -> list[str]:
    out = []
    r = fit.data_range
    if decades > 0:
        out.append(f"{_severity(decades)}: budget lies {decades:.1f} decades beyond the fitted range "
                   f"(C {r['C_min']:.2g}..{r['C_max']:.2g}); extrapolated loss and allocation are less certain; do: add runs "
                   f"up to ~{r['C_max'] * 10:.2g} FLOPs and refit before committing the budget")
    for what, v, lo, hi in (("N", params, r["N_min"], r["N_max"]), ("D", tokens, r["D_min"], r["D_max"])):
        dec = _beyond(v, lo, hi)
        if dec > 0:
            out.append(f"{_severity(dec)}: {what} = {v:.3g} lies {dec:.1f} decades outside the fitted "
                       f"{what} range {lo:.3g}..{hi:.3g}; do: add runs at {'larger' if v > hi else 'smaller'} {what}")
    if steps < MIN_STEPS:
        out.append(f"warning: only {steps} optimizer steps (< {MIN_STEPS}); the lr/batch rules assume longer runs; "
                   "do: halve the batch (and scale the lr by 0.7) until the run has 1000 steps")
    if not 5 <= tpp <= 500 and not (overtrained and tpp > 500):  # a serving plan overtrains by design
        out.append(f"warning: {tpp:.3g} tokens per parameter is far from the usual 10-100; do: check that the fit's N "
                   "and D are counts of parameters and tokens (not millions or billions)")
    preset = fit.provenance.get("preset", {})
    if preset:
        out.append(f"note: the loss is the preset's ({fit.loss_unit}); on your data and tokenizer it will differ by "
                   "more than this interval (N, D and the hyperparameters transfer); do: fit your own runs for a loss "
                   "you can check")
    return out


def resolve_family(fit, seq_len: int | None = None, vocab_size: int | None = None, kv_heads: int | None = None,
                   tp: int | None = None) -> ShapeFamily:
    """The shape family a plan from ``fit`` uses: the probes' own family when the fit was made
    from a probe export (so a planned model can be trained by the probe runner, at the probes'
    vocabulary and sequence length), else Llama-style production shapes (vocab 32000, seq 2048).
    ``seq_len`` and ``vocab_size`` override the family's; ``kv_heads`` (key/value heads) and
    ``tp`` (query heads a multiple of it) set the production family's attention (default 8, 8)."""
    for name, v in (("seq_len", seq_len), ("vocab_size", vocab_size), ("kv_heads", kv_heads), ("tp", tp)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InputError(f"{name}: must be a positive integer; got {v!r}")
    fam = fit.shape_family
    if fam:
        return ShapeFamily("probe", vocab_size=vocab_size or int(fam["vocab_size"]),
                           seq_len=seq_len or int(fam["seq_len"]), depth=int(fam["depth"]),
                           d_head=int(fam.get("d_head", 16)), ffn_ratio=float(fam.get("ffn_ratio", 8 / 3)),
                           kv_heads=kv_heads or (int(fam["kv_heads"]) if fam.get("kv_heads") else None))
    return ShapeFamily("llama", vocab_size=vocab_size or 32000, seq_len=seq_len or 2048, kv_heads=kv_heads,
                       tp=tp or PRODUCTION_TP)


def _n_kind(fit) -> str:
    return fit.n_definition.get("kind", "unspecified")


class AllocationError(InputError):
    """The law has no compute-optimal N at the budget (its isoFLOP loss falls to the search's edge)."""


def _allocate(fit, flops: float, family: ShapeFamily, level, u: dict):
    """(shape, tokens, intervals, source template, risks) of the compute-optimal plan that spends
    ``flops`` with the shape's own FLOPs per token.

    Probe family: every shape of the family is priced (D = flops / FLOPs per token) and the one
    with the lowest predicted loss wins; bootstrap refits repeat the choice for the intervals.
    Llama family: the law's compute-optimal N (closed form under C = 6ND), the shape nearest it,
    and the tokens that shape can afford.
    """
    import numpy as np

    kind = _n_kind(fit)
    if family.kind == "probe":
        shapes = family_shapes(family)
        n = np.array([count_params(s, kind) for s in shapes], float)
        d = flops / np.array([s.flops_per_token for s in shapes])
        ok = d >= family.seq_len
        if not ok.any():
            raise InputError(f"budget: {flops:.3g} FLOPs does not buy one sequence of the smallest shape")
        n, d, shapes = n[ok], d[ok], [s for s, k in zip(shapes, ok) if k]
        uv = {k: np.broadcast_to(v, n.shape) for k, v in u.items()}
        best = int(np.argmin(fit.predict(n, d, **uv)))
        iv = {}
        if fit.n_bootstrap and level is not None:
            with np.errstate(all="ignore"):
                cols = fit._sample_columns()
                losses = fit.law(n[None, :], d[None, :], cols, **{k: v[None, :] for k, v in fit._inputs(
                    n, d, dict(uv))[2].items()})
            pick = np.nanargmin(np.where(np.isfinite(losses), losses, np.inf), axis=1)
            q = ((1 - level) / 2, (1 + level) / 2)
            for name, arr in (("params", n), ("tokens", d)):  # the interval holds the point
                lo_, hi_ = np.quantile(arr[pick], q)
                iv[f"{name}_low"], iv[f"{name}_high"] = float(min(lo_, arr[best])), float(max(hi_, arr[best]))
        src = ("{fit}; the lowest predicted loss among the probes' shape family (depth "
               f"{family.depth}, head {family.d_head}) at the budget, each shape priced at its own FLOPs per token")
        edge = []
        if best in (0, len(shapes) - 1):
            which = "narrowest" if best == 0 else "widest"
            edge = [f"warning: the optimum is the {which} shape of the family (width {shapes[best].d_model}): "
                    "the law's optimum may lie beyond it, so N and the loss are not the law's optimum; do: probe "
                    "wider (or narrower) shapes"]
        return shapes[best], float(d[best]), iv, src, edge
    a = fit.allocation(flops, level=level if fit.n_bootstrap else None, **u)
    risks = []
    if a["at_edge"][0]:  # no plan rests on an artefact of the search
        raise AllocationError(f"budget: {a['allocation_check'][0]}")
    if a.get("edge_share", [0.0])[0] > 0.1:
        risks.append(f"warning: {a['edge_share'][0]:.0%} of the bootstrap refits have no interior optimum at this "
                     "budget; the N and D intervals hold the others only")
    shape = family.for_params(float(a["params"][0]), kind)
    tokens = flops / shape.flops_per_token
    iv = {}
    if "params_low" in a:  # the law's intervals, moved with the shape's own count and FLOPs per token
        n_pt, d_pt = count_params(shape, kind), tokens
        scale_d = tokens / float(a["tokens"][0])
        iv = {"params_low": min(float(a["params_low"][0]), n_pt), "params_high": max(float(a["params_high"][0]), n_pt),
              "tokens_low": min(float(a["tokens_low"][0]) * scale_d, d_pt),
              "tokens_high": max(float(a["tokens_high"][0]) * scale_d, d_pt)}
    src = ("{fit}; compute-optimal N under C = 6ND, the Llama-style shape nearest it, and the tokens "
           "that shape's FLOPs per token affords within the budget")
    if "forms_in_interval" in a:
        src += f"; the N and D intervals include the credible forms' own optima ({a['forms_in_interval']})"
    return shape, tokens, iv, src, risks


def _plan_at(fit, budget: Budget, shape: ModelShape, tokens: float, variant: str, level, family: ShapeFamily,
             hparams, alloc_intervals: dict, alloc_source: str, extra=None, risks_extra=()) -> Plan:
    kind = _n_kind(fit)
    params = float(count_params(shape, kind))
    fam_info = fit.shape_family if family.kind == "probe" else None
    lr, batch, lr_src, batch_src, hp_iv, hp_risks = _hyperparameters(hparams, shape, params, tokens, fam_info)
    seqs, batch_tokens = rules.round_batch(batch, shape.seq_len)
    if hparams != "probes":  # the lr moves with the rounded batch (a few percent), so both move smoothly
        lr = rules.lr_for_rounded_batch(lr, batch, batch_tokens)
        factor = math.sqrt(batch_tokens / batch)
        hp_iv = {k: v * factor if k.startswith("lr") else v for k, v in hp_iv.items()}
        lr_src += f"; x sqrt(rounded / rule batch) = {factor:.3f} (Adam's square-root rule)"
    steps = max(1, math.ceil(tokens / batch_tokens))
    uses_u = "U" in fit.law.variables and extra and "unique_tokens" in extra
    u = {"unique_tokens": extra["unique_tokens"]} if uses_u else {}
    if fit.n_bootstrap and level is not None:
        loss, lo, hi = (float(v) for v in fit.interval(params, tokens, level=level, **u))
        interval = f"{level:.0%} {fit.interval_method}"
    else:
        loss, lo, hi = float(fit.predict(params, tokens, **u)), None, None
        interval = "none: the fit has no bootstrap samples"
    decades = float(fit.decades_beyond_fit(6.0 * params * tokens))
    extra = {"n_kind": kind, "loss_unit": fit.loss_unit, **_group_lrs(lr, shape, fam_info), **(extra or {})}
    b_crit, b_crit_src = _critical_batch(hparams, loss, tokens, fit)
    if math.isfinite(b_crit):
        extra["batch_crit_tokens"] = b_crit
    risks_extra = (*risks_extra, *hp_risks)
    d_max = fit.data_range.get("D_max", math.inf)
    if hparams == "probes" and tokens > 10 * d_max:
        risks_extra = (*risks_extra, f"note: the probes' lr {lr:g} is applied {tokens / d_max:.3g}x beyond the longest "
                       f"probe ({d_max:.3g} tokens); under muP the optimal lr still moves with the horizon (Bjorck et "
                       "al. 2025): sweep lr with branch cooldowns (fit hparams) and pass plan --hparams to scale it")
    if batch_tokens > 2 * b_crit:  # said once, as the trade-off it is: the plan does not warn against itself
        at_crit = rules.batch_tradeoff(tokens, batch_tokens, b_crit, multiples=(1,))[0]
        risks_extra = (*risks_extra, f"note: the batch ({batch_tokens:,} tokens, {batch_src.split(';')[0]}) is "
                       f"{batch_tokens / b_crit:.1f}x the critical batch (~{b_crit:,.0f}, {b_crit_src}): it reaches "
                       f"the loss in {math.ceil(tokens / batch_tokens):,} steps where B_crit needs "
                       f"{at_crit['steps']:,.0f}, at the price of {tokens / at_crit['tokens'] - 1:.0%} more tokens "
                       "than B_crit would use: time to result bought with compute. Keep it when wall-clock binds; "
                       "take B_crit (and train longer) when compute does")
    wd, wd_src = _weight_decay(hparams, lr, batch_tokens, shape.non_embedding_params, tokens, fam_info)
    if "width_multiplier" in extra:  # muP's runner scales the hidden matrices' wd by m (probes.mup.param_groups)
        m = extra["width_multiplier"]
        extra.update({"wd_embedding": wd, "wd_hidden": wd * m, "wd_readout": wd, "wd_vector": 0.0})
    if hparams == "probes":
        warmup = int(fam_info.get("warmup_steps") or rules.warmup_steps(steps))
        warmup_src = "the probes' own warmup (steps)"
    else:
        warmup, warmup_src = rules.warmup_steps(steps), rules.WARMUP
    # what limits trust in the law comes first, then whether the budget holds, then the rest
    trust = [f"fit: {w}" for w in fit.warnings]
    risks = trust + list(risks_extra) + _risks(fit, decades, steps, tokens / params, params, tokens,
                                               overtrained=variant != "compute-optimal")
    tau = rules.adamw_timescale(lr, wd, steps) if wd > 0 else math.inf
    if wd > 0 and not TIMESCALE_RANGE[0] <= tau <= TIMESCALE_RANGE[1]:
        risks.append(f"warning: the AdamW timescale 1/(lr x wd) is {tau:.2g} of the run (sensible: "
                     f"{TIMESCALE_RANGE[0]:g}-{TIMESCALE_RANGE[1]:g}; Wang & Aitchison 2025): "
                     + ("weights forget early data" if tau < TIMESCALE_RANGE[0] else "weight decay barely acts")
                     + f"; do: set wd = {rules.weight_decay_for(lr, batch_tokens, tokens):.3g} (timescale "
                     f"{rules.TAU_PRIOR:g} of the run)")
    train_flops = shape.flops_per_token * tokens
    if train_flops > budget.flops * 1.005:
        risks.insert(len(trust), f"OVER BUDGET: training this shape on {tokens:.3g} tokens costs {train_flops:.3g} FLOPs, "
                        f"{train_flops / budget.flops:.2f}x the budget of {budget.flops:.3g}; do: train "
                        f"{budget.flops / shape.flops_per_token:.3g} tokens, or raise the budget")
    bent = fit.bend_at(params, tokens)
    if bent is not None:  # the form's own residual bend, carried to this plan
        extra["loss_bent"] = float(loss * math.exp(bent))
        risks.insert(len(trust), f"warning: carried to this plan, the residuals' N x D bend puts the loss at "
                     f"{extra['loss_bent']:.4g}, {abs(math.expm1(bent)):.1%} {'below' if bent < 0 else 'above'} the "
                     "form's prediction: the form misses a term the runs show (an in-sample estimate: its error "
                     "this far out is not measured); the plan's N, D and interval do not carry it; do: fit with form='auto' "
                     "to let backtests choose a form with that term")
    label = _fit_label(fit)
    if fit.options.get("alternatives"):  # forms chosen by backtest: how far the candidate laws part at this plan
        preds = fit.form_predictions(params, tokens)
        extra.update({f"loss_{f}": float(v) for f, v in zip(preds["form"], preds["loss"])})
        extra["form_spread"] = float(preds["loss"].max() / preds["loss"].min() - 1.0)
        cred = preds[preds["weight"] > 0]
        spread = float(cred["loss"].max() / cred["loss"].min() - 1.0)
        if spread > 0.02:
            preds = cred
            risks.insert(len(trust), f"warning: the credible loss laws disagree by {spread:.1%} at this plan ("
                         + ", ".join(f"{f} {v:.4g}" for f, v in zip(preds["form"], preds["loss"]))
                         + "): the interval carries it, but the extrapolation rests on the chosen form; do: add runs at "
                         "larger budgets to tell the forms apart")
    shape_src = (f"the probes' shape family (depth {family.depth}, head {family.d_head}, "
                 f"d_ff {family.ffn_ratio:.3g} x width, vocab {family.vocab_size}, seq {family.seq_len})"
                 if family.kind == "probe" else
                 f"production family (Llama 3 / OLMo style: heads a multiple of {family.tp}, d_model and d_ff "
                 "multiples of 128, even depth, vocab padded to 128; aspect ratio as Kaplan et al. 2020 Sec. 3.1)"
                 if shape.production else
                 "a small-model shape: below the production family's smallest (d_model 512, 2 layers)")
    sources = {
        "params": alloc_source.format(fit=label) + f"; N counts {kind.replace('_', '-')} parameters, as fitted",
        "tokens": alloc_source.format(fit=label),
        "loss": f"{label}; interval: {interval}",
        "form": fit.selection_reason,
        "shape": shape_src,
        "lr": lr_src, "batch": batch_src + "; rounded to a multiple of a power of two sequences (within 3%)",
        "warmup": warmup_src,
        "schedule": rules.SCHEDULE,
        "weight_decay": wd_src if wd_src.startswith("wd = B") else
        wd_src + (f"; AdamW timescale = {tau:.2g} of the run" if math.isfinite(tau) else ""),
        "hardware": (f"{budget.gpu or 'custom'} peak {budget.peak / 1e12:.4g} TFLOP/s bf16 dense x MFU {budget.mfu}"
                     if budget.peak else "no accelerator given"),
        "batch_crit": b_crit_src,
    }
    return Plan(
        variant=variant, budget=budget, params=params, tokens=float(tokens), loss=loss,
        loss_low=lo, loss_high=hi, loss_interval=interval, shape=shape, batch_tokens=batch_tokens,
        batch_sequences=seqs, steps=steps, lr=float(lr), warmup_steps=warmup,
        schedule=rules.SCHEDULE, weight_decay=wd, decades_beyond_fit=decades,
        risks=tuple(sorted(risks, key=lambda r: SEVERITIES.index(risk_severity(r)))),
        sources=sources, intervals={**alloc_intervals, **hp_iv}, extra=extra, family=family,
    )


def data_constrained_view(fit, max_samples: int = 200):
    """The fit as a data-constrained law (Muennighoff et al. 2023): a Chinchilla fit keeps its
    E, A, B, alpha, beta and takes the published R_D*, R_N*; a data-constrained fit is returned as is.
    Bootstrap samples are thinned to ``max_samples`` (allocations are then solved numerically)."""
    import dataclasses

    import numpy as np

    from fits.forms import get_form

    if fit.form == "data_constrained":
        return fit
    if fit.form != "chinchilla":
        raise InputError(f"unique_tokens: repeated-data planning needs a Chinchilla-form fit; got {fit.form!r}")
    dc = get_form("data_constrained")
    params = {**fit.params, **dc.defaults}
    boot = fit.bootstrap_params
    if boot is not None:
        boot = boot[:max_samples]
        boot = np.column_stack([boot, np.full(len(boot), dc.defaults["R_D_star"]),
                                np.full(len(boot), dc.defaults["R_N_star"])])
    return dataclasses.replace(fit, form="data_constrained", params=params, bootstrap_params=boot,
                               provenance={**fit.provenance, "data_constrained": "R_D*, R_N* from Muennighoff et al. 2023"})


def make_plan(fit=None, budget=1e21, *, level: float | None = 0.9, seq_len: int | None = None,
              vocab_size: int | None = None, hparams=None, kv_heads: int | None = None, tp: int | None = None,
              inference_tokens: float | None = None, unique_tokens: float | None = None) -> Plan:
    """Plan a training run: compute-optimal N and D, loss with interval, shape and optimiser.

    Parameters
    ----------
    fit : a :class:`fits.LossSurfaceFit`, a preset name, or a fit JSON path (default: the
        ``besiroglu2024`` preset).
    budget : a :class:`Budget` or training FLOPs. The plan spends it with its shape's own FLOPs
        per token (attention and readout included), not 6ND.
    level : interval level for loss and allocation (None for none).
    seq_len, vocab_size : override the shape family's context length and vocabulary (a fit of
        probes plans in the probes' own family; otherwise production shapes, seq 2048, vocab 32000).
    kv_heads, tp : key/value heads (grouped-query attention; default 8) and the tensor-parallel
        degree the query heads divide into (default 8) of the production family (see
        :mod:`scaling_core.shape`); ``kv_heads`` also sets a probe family's.
    hparams : learning-rate/batch rule: "deepseek2024" (default without probes), "steplaw2025",
        "probes" (the probes' own lr, batch, warmup and weight decay; default for a fit of probes),
        or a fitted hyperparameter law (used only within ``HPARAM_LAW_MAX_DECADES`` of its data).
    unique_tokens : unique training tokens available. When the compute-optimal plan would repeat
        data, the allocation comes from the data-constrained law (Muennighoff et al. 2023) and the
        plan reports epochs, effective tokens and the repeated-data / double-descent risk.
    inference_tokens : tokens to be served over the model's life; when given, the plan is the
        best model within the training budget for that serving volume (smaller, trained on more
        tokens; :func:`planner.inference.best_within_budget`), with its lifetime FLOPs, loss and
        serving speed; ``plan.extra["compute_optimal"]`` keeps the compute-optimal plan and
        ``plan.extra["same_loss"]`` the same-loss smaller model of Sardana et al. 2024 (it trains
        beyond the budget, and says by how much).

    Raises
    ------
    AllocationError
        When the law has no interior compute-optimal N at the budget (its isoFLOP loss keeps
        falling to the search's edge), naming the cause: N, D and the loss there would be
        artefacts of the search, not a plan.

    Examples
    --------
    >>> p = make_plan(budget=1e21)
    >>> f"{p.params:.3g} {p.tokens:.3g} {p.loss:.4f}"
    '2.78e+09 5.85e+10 2.3076'
    >>> abs(p.training_flops / 1e21 - 1) < 1e-9
    True
    """
    fit = resolve_fit(fit)
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    family = resolve_family(fit, seq_len, vocab_size, kv_heads, tp)
    if hparams is None:
        hparams = "probes" if family.kind == "probe" and "lr" in (fit.shape_family or {}) else "deepseek2024"
    common = dict(level=level, family=family, hparams=hparams)
    rep_extra, rep_risks, u = {}, (), {}
    shape, D, ivs, source, edge = _allocate(fit, budget.flops, family, level, {})
    if unique_tokens is not None:
        U = float(unique_tokens)
        if not (math.isfinite(U) and U > 0):
            raise InputError(f"unique_tokens: must be a finite positive number; got {unique_tokens!r}")
        if D > U:  # the plan would repeat data: allocate under the data-constrained law
            fit = data_constrained_view(fit)
            u = {"unique_tokens": U}
            shape, D, ivs, source, edge = _allocate(fit, budget.flops, family, level, u)
            source += (f"; data-constrained law with U = {U:.3g} unique tokens (Muennighoff et al. 2023, "
                       "R_D* and R_N* published)")
        rep_extra, rep_risks = _repetition(count_params(shape, _n_kind(fit)), D, U)
    trained = int((fit.shape_family or {}).get("kv_heads") or 0)
    if family.kind == "probe" and kv_heads and kv_heads != trained:  # an attention the law has not seen
        had = f"{trained} key/value heads" if trained else "one key/value head per query head"
        edge = (*edge, f"warning: the probes trained {had}, this plan {kv_heads}: the law was fitted on another "
                f"attention; do: train the probes with model.kv_heads = {kv_heads} and refit")
    optimal = _plan_at(fit, budget, shape, D, "compute-optimal", alloc_intervals=ivs, alloc_source=source,
                       extra=rep_extra, risks_extra=(*edge, *rep_risks), **common)
    if inference_tokens is None:
        return optimal
    from .inference import best_within_budget, inference_optimal

    T = float(inference_tokens)
    if not (math.isfinite(T) and T > 0):
        raise InputError(f"inference_tokens: must be a finite positive number; got {inference_tokens!r}")
    N, kind = optimal.params, _n_kind(fit)
    predict = (lambda n, d: float(fit.predict(n, d, **u)))

    def lifetime(p: Plan) -> float:
        return p.training_flops + 2.0 * p.params * T

    # the best model within the budget for this serving volume
    n_best = best_within_budget(predict, budget.flops, T, N)
    best_shape = family.for_params(n_best, kind)
    d_best = budget.flops / best_shape.flops_per_token
    b_extra, b_risks = _repetition(count_params(best_shape, kind), d_best, u["unique_tokens"]) if u else ({}, ())
    best = _plan_at(fit, budget, best_shape, d_best, "inference-aware", alloc_intervals={},
                    alloc_source=("{fit}; the model that spends the training budget and is lifetime-optimal "
                                  "(training + serving FLOPs 2NT) for its own loss (Sardana et al. 2024's condition "
                                  "at a fixed budget: planner.inference.best_within_budget)"),
                    extra=b_extra, risks_extra=b_risks, **common)
    # the same-loss smaller model (Sardana et al. 2024): cheaper to serve, dearer to train
    n_same, d_same = inference_optimal(predict, N, D, T)
    same_shape = family.for_params(n_same, kind)
    d_same = _tokens_for(predict, count_params(same_shape, kind), optimal.loss, d_same)
    s_extra, s_risks = _repetition(count_params(same_shape, kind), d_same, u["unique_tokens"]) if u else ({}, ())
    same = _plan_at(fit, budget, same_shape, d_same, "same-loss", alloc_intervals={},
                    alloc_source=("{fit}; the compute-optimal plan's loss at the smallest training + serving FLOPs "
                                  "(Sardana et al. 2024, arXiv:2401.00448): it trains beyond the budget"),
                    extra=s_extra, risks_extra=s_risks, **common)
    total_opt = lifetime(optimal)

    def with_serving(p: Plan) -> Plan:
        peak = budget.peak
        e = {"inference_tokens": T, "lifetime_flops": lifetime(p), "lifetime_flops_saved": 1 - lifetime(p) / total_opt,
             "serving_flops_per_token": 2.0 * p.params, "extra_training_flops": p.training_flops - budget.flops,
             "serving_speed_vs_compute_optimal": optimal.params / p.params}
        if peak:
            e["serving_tokens_per_second"] = peak * budget.mfu / (2.0 * p.params)
        return replace(p, extra={**p.extra, **e})

    best, same, optimal = with_serving(best), with_serving(same), with_serving(optimal)
    return replace(best, extra={**best.extra, "compute_optimal": optimal, "same_loss": same})


def _repetition(n: float, d: float, U: float):
    """(extra, risks) of training n parameters on d tokens drawn from U unique tokens."""
    from fits.repetition import double_descent_risk

    risk = double_descent_risk(n, d, U)
    extra = {"unique_tokens": U, "epochs": risk.epochs, "effective_tokens": risk.effective_tokens,
             "repetition_risk": risk.level, "repetition_recommendation": risk.recommendation}
    risks = ()
    if risk.level in ("medium", "high"):
        risks = tuple(f"{'HIGH' if risk.level == 'high' else 'warning'}: repeated data: {r}; do: "
                      f"{risk.recommendation}" for r in risk.reasons)
    return extra, risks


def _tokens_for(predict, n: float, target: float, d_hint: float) -> float:
    from .inference import tokens_for_loss

    d = tokens_for_loss(predict, n, target, d_hint)
    return d if math.isfinite(d) else d_hint


def make_plans(fit=None, budgets=(1e21,), **kwargs) -> list[Plan]:
    """Plans for several budgets (a sweep); see :func:`make_plan`. Inference-aware plans come
    with their compute-optimal alternative right before them."""
    fit = resolve_fit(fit)
    out = []
    for b in budgets:
        p = make_plan(fit, b, **kwargs)
        alternatives = [p.extra[k] for k in ("compute_optimal", "same_loss") if k in p.extra]
        if alternatives:
            p = replace(p, extra={k: v for k, v in p.extra.items() if k not in ("compute_optimal", "same_loss")})
        out += [*alternatives[:1], p, *alternatives[1:]]
    return out
