"""The probe model: transformers' Granite decoder (Llama family: RMSNorm, SwiGLU, rotary
positions, SDPA attention) with muP through its forward multipliers, init and optimizer groups.

Why Granite: its config carries exactly the forward multipliers muP needs
(``embedding_multiplier``, ``attention_multiplier``, ``residual_multiplier``,
``logits_scaling``), so a probe is a stock ``GraniteForCausalLM`` that saves with
``save_pretrained`` and loads with ``AutoModelForCausalLM.from_pretrained`` with no custom code.

muP (Tensor Programs V, Yang et al. 2022, Table 3), width multiplier m = width / base_width:
* hidden matrices: init std sigma / sqrt(m), AdamW lr eta / m, eps / m (see ``probes.mup``);
* embeddings, norm gains: constant init and lr;
* readout: logits scaled by alpha_out / m (``logits_scaling = m / alpha_out``), constant lr,
  zero init by default;
* attention: scores x sqrt(d_head_0) / d_head. The head size is fixed as width grows, so this
  equals 1 / sqrt(d_head) at every width (the 1/d_head rule only differs when heads widen).
Depth (CompleteP, Dey et al. 2025, alpha = 1), m_L = depth / base_depth: each residual branch is
scaled by 1 / m_L (``residual_multiplier``); hidden Adam eps / (m m_L); no 1/sqrt(2L) init.
At m = m_L = 1 every factor is 1 and muP equals the standard parametrization exactly.
"""
from __future__ import annotations

import math

import torch

from .config import ModelConfig

__all__ = ["hf_config", "build_model", "count_params_meta", "param_kind"]


def hf_config(cfg: ModelConfig):
    from transformers import GraniteConfig

    mup = cfg.parametrization == "mup"
    return GraniteConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.seq_len, initializer_range=cfg.init_std, rms_norm_eps=1e-6,
        tie_word_embeddings=False, use_cache=False, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, attention_bias=False, mlp_bias=False,
        embedding_multiplier=cfg.embedding_multiplier,
        logits_scaling=(cfg.width_mult / cfg.output_multiplier) if mup else 1.0,
        residual_multiplier=(1.0 / cfg.depth_mult) if mup else 1.0,
        attention_multiplier=math.sqrt(cfg.d_head) / cfg.d_head,
    )


def param_kind(name: str, p: torch.nn.Parameter) -> str:
    """muP role of a parameter: embedding, readout, vector (norm gains, biases) or hidden."""
    if "embed_tokens" in name:
        return "embedding"
    if "lm_head" in name:
        return "readout"
    if p.ndim < 2:
        return "vector"
    return "hidden"


@torch.no_grad()
def init_weights(model, cfg: ModelConfig) -> None:
    """muP/SP initialisation (see the module docstring); deterministic under torch's seed."""
    hidden_std = cfg.init_std / math.sqrt(cfg.width_mult)
    for name, p in model.named_parameters():
        kind = param_kind(name, p)
        if kind == "embedding":
            p.normal_(0.0, cfg.embed_std)
        elif kind == "readout":
            p.zero_() if cfg.readout_zero_init else p.normal_(0.0, cfg.init_std)
        elif kind == "vector":
            p.fill_(1.0) if name.endswith("norm.weight") or "layernorm" in name else p.zero_()
        elif cfg.query_zero_init and "q_proj" in name:
            p.zero_()
        else:
            p.normal_(0.0, hidden_std)


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int = 0):
    """A freshly initialised probe model on ``device`` (float32 weights)."""
    from transformers import GraniteForCausalLM

    hf = hf_config(cfg)
    hf._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = GraniteForCausalLM(hf)
    init_weights(model, cfg)
    model.probe_config = cfg
    return model


def count_params_meta(cfg: ModelConfig) -> dict:
    """Parameter counts from a model built on the ``meta`` device (nothing allocated)."""
    from transformers import GraniteForCausalLM

    with torch.device("meta"):
        model = GraniteForCausalLM(hf_config(cfg))
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if param_kind(n, p) in ("embedding", "readout"))
    return {"params_total": total, "params": total - emb}
