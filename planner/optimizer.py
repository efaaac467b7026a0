"""How a plan's optimiser settings are chosen: learning rate and batch (a published rule, a
fitted law within its range, or the probes' own), weight decay (the AdamW timescale), muP's
per-group learning rates, and the critical batch."""
from __future__ import annotations

import math

from fits.errors import InputError

from . import rules
from scaling_core.shape import ModelShape

HPARAM_LAW_MAX_DECADES = 1.0   # a fitted lr/batch law is used at most this far beyond its data


def _beyond(value: float, lo: float, hi: float) -> float:
    """Decades by which ``value`` lies outside [lo, hi] (0 inside)."""
    return max(0.0, math.log10(value / hi), math.log10(lo / value))


def _prior(shape: ModelShape, tokens: float):
    # DeepSeek's M (their eq. 2): non-embedding FLOPs per token with attention counted over the
    # full context, 72 n_layer d^2 + 12 n_layer d seq (6 x non-embedding weights for the first term)
    m = 6.0 * shape.non_embedding_params + 12.0 * shape.n_layers * shape.d_model * shape.seq_len
    C = m * tokens
    src = f"{rules.DEEPSEEK} published prior, C = M D = {C:.3g} (not fitted to your runs)"
    return rules.deepseek_lr(C), rules.deepseek_batch(C), src, src, {}


def _hyperparameters(hparams, shape: ModelShape, params: float, tokens: float, family: dict | None):
    """(lr, batch_tokens, lr_source, batch_source, intervals, risks) from a rule name, a fitted law,
    or ("probes") the probes' own settings."""
    if hparams == "probes":
        fam = family or {}
        lr, bs = fam.get("lr"), fam.get("batch_size")
        if lr is None or bs is None:
            raise InputError("hparams: 'probes' needs a fit of probe results that records lr and batch_size")
        src = (f"the probes' own lr {lr:g} (muP base-width lr: transfers across width)" if fam.get("parametrization") == "mup"
               else f"the probes' own lr {lr:g}")
        return float(lr), float(bs * shape.seq_len), src, f"the probes' own batch ({bs} sequences)", {}, []
    if hasattr(hparams, "predict_point"):  # a fitted hyperparameter law (fits.hparams)
        return _fitted_hyperparameters(hparams, shape, tokens)
    if hparams == "deepseek2024":
        return (*_prior(shape, tokens), [])
    if hparams == "steplaw2025":
        src = f"{rules.STEP_LAW} published prior (not fitted to your runs)"
        return (rules.step_law_lr(shape.non_embedding_params, tokens), rules.step_law_batch(tokens),
                src, src, {}, [])
    raise InputError(f"hparams: must be one of {sorted(rules.HPARAM_RULES) + ['probes']} or a fitted law; "
                     f"got {hparams!r}")


def _fitted_hyperparameters(hp, shape: ModelShape, tokens: float):
    """Each fitted law inside its valid range (``HPARAM_LAW_MAX_DECADES`` beyond its data: N and D
    for lr, D for the batch); outside it, or where the sweep could not fit it, the published prior,
    flagged."""
    r = hp.data_range
    n_ne = shape.non_embedding_params
    lr, b, lsrc, bsrc, iv = hp.predict_point(n_ne, tokens)
    lr_p, b_p, src_p, _, _ = _prior(shape, tokens)
    risks = []
    far_lr = max(_beyond(n_ne, r["N_min"], r["N_max"]), _beyond(tokens, r["D_min"], r["D_max"]))
    if far_lr > HPARAM_LAW_MAX_DECADES:
        lr, lsrc = lr_p, src_p
        iv = {k: v for k, v in iv.items() if not k.startswith("lr")}
        risks.append(f"warning: the fitted lr law covers N {r['N_min']:.3g}..{r['N_max']:.3g}, D {r['D_min']:.3g}.."
                     f"{r['D_max']:.3g}; this plan (N {n_ne:.3g} non-embedding, D {tokens:.3g}) lies {far_lr:.1f} "
                     f"decades beyond (limit {HPARAM_LAW_MAX_DECADES:g}), so the lr comes from the published prior; do: sweep "
                     "the lr nearer this size")
    far_b = _beyond(tokens, r["D_min"], r["D_max"])
    why_b = (hp.unfitted.get("batch") if "batch" in hp.unfitted else
             f"this plan's D {tokens:.3g} lies {far_b:.1f} decades beyond the fitted batch law's D "
             f"{r['D_min']:.3g}..{r['D_max']:.3g}" if far_b > HPARAM_LAW_MAX_DECADES else None)
    if why_b:
        b, bsrc = b_p, src_p
        iv = {k: v for k, v in iv.items() if not k.startswith("batch")}
        risks.append(f"note: batch from the published prior: {why_b}")
    return lr, b, lsrc, bsrc, iv, risks


def _weight_decay(hparams, lr: float, batch_tokens: int, params: float, tokens: float, family: dict | None):
    """(wd, source): the probes' own wd when they used one; a fitted AdamW-timescale law inside its
    tokens-per-parameter range (one decade either side, N non-embedding as fitted); else the prior
    timescale. Either timescale sets wd from this
    plan's lr, batch and tokens: wd = B / (lr tau D)."""
    own = float((family or {}).get("weight_decay", 0.0) or 0.0)
    if hparams == "probes" and own > 0:
        return own, "the probes' own weight decay"
    law = getattr(hparams, "wd_law", None)
    tpp = tokens / params
    if law and law["tpp_min"] / 10 <= tpp <= law["tpp_max"] * 10:
        tau = math.exp(law["log_k"]) * tpp ** law["p"]
        src = (f"fitted AdamW timescale tau* = {math.exp(law['log_k']):.3g} (D/N)^{law['p']:.3g} = {tau:.3g} of the "
               f"run at D/N {tpp:.3g} (fitted on D/N {law['tpp_min']:.3g}..{law['tpp_max']:.3g})")
    else:
        tau, src = rules.TAU_PRIOR, rules.TAU_SOURCE
        if law:
            src += f" (the fitted timescale law covers D/N {law['tpp_min']:.3g}..{law['tpp_max']:.3g}, not {tpp:.3g})"
    wd = float(f"{rules.weight_decay_for(lr, batch_tokens, tokens, tau):.3g}")  # three figures: a setting, not a fit
    if hparams == "probes":
        src += " (the probes trained without weight decay)"
    return wd, f"wd = B / (lr tau D) with {src}"


def _group_lrs(lr: float, shape: ModelShape, family: dict | None) -> dict:
    """Per-group learning rates of a muP plan (Tensor Programs V): the probes' lr is the base-width
    lr; hidden matrices take lr / m with m = width / base_width, embeddings and readout keep lr (the
    readout's logits are scaled by 1/m). ``lr_sp_hidden`` is the standard-parametrization
    equivalent of the hidden groups."""
    if not family or family.get("parametrization") != "mup" or not family.get("base_width"):
        return {}
    m = shape.d_model / float(family["base_width"])
    m_depth = shape.n_layers / float(family.get("base_depth") or shape.n_layers)
    return {"lr_embedding": lr, "lr_hidden": lr / m, "lr_readout": lr, "logit_multiplier": 1.0 / m,
            "width_multiplier": m, "depth_multiplier": m_depth}


def _critical_batch(hparams, loss: float, tokens: float, fit) -> tuple[float, str]:
    """(B_crit in tokens, its source): a fitted B_crit(D) law (within ``HPARAM_LAW_MAX_DECADES`` of
    its data) when the hyperparameter fit has one; else Kaplan et al.'s B_crit(L), only for a loss in
    its own unit (nats per token on WebText2 with GPT-2's tokenizer): in any other unit L means another
    thing, and the estimate is "not estimated"."""
    law = getattr(hparams, "b_crit_law", None)
    if law:
        beyond = max(0.0, math.log10(tokens / law["D_max"]), math.log10(law["D_min"] / tokens))
        if beyond <= HPARAM_LAW_MAX_DECADES:
            return (math.exp(law["log_k"]) * tokens ** law["b"],
                    f"fitted B_crit(D) = exp({law['log_k']:.3g}) D^{law['b']:.3g} from {law['n_targets']} "
                    f"steps-to-target fits (Zhang et al. 2024: B_crit grows with D)")
    unit = fit.loss_unit
    if unit != rules.KAPLAN_LOSS_UNIT:
        return math.inf, (f"not estimated: Kaplan et al.'s B_crit(L) is fitted on losses in {rules.KAPLAN_LOSS_UNIT}, "
                          f"this law's loss is in {unit}; measure it with an lr x batch grid (fit hparams)")
    return (rules.kaplan_critical_batch(loss), "Kaplan et al. 2020 eq. 5.3 B_crit = 2e8 / L^(1/0.21) tokens, "
            f"in its own loss unit ({unit})")
