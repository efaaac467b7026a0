"""A plan as files a training team launches from (``plan --emit-config DIR``).

* ``config.json``: a Hugging Face model config. A plan from a preset or a runs table is a Llama
  model (``LlamaForCausalLM``: the production family's shape, grouped-query attention, untied
  embeddings); a plan from a fit of probes is the probes' own muP Granite model at the planned
  width, with the forward multipliers the probe runner uses (``probes.model.hf_config``), so that
  ``AutoConfig.from_pretrained(DIR)`` loads it and the model builds at the planned N.
* ``recipe.json`` and ``recipe.yaml``: the training recipe (optimizer, betas, eps, per-group lr
  and weight decay, the WSD schedule in steps, batch, sequence length, total tokens, eval and
  checkpoint cadence), the predicted loss with its interval, and the sources.
* ``torchtitan.toml`` and ``torchtitan_flavor.py``: the same recipe for torchtitan, PyTorch's
  reference trainer for Llama-3-family pretraining (FSDP2, tensor and pipeline parallelism, a
  native warmup-stable-decay schedule). torchtitan names model sizes by "flavor" in code, so the
  planned shape comes as a flavor to register.

Only the standard library and PyYAML are needed: no torch, no transformers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from fits.errors import InputError

from .emit import toml_value

__all__ = ["hf_config", "recipe", "torchtitan_toml", "torchtitan_flavor", "torchtitan_ffn", "write_config_dir",
           "EXPORT_FILES"]

EXPORT_FILES = ("config.json", "recipe.json", "recipe.yaml", "torchtitan.toml", "torchtitan_flavor.py")
ADAMW = {"betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0,
         "source": "AdamW with beta1 0.9, beta2 0.95, eps 1e-8 and gradient clipping at 1.0 (DeepSeek LLM 2024, "
                   "Sec. 2.3; Llama 2)"}
ROPE_THETA = 500000.0  # Llama 3


def _is_mup(plan) -> bool:
    return "width_multiplier" in plan.extra


def hf_config(plan) -> dict:
    """The Hugging Face config (a dict ready for ``config.json``) of the plan's model."""
    s = plan.shape
    cfg = {
        "vocab_size": s.vocab_size, "hidden_size": s.d_model, "intermediate_size": s.d_ff,
        "num_hidden_layers": s.n_layers, "num_attention_heads": s.n_heads, "num_key_value_heads": s.kv_heads,
        "head_dim": s.d_head, "hidden_act": "silu", "max_position_embeddings": s.seq_len,
        "initializer_range": 0.02, "rms_norm_eps": 1e-5, "tie_word_embeddings": s.tie_embeddings,
        "attention_bias": False, "mlp_bias": False, "use_cache": True, "torch_dtype": "bfloat16",
    }
    if plan.family.kind != "probe":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **cfg, "rope_theta": ROPE_THETA}
    fam = plan.family
    m = plan.extra.get("width_multiplier", 1.0)
    depth_mult = plan.extra.get("depth_multiplier", 1.0)
    cfg.update({"rms_norm_eps": 1e-6, "initializer_range": 0.02, "use_cache": False,
                "bos_token_id": None, "eos_token_id": None, "pad_token_id": None})
    return {"architectures": ["GraniteForCausalLM"], "model_type": "granite", **cfg,
            "embedding_multiplier": 1.0, "logits_scaling": m if _is_mup(plan) else 1.0,
            "residual_multiplier": 1.0 / depth_mult, "attention_multiplier": math.sqrt(fam.d_head) / fam.d_head}


def _schedule(plan) -> dict:
    decay = max(1, round(0.2 * plan.steps)) if plan.steps > plan.warmup_steps + 1 else 0
    stable = max(0, plan.steps - plan.warmup_steps - decay)
    return {"type": "wsd", "warmup_steps": plan.warmup_steps, "stable_steps": stable, "decay_steps": decay,
            "total_steps": plan.steps, "decay_shape": "linear", "final_lr_fraction": 0.0,
            "source": plan.schedule}


def _param_groups(plan) -> list[dict]:
    e, eps = plan.extra, ADAMW["eps"]
    if _is_mup(plan):
        m = e["width_multiplier"]
        return [
            {"group": "embedding", "params": "embed_tokens", "lr": e["lr_embedding"], "weight_decay": e["wd_embedding"],
             "eps": eps},
            {"group": "hidden", "params": "every other 2-D weight", "lr": e["lr_hidden"], "weight_decay": e["wd_hidden"],
             "eps": eps / (m * e.get("depth_multiplier", 1.0))},
            {"group": "readout", "params": "lm_head", "lr": e["lr_readout"], "weight_decay": e["wd_readout"], "eps": eps},
            {"group": "vector", "params": "norm gains", "lr": plan.lr, "weight_decay": 0.0, "eps": eps},
        ]
    return [{"group": "matrices", "params": "every 2-D weight (embedding and readout included)", "lr": plan.lr,
             "weight_decay": plan.weight_decay, "eps": eps},
            {"group": "vector", "params": "norm gains", "lr": plan.lr, "weight_decay": 0.0, "eps": eps}]


def recipe(plan) -> dict:
    """The training recipe of a plan: everything a trainer sets, with the prediction and sources."""
    sched = _schedule(plan)
    eval_every = max(10, int(round(plan.steps / 50, -1)))  # ~50 evaluations over the run
    return {
        "model": {"architecture": hf_config(plan)["architectures"][0], **plan.shape.to_dict(),
                  "parametrization": "muP (Tensor Programs V): per-group lr, wd and eps below" if _is_mup(plan)
                  else "standard"},
        "optimizer": {"name": "AdamW", "betas": ADAMW["betas"], "eps": ADAMW["eps"], "grad_clip": ADAMW["grad_clip"],
                      "lr": plan.lr, "weight_decay": plan.weight_decay, "param_groups": _param_groups(plan),
                      "source": ADAMW["source"]},
        "schedule": sched,
        "batch": {"sequences": plan.batch_sequences, "tokens": plan.batch_tokens, "seq_len": plan.shape.seq_len},
        "tokens": plan.steps * plan.batch_tokens,
        "planned_tokens": plan.tokens,
        "eval": {"every_steps": eval_every,
                 "checkpoint_steps": sorted({sched["warmup_steps"] + sched["stable_steps"], plan.steps}),
                 "note": "keep the checkpoint at the end of the stable phase: a WSD run can branch a cooldown from it"},
        "prediction": {"loss": plan.loss, "low": plan.loss_low, "high": plan.loss_high,
                       "interval": plan.loss_interval, "unit": plan.extra.get("loss_unit")},
        "budget_flops": plan.budget.flops,
        "training_flops": plan.shape.flops_per_token * plan.steps * plan.batch_tokens,
        "sources": dict(plan.sources),
    }


def torchtitan_ffn(dim: int, d_ff: int) -> tuple[int, float]:
    """(multiple_of, ffn_dim_multiplier) that make torchtitan's Llama feed-forward width
    ``multiple_of * ceil(int(m * int(8 dim / 3)) / multiple_of)`` come out at exactly ``d_ff``."""
    h = int(2 * (4 * dim) / 3)
    multiple_of = 128 if d_ff % 128 == 0 else 8 if d_ff % 8 == 0 else 1
    return multiple_of, (d_ff - multiple_of / 2) / h


def torchtitan_flavor(plan) -> str:
    s = plan.shape
    multiple_of, mult = torchtitan_ffn(s.d_model, s.d_ff)
    return "\n".join([
        f'"""The planned model as a torchtitan Llama 3 flavor ("planned"): {s.params:,} parameters.',
        "",
        "torchtitan looks model sizes up by name in its flavor table (``llama3_configs`` in",
        "torchtitan/models/llama3/__init__.py): add this entry there, or import this file before training.",
        '"""',
        "from torchtitan.models.llama3 import llama3_configs",
        "from torchtitan.models.llama3.model.args import TransformerModelArgs",
        "",
        'llama3_configs["planned"] = TransformerModelArgs(',
        f"    dim={s.d_model}, n_layers={s.n_layers}, n_heads={s.n_heads}, n_kv_heads={s.kv_heads},",
        f"    vocab_size={s.vocab_size}, multiple_of={multiple_of}, ffn_dim_multiplier={mult!r},",
        f"    rope_theta={ROPE_THETA!r}, max_seq_len={s.seq_len},  # feed-forward width {s.d_ff}",
        ")",
        ""])


def torchtitan_toml(plan) -> str:
    """A torchtitan job config (TOML) for the plan's recipe; the model is the flavor "planned"."""
    r = recipe(plan)
    sched, opt = r["schedule"], r["optimizer"]
    sections = {
        "job": {"description": f"planned run: {plan.params:.3g} parameters on {r['tokens']:.3g} tokens, predicted "
                               f"loss {plan.loss:.4f}"},
        "model": {"name": "llama3", "flavor": "planned"},
        "optimizer": {"name": "AdamW", "lr": plan.lr, "beta1": opt["betas"][0], "beta2": opt["betas"][1],
                      "eps": opt["eps"], "weight_decay": plan.weight_decay},
        "lr_scheduler": {"warmup_steps": sched["warmup_steps"],
                         "decay_ratio": round(sched["decay_steps"] / max(plan.steps, 1), 6),
                         "decay_type": "linear", "min_lr_factor": 0.0},
        "training": {"global_batch_size": plan.batch_sequences, "seq_len": plan.shape.seq_len,
                     "steps": plan.steps, "max_norm": opt["grad_clip"]},
        "validation": {"enable": True, "freq": r["eval"]["every_steps"]},
        "checkpoint": {"enable": True, "interval": sched["warmup_steps"] + sched["stable_steps"]},
    }
    lines = [f"# torchtitan job config written by `plan` for a budget of {plan.budget.flops:.4g} FLOPs.",
             "# The model is the flavor in torchtitan_flavor.py; set the dataset, tokenizer and parallelism for your "
             "cluster."]
    for name, body in sections.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def write_config_dir(plan, directory) -> list[Path]:
    """Write :data:`EXPORT_FILES` for ``plan`` into ``directory`` (created; each file atomically)."""
    import yaml

    from scaling_core.io import atomic_write_text

    if _is_mup(plan) and plan.family.kind != "probe":  # pragma: no cover - muP plans come from probes
        raise InputError("--emit-config: a muP plan must come from a fit of probes")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"--emit-config: {str(d)!r} is a file; give a directory")
    d.mkdir(parents=True, exist_ok=True)
    rec = recipe(plan)
    texts = {
        "config.json": json.dumps(hf_config(plan), indent=2) + "\n",
        "recipe.json": json.dumps(rec, indent=2) + "\n",
        "recipe.yaml": yaml.safe_dump(rec, sort_keys=False, width=100),
        "torchtitan.toml": torchtitan_toml(plan),
        "torchtitan_flavor.py": torchtitan_flavor(plan),
    }
    if plan.family.kind == "probe":  # the probes' Granite model is not a torchtitan Llama
        texts = {k: v for k, v in texts.items() if not k.startswith("torchtitan")}
    out = []
    for name, text in texts.items():
        atomic_write_text(d / name, text)
        out.append(d / name)
    return out
