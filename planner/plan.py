"""Turning a loss-surface fit (or a published preset) and a budget into a training plan."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fits.errors import InputError

from . import rules
from .budget import Budget
from .presets import DEFAULT_PRESET, load_preset
from .shape import ModelShape, shape_for_params

if TYPE_CHECKING:
    import pandas as pd

    from fits.surface import LossSurfaceFit

__all__ = ["Plan", "make_plan", "make_plans", "plans_to_frame", "resolve_fit"]

EXTRAPOLATION_WARN_DECADES = 1.0


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

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def training_flops(self) -> float:
        return 6.0 * self.params * self.tokens

    def batch_tradeoff(self) -> list[dict]:
        """Tokens and steps to this plan's loss at 0.5, 1, 2 and 4 x the critical batch."""
        return rules.batch_tradeoff(self.tokens, self.batch_tokens, self.extra["batch_crit_tokens"])

    def to_row(self) -> dict:
        """One flat record (the CSV row): plan figures, shape, hardware, risks and sources."""
        b = self.budget
        row = {
            "variant": self.variant, "budget_flops": b.flops, "params": self.params,
            "tokens": self.tokens, "tokens_per_param": self.tokens_per_param,
            "loss": self.loss, "loss_low": self.loss_low, "loss_high": self.loss_high,
            "loss_interval": self.loss_interval,
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
        row.update(self.extra)
        row["risks"] = " | ".join(self.risks)
        row.update({f"source_{k}": v for k, v in self.sources.items()})
        return row

    def to_frame(self) -> "pd.DataFrame":
        """The plan as a one-row DataFrame (see :func:`plans_to_frame` for several)."""
        return plans_to_frame([self])


def plans_to_frame(plans) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame([p.to_row() for p in plans])


def resolve_fit(source=None) -> "LossSurfaceFit":
    """A fit from a LossSurfaceFit, a preset name, or a path to a fit JSON (default preset)."""
    if source is None:
        return load_preset(DEFAULT_PRESET)
    if isinstance(source, (str, Path)) and (str(source).endswith(".json") or Path(source).is_file()):
        from fits.surface import load_fit
        return load_fit(source)
    if isinstance(source, str):
        return load_preset(source)
    if hasattr(source, "allocation") and hasattr(source, "params"):
        return source
    raise InputError(f"fit: expected a fit, a preset name or a fit JSON path; got {type(source).__name__}")


def _fit_label(fit) -> str:
    preset = fit.provenance.get("preset")
    if preset:
        return f"preset {preset.get('name')}: {preset.get('citation')}"
    return f"fit ({fit.form}, {fit.n_points} points, {fit.provenance.get('source', 'unknown data')})"


def _risks(fit, decades: float, steps: int, tpp: float) -> list[str]:
    out = []
    r = fit.data_range
    if decades > 0:
        sev = "HIGH" if decades > 2 else "warning" if decades > EXTRAPOLATION_WARN_DECADES else "note"
        out.append(f"{sev}: budget lies {decades:.1f} decades beyond the fitted range "
                   f"(C {r['C_min']:.2g}..{r['C_max']:.2g}); extrapolated loss and allocation are less certain")
    if steps < 1000:
        out.append(f"warning: only {steps} optimizer steps; the batch-size rule assumes long runs")
    if not 5 <= tpp <= 500:
        out.append(f"warning: {tpp:.3g} tokens per parameter is far from the usual 10-100")
    out += [f"fit: {d}" for d in fit.diagnostics]
    preset = fit.provenance.get("preset", {})
    if preset and "not comparable" in preset.get("notes", ""):
        out.append(f"note: {preset['notes']}")
    return out


def _hyperparameters(hparams, shape: ModelShape, params: float, tokens: float):
    """(lr, batch_tokens, lr_source, batch_source, intervals) from a rule name or a fitted law."""
    if hasattr(hparams, "predict_point"):  # a fitted hyperparameter law (fits.hparams)
        return hparams.predict_point(shape.non_embedding_params, tokens)
    if hparams == "deepseek2024":
        m = shape.flops_per_token - 6.0 * shape.vocab_size * shape.d_model  # non-embedding FLOPs/token
        C = m * tokens
        src = f"{rules.DEEPSEEK} published prior, C = M D = {C:.3g} (not fitted to your runs)"
        return rules.deepseek_lr(C), rules.deepseek_batch(C), src, src, {}
    if hparams == "steplaw2025":
        src = f"{rules.STEP_LAW} published prior (not fitted to your runs)"
        return (rules.step_law_lr(shape.non_embedding_params, tokens), rules.step_law_batch(tokens),
                src, src, {})
    raise InputError(f"hparams: must be one of {sorted(rules.HPARAM_RULES)} or a fitted law; got {hparams!r}")


def _plan_at(fit, budget: Budget, params: float, tokens: float, variant: str, level, seq_len, vocab_size,
             hparams, alloc_intervals: dict, alloc_source: str, extra=None, risks_extra=()) -> Plan:
    shape = shape_for_params(params, vocab_size=vocab_size, seq_len=seq_len)
    lr, batch, lr_src, batch_src, hp_iv = _hyperparameters(hparams, shape, params, tokens)
    seqs, batch_tokens = rules.round_batch(batch, seq_len)
    steps = max(1, math.ceil(tokens / batch_tokens))
    uses_u = "U" in fit.law.variables and extra and "unique_tokens" in extra
    u = {"unique_tokens": extra["unique_tokens"]} if uses_u else {}
    if fit.n_bootstrap and level is not None:
        loss, lo, hi = (float(v) for v in fit.interval(params, tokens, level=level, **u))
        interval = f"{level:.0%} {fit.interval_method}"
    else:
        loss, lo, hi = float(fit.predict(params, tokens, **u)), None, None
        interval = "none: the fit has no bootstrap samples"
    decades = float(fit.decades_beyond_fit(budget.flops))
    b_crit = rules.kaplan_critical_batch(loss)
    extra = {"batch_crit_tokens": b_crit, **(extra or {})}
    if batch_tokens > 2 * b_crit:
        risks_extra = (*risks_extra, f"warning: batch {batch_tokens:,} tokens is over 2x the critical batch "
                       f"(~{b_crit:,.0f}, Kaplan et al. 2020 prior): extra tokens buy little speed")
    wd, wd_src = rules.WEIGHT_DECAY
    risks = list(risks_extra) + _risks(fit, decades, steps, tokens / params)
    tau = rules.adamw_timescale(lr, wd, steps)
    label = _fit_label(fit)
    sources = {
        "params": alloc_source.format(fit=label), "tokens": alloc_source.format(fit=label),
        "loss": f"{label}; interval: {interval}",
        "shape": "planner.shape: Llama-style block, aspect ratio rule (Kaplan et al. 2020 Sec. 3.1)",
        "lr": lr_src, "batch": batch_src + "; rounded to a power-of-two number of sequences",
        "warmup": rules.WARMUP,
        "schedule": rules.SCHEDULE, "weight_decay": wd_src + f"; AdamW timescale = {tau:.2g} of the run",
        "hardware": (f"{budget.gpu or 'custom'} peak {budget.peak / 1e12:.4g} TFLOP/s bf16 dense x MFU {budget.mfu}"
                     if budget.peak else "no accelerator given"),
        "batch_crit": "Kaplan et al. 2020 eq. 5.3 prior B_crit = 2e8 / L^(1/0.21) tokens",
    }
    return Plan(
        variant=variant, budget=budget, params=float(params), tokens=float(tokens), loss=loss,
        loss_low=lo, loss_high=hi, loss_interval=interval, shape=shape, batch_tokens=batch_tokens,
        batch_sequences=seqs, steps=steps, lr=float(lr), warmup_steps=rules.warmup_steps(steps),
        schedule=rules.SCHEDULE, weight_decay=wd, decades_beyond_fit=decades, risks=tuple(risks),
        sources=sources, intervals={**alloc_intervals, **hp_iv}, extra=extra,
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


def make_plan(fit=None, budget=1e21, *, level: float | None = 0.9, seq_len: int = 2048,
              vocab_size: int = 32000, hparams="deepseek2024",
              inference_tokens: float | None = None, unique_tokens: float | None = None) -> Plan:
    """Plan a training run: compute-optimal N and D, loss with interval, shape and optimiser.

    Parameters
    ----------
    fit : a :class:`fits.LossSurfaceFit`, a preset name, or a fit JSON path (default: the
        ``besiroglu2024`` preset).
    budget : a :class:`Budget` or training FLOPs.
    level : interval level for loss and allocation (None for none).
    seq_len, vocab_size : the shape's context length and vocabulary.
    hparams : learning-rate/batch rule: "deepseek2024" (default), "steplaw2025", or a fitted
        hyperparameter law.
    unique_tokens : unique training tokens available. When the compute-optimal plan would repeat
        data, the allocation comes from the data-constrained law (Muennighoff et al. 2023) and the
        plan reports epochs, effective tokens and the repeated-data / double-descent risk.
    inference_tokens : tokens to be served over the model's life; when given, the plan is the
        smaller, longer-trained model with the same predicted loss that minimises training
        plus inference FLOPs (Sardana et al. 2024), and ``plan.extra["compute_optimal"]`` keeps
        the compute-optimal alternative.

    Examples
    --------
    >>> p = make_plan(budget=1e21)
    >>> f"{p.params:.3g} {p.tokens:.3g} {p.loss:.4f}"
    '2.78e+09 6e+10 2.3055'
    """
    fit = resolve_fit(fit)
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    for name, v in (("seq_len", seq_len), ("vocab_size", vocab_size)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{name}: must be a positive integer; got {v!r}")
    a = fit.allocation(budget.flops, level=level if fit.n_bootstrap else None)
    N, D = float(a["params"][0]), float(a["tokens"][0])
    ivs = {f"{k}": float(a[k][0]) for k in ("params_low", "params_high", "tokens_low", "tokens_high") if k in a}
    common = dict(level=level, seq_len=seq_len, vocab_size=vocab_size, hparams=hparams)
    source = "{fit}; compute-optimal allocation under C = 6ND"
    rep_extra, rep_risks = {}, ()
    if unique_tokens is not None:
        U = float(unique_tokens)
        if not (math.isfinite(U) and U > 0):
            raise InputError(f"unique_tokens: must be a finite positive number; got {unique_tokens!r}")
        if D > U:  # the plan would repeat data: allocate under the data-constrained law
            fit = data_constrained_view(fit)
            a = fit.allocation(budget.flops, level=level if fit.n_bootstrap else None, unique_tokens=U)
            N, D = float(a["params"][0]), float(a["tokens"][0])
            ivs = {k: float(a[k][0]) for k in ("params_low", "params_high", "tokens_low", "tokens_high") if k in a}
            source = ("{fit}; data-constrained allocation with U = " + f"{U:.3g}"
                      + " unique tokens (Muennighoff et al. 2023, R_D* and R_N* published)")
        from fits.repetition import double_descent_risk

        risk = double_descent_risk(N, D, U)
        rep_extra = {"unique_tokens": U, "epochs": risk.epochs, "effective_tokens": risk.effective_tokens,
                     "repetition_risk": risk.level, "repetition_recommendation": risk.recommendation}
        if risk.level in ("medium", "high"):
            rep_risks = tuple(f"{'HIGH' if risk.level == 'high' else 'warning'}: repeated data: {r}"
                              for r in risk.reasons) + (f"recommendation: {risk.recommendation}",)
    optimal = _plan_at(fit, budget, N, D, "compute-optimal", alloc_intervals=ivs, alloc_source=source,
                       extra=rep_extra, risks_extra=rep_risks, **common)
    if inference_tokens is None:
        return optimal
    from .inference import inference_optimal

    T = float(inference_tokens)
    if not (math.isfinite(T) and T > 0):
        raise InputError(f"inference_tokens: must be a finite positive number; got {inference_tokens!r}")
    n_inf, d_inf = inference_optimal(fit, N, D, T)
    total_opt = 6 * N * D + 2 * N * T
    total_inf = 6 * n_inf * d_inf + 2 * n_inf * T
    train_budget = replace(budget, flops=6 * n_inf * d_inf)
    extra = {"inference_tokens": T, "lifetime_flops": total_inf,
             "lifetime_flops_saved": 1 - total_inf / total_opt}
    plan = _plan_at(fit, train_budget, n_inf, d_inf, "inference-aware", alloc_intervals={},
                    alloc_source=("{fit}; smallest training + inference FLOPs (6ND + 2NT) at the "
                                  "compute-optimal plan's loss (Sardana et al. 2024, arXiv:2401.00448)"),
                    extra=extra, **common)
    opt = replace(optimal, extra={"inference_tokens": T, "lifetime_flops": total_opt,
                                  "lifetime_flops_saved": 0.0})
    return replace(plan, extra={**plan.extra, "compute_optimal": opt})


def make_plans(fit=None, budgets=(1e21,), **kwargs) -> list[Plan]:
    """Plans for several budgets (a sweep); see :func:`make_plan`. Inference-aware plans come
    with their compute-optimal alternative right before them."""
    fit = resolve_fit(fit)
    out = []
    for b in budgets:
        p = make_plan(fit, b, **kwargs)
        if "compute_optimal" in p.extra:
            out.append(p.extra["compute_optimal"])
            p = replace(p, extra={k: v for k, v in p.extra.items() if k != "compute_optimal"})
        out.append(p)
    return out
