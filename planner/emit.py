"""A plan handed back to the probe runner: a probe grid (TOML) that trains the planned model."""
from __future__ import annotations

import json

from fits.errors import InputError

from scaling_core.shape import count_params

__all__ = ["plan_grid_toml", "plan_grid_runs", "toml_value"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    return repr(v)


def plan_grid_runs(plan, fit, isoflop: bool = False) -> list[dict]:
    """The runs :func:`plan_grid_toml` writes: {"role", "width", "tokens", "params"} each."""
    from .plan import _n_kind

    family = plan.family
    kind = _n_kind(fit)
    shapes = [("planned", plan.shape)]
    if isoflop:
        for label, f in (("N/3", 1 / 3), ("3N", 3.0)):
            shapes.append((label, family.for_params(plan.params * f, kind)))
    runs, seen = [], set()
    for label, s in shapes:
        if s.d_model in seen:
            continue
        seen.add(s.d_model)
        tokens = max(1, round(plan.budget.flops / s.flops_per_token / plan.batch_tokens)) * plan.batch_tokens
        runs.append({"role": label, "width": s.d_model, "tokens": tokens, "params": count_params(s, kind),
                     "flops": s.flops_per_token * tokens})
    return runs


def plan_grid_toml(plan, fit=None, source: str | None = None, isoflop: bool = False, seeds=(0,)) -> str:
    """A probe grid for ``plan`` (made from a fit of probes): the planned width at the probes'
    depth, head size, vocabulary, sequence length, lr, batch, warmup and data, trained to the
    planned tokens. With ``isoflop``, also the family's shapes nearest N/3 and 3N, each trained
    on the tokens the same budget buys (a check that the planned size wins its isoFLOP); ``seeds``
    repeats every run with each seed (to measure the seed noise).

    Raises InputError when the plan is not in a probe shape family (a preset's plan).
    """
    fam = (fit.shape_family if fit is not None else None) or {}
    if not fam:
        raise InputError("--emit-grid: needs a plan made from a fit of probe results (--fit or --results), "
                         "whose shape family the probe runner can train")
    from .plan import _n_kind

    family = plan.family
    kind = _n_kind(fit)
    settings = {
        "model": {"depth": family.depth, "d_head": family.d_head, "ffn_ratio": family.ffn_ratio,
                  "seq_len": family.seq_len, "vocab_size": family.vocab_size,
                  **({"kv_heads": family.kv_heads} if family.kv_heads else {})},
        "train": {"lr": plan.lr, "batch_size": plan.batch_sequences, "warmup_steps": plan.warmup_steps,
                  "weight_decay": plan.weight_decay, "schedule": "wsd", "eval_every": 1_000_000},
        "data": {},
    }
    for key, section in (("base_width", "model"), ("base_depth", "model"), ("parametrization", "model"),
                         ("corpus", "data"), ("tokenizer", "data")):
        if key in fam:
            settings[section][key] = fam[key]
    if "eval_batches" in fam:
        settings["train"]["eval_batches"] = fam["eval_batches"]
    lines = [f"# probe grid for a plan: budget {plan.budget.flops:.4g} FLOPs, predicted loss {plan.loss:.4f}"
             + (f" [{plan.loss_low:.4f}, {plan.loss_high:.4f}]" if plan.loss_low is not None else ""),
             f"# from {source or 'a fit of probes'}; N counts {kind.replace('_', '-')} parameters",
             "[grid]", f"seed = {[int(x) for x in seeds]}", ""]
    for section in ("model", "train", "data"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in settings[section].items()]
        lines.append("")
    for r in plan_grid_runs(plan, fit, isoflop):
        lines += ["[[run]]", f"width = {r['width']}", f"tokens = [{r['tokens']}]",
                  f"# {r['role']}: {r['params']:,} {kind.replace('_', '-')} parameters, "
                  f"{r['tokens'] / r['params']:.3g} tokens per parameter, {r['flops']:.4g} FLOPs", ""]
    return "\n".join(lines)
