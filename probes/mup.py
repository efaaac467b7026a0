"""muP optimizer groups for AdamW (Tensor Programs V; CompleteP for depth).

Weight decay convention: torch's AdamW decays by lr x wd per step, coupled to the learning
rate. Hidden matrices get lr / m, so their decay is set to wd x m: the product lr x wd, the
AdamW timescale, stays the same at every width ("independent" weight decay, Wang & Aitchison
2025). Without this, muP would silently weaken weight decay as models widen. Norm gains and
biases are never decayed.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from .model import param_kind

__all__ = ["param_groups", "make_optimizer"]


def param_groups(model, lr: float, weight_decay: float = 0.0, eps: float = 1e-8,
                 cfg: ModelConfig | None = None) -> list[dict]:
    """AdamW parameter groups {embedding, hidden, vector, readout} with muP scalings.

    Raises if the model was not built by :func:`probes.model.build_model` (which initialises
    it for its parametrization): did you forget to build it with build_model?
    """
    cfg = cfg or getattr(model, "probe_config", None)
    if cfg is None:
        raise RuntimeError("param_groups: the model has no probe_config; did you forget to build it "
                           "with probes.model.build_model (which applies the muP initialisation)?")
    m, mL = cfg.width_mult, cfg.depth_mult
    # Adam's eps must stay below the gradients it divides. With logits x 1/m, every group's gradient
    # shrinks as 1/m (the backward signal does), and inside residual branches as 1/m_L too, so eps
    # scales with each group's gradient (as the CompleteP reference code does), not only the hidden one's
    spec = {
        "embedding": dict(lr=lr, weight_decay=weight_decay, eps=eps / m),
        "hidden": dict(lr=lr / m, weight_decay=weight_decay * m, eps=eps / (m * mL)),
        "vector": dict(lr=lr, weight_decay=0.0, eps=eps / (m * mL)),
        "readout": dict(lr=lr, weight_decay=weight_decay, eps=eps / m),
    }
    members = {k: [] for k in spec}
    for name, p in model.named_parameters():
        members[param_kind(name, p)].append(p)
    groups = []
    for kind, opts in spec.items():
        if members[kind]:
            groups.append({"params": members[kind], "name": kind, "base_lr": opts["lr"], **opts})
    return groups


def make_optimizer(model, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8):
    """AdamW over the muP groups; fused on the accelerator path (CUDA, or the CPU when emulating it)."""
    from .device import gpu_path

    groups = param_groups(model, lr, weight_decay, eps)
    fused = gpu_path(next(model.parameters()).device)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
