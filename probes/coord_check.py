"""Coordinate check (Tensor Programs V, Sec. 7; microsoft/mup's coord_check): after a few
AdamW steps, the typical size of every activation should not grow or shrink with width under
muP; under the standard parametrization it grows.

A fixed small batch of low-entropy structured tokens (a bigram chain) is used, since random
tokens make even a correct muP drift. Returns a tidy DataFrame; :func:`coord_slopes` fits the
slope of log2 |x| against log2 width per site and step.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .model import build_model, param_kind
from .mup import param_groups

__all__ = ["coord_check", "coord_check_depth", "coord_slopes", "VARIANTS"]

VARIANTS = ("mup", "sp", "no_hidden_lr", "no_logit_mult", "no_init_scale")


def _bigram_batch(vocab: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(vocab)  # a deterministic successor for each token
    x = np.empty((batch, seq + 1), dtype=np.int64)
    x[:, 0] = rng.integers(0, vocab, batch)
    for t in range(seq):
        x[:, t + 1] = nxt[x[:, t]]
    return torch.as_tensor(x)


def _model(width: int, variant: str, base: ModelConfig, seed: int):
    par = "sp" if variant == "sp" else "mup"
    cfg = dataclasses.replace(base, width=width, parametrization=par)
    model = build_model(cfg, seed=seed)
    if variant == "no_logit_mult":
        model.config.logits_scaling = 1.0
    if variant == "no_init_scale":  # hidden init at the base std regardless of width
        with torch.no_grad():
            for n, p in model.named_parameters():
                if param_kind(n, p) == "hidden" and not ("q_proj" in n and cfg.query_zero_init):
                    p.normal_(0.0, cfg.init_std)
    groups = param_groups(model, lr=1.0, cfg=cfg)
    if variant == "no_hidden_lr":
        for g in groups:
            g["lr"] = g["base_lr"] = 1.0
    return model, groups


def _measure(model, groups, x, y, steps: int, lr: float, d_head: int) -> list[dict]:
    """Mean |x| per site after each of ``steps`` AdamW steps (lr x each group's base lr), and the
    feature update |h_t - h_0| of the last layer's residual output."""
    for g in groups:
        g["lr"] = g["base_lr"] * lr
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    acts, hooks, out_rows = {}, [], []

    def keep(name):
        def hook(_m, _i, out):
            acts[name] = (out[0] if isinstance(out, tuple) else out).detach()
        return hook

    inner = model.model
    layer = inner.layers[-1]
    hooks.append(inner.embed_tokens.register_forward_hook(keep("embedding")))
    hooks.append(layer.self_attn.register_forward_hook(keep("attention_out")))
    hooks.append(layer.mlp.register_forward_hook(keep("mlp_out")))
    hooks.append(layer.register_forward_hook(keep("residual")))
    hooks.append(layer.self_attn.q_proj.register_forward_hook(keep("q")))
    hooks.append(layer.self_attn.k_proj.register_forward_hook(keep("k")))
    h0 = None
    for step in range(steps + 1):
        logits = model(input_ids=x).logits
        if step == 0:
            h0 = acts["residual"].clone()
        else:
            B, T, _ = acts["q"].shape
            q = acts["q"].view(B, T, -1, d_head).transpose(1, 2)
            k = acts["k"].view(B, T, -1, d_head).transpose(1, 2)
            scores = (q @ k.transpose(-1, -2)) * model.config.attention_multiplier
            sizes = {name: float(acts[name].abs().mean()) for name in
                     ("embedding", "attention_out", "mlp_out", "residual")}
            sizes["residual_update"] = float((acts["residual"] - h0).abs().mean())
            sizes["attention_logits"] = float(scores.abs().mean())
            sizes["output_logits"] = float(logits.detach().abs().mean())
            out_rows += [{"step": step, "site": s_, "l1": v} for s_, v in sizes.items()]
        if step == steps:
            break
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for hk in hooks:
        hk.remove()
    return out_rows


def coord_check(widths=(64, 128, 256, 512, 1024), variant: str = "mup", steps: int = 5, seeds: int = 3,
                lr: float = 1e-2, base: ModelConfig | None = None, batch: int = 4, seq: int = 32):
    """Mean |activation| per (width, seed, step, site) after each of ``steps`` AdamW steps."""
    import pandas as pd

    if variant not in VARIANTS:
        raise ValueError(f"variant: must be one of {VARIANTS}; got {variant!r}")
    base = base or ModelConfig(width=min(widths), depth=2, d_head=16, base_width=min(widths), vocab_size=256,
                               seq_len=seq, readout_zero_init=True, query_zero_init=True)
    rows = []
    for seed in range(seeds):
        data = _bigram_batch(base.vocab_size, batch, seq, seed)
        for width in widths:
            model, groups = _model(width, variant, base, seed)
            rows += [{"width": width, "seed": seed, "variant": variant, **r}
                     for r in _measure(model, groups, data[:, :-1], data[:, 1:], steps, lr, base.d_head)]
    return pd.DataFrame(rows)


def coord_check_depth(depths=(2, 4, 8, 16, 32), scaling: str = "completep", width: int = 64, steps: int = 5,
                      seeds: int = 3, lr: float = 1e-2, batch: int = 4, seq: int = 32):
    """The depth coordinate check at a fixed width: mean |activation| of the last layer and its
    feature update per (depth, seed, step, site). ``scaling="completep"`` scales every residual
    branch by base_depth / depth (Dey et al. 2025, alpha = 1) with base_depth = depths[0];
    ``"none"`` makes every depth its own base (plain muP, no depth scaling): its residual stream
    and updates grow with depth."""
    import pandas as pd

    if scaling not in ("completep", "none"):
        raise ValueError(f"scaling: must be 'completep' or 'none'; got {scaling!r}")
    rows = []
    for seed in range(seeds):
        for depth in depths:
            cfg = ModelConfig(width=width, depth=depth, d_head=16, base_width=width, vocab_size=256, seq_len=seq,
                              base_depth=depths[0] if scaling == "completep" else depth)
            data = _bigram_batch(cfg.vocab_size, batch, seq, seed)
            model = build_model(cfg, seed=seed)
            groups = param_groups(model, lr=1.0, cfg=cfg)
            rows += [{"depth": depth, "seed": seed, "scaling": scaling, **r}
                     for r in _measure(model, groups, data[:, :-1], data[:, 1:], steps, lr, cfg.d_head)]
    return pd.DataFrame(rows)


def coord_slopes(df, axis: str = "width"):
    """Slope of log2(mean |x|) against log2(``axis``: width or depth) per (site, step), seeds averaged."""
    import pandas as pd

    mean = df.groupby(["site", "step", axis], as_index=False)["l1"].mean()
    out = []
    for (site, step), g in mean.groupby(["site", "step"]):
        slope = np.polyfit(np.log2(g[axis]), np.log2(np.maximum(g["l1"], 1e-30)), 1)[0]
        out.append({"site": site, "step": step, "slope": slope})
    return pd.DataFrame(out)
