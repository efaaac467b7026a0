"""A concrete decoder shape for a parameter count: one dial (depth), the rest derived.

Llama-family block (pre-norm RMSNorm, SwiGLU MLP, rotary positions, untied embeddings):
per layer 4 d^2 (attention q, k, v, o) + 3 d d_ff (gate, up, down) + 2 d (norms). Total
parameters add 2 V d (input embedding and readout) and a final norm; the total is what
Chinchilla-style fits count as N. Head size is 16 below d_model 128 and 32 below 256
(probe-sized models), 64 below 1024 and 128 from there (as in GPT-2/3 and Llama). The aspect ratio d_model/n_layers
follows common practice (about 64 for small models, 128 from ~10B, as in GPT-3 and Llama);
Kaplan et al. 2020 (Sec. 3.1) find loss depends only weakly on shape at fixed N.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

from fits.errors import InputError

__all__ = ["ModelShape", "shape_for_params", "decoder_params", "decoder_flops_per_token", "probe_d_ff",
           "ShapeFamily", "family_shapes", "count_params"]


def decoder_params(d_model: int, n_layers: int, d_ff: int, vocab_size: int) -> tuple[int, int]:
    """(non-embedding, total) parameters of the Llama-style block described above."""
    d = d_model
    non_emb = n_layers * (4 * d * d + 3 * d * d_ff + 2 * d) + d
    return non_emb, non_emb + 2 * vocab_size * d


def decoder_flops_per_token(d_model: int, n_layers: int, d_ff: int, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding weights + readout) + attention scores and values,
    6 n_layers seq_len d_model (Kaplan et al. 2020, Table 1, forward x 3)."""
    non_emb, _ = decoder_params(d_model, n_layers, d_ff, vocab_size)
    return 6.0 * (non_emb + vocab_size * d_model) + 6.0 * n_layers * seq_len * d_model


def probe_d_ff(width: int, ffn_ratio: float = 8 / 3) -> int:
    """MLP width of the probe family: ffn_ratio x width rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(ffn_ratio * width / 8)) * 8)


@dataclass(frozen=True)
class ModelShape:
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_ff: int
    vocab_size: int
    seq_len: int

    @property
    def non_embedding_params(self) -> int:
        return decoder_params(self.d_model, self.n_layers, self.d_ff, self.vocab_size)[0]

    @property
    def params(self) -> int:
        """Total parameters, embeddings and readout included."""
        return decoder_params(self.d_model, self.n_layers, self.d_ff, self.vocab_size)[1]

    @property
    def flops_per_token(self) -> float:
        return decoder_flops_per_token(self.d_model, self.n_layers, self.d_ff, self.vocab_size, self.seq_len)

    def to_dict(self) -> dict:
        return {**asdict(self), "params": self.params,
                "non_embedding_params": self.non_embedding_params,
                "flops_per_token": self.flops_per_token}


_WIDTH_FACTORS = tuple(2.0 ** (k / 4) for k in range(-12, 5))  # 1/8x .. 2x the target width


def _round_width(d: float) -> int:
    """Widths in multiples of 16 below 128, 32 below 256, 64 below 1024, 128 below 4096, 256 beyond."""
    grain = 16 if d < 128 else 32 if d < 256 else 64 if d < 1024 else 128 if d < 4096 else 256
    return max(16, int(round(d / grain)) * grain)


def _target_aspect(n: float) -> float:
    return 64.0 * 2.0 ** min(1.0, max(0.0, math.log10(n) - 9.0))


def shape_for_params(n: float, vocab_size: int = 32000, seq_len: int = 2048,
                     tolerance: float = 0.02, kind: str = "total") -> ModelShape:
    """The shape whose parameter count (``kind``: "total" or "non_embedding") is within
    ``tolerance`` of ``n`` and whose aspect ratio is closest to common practice.

    d_model runs over multiples of the head size; for each depth the MLP width (a multiple of 64,
    or 16 below d_model 512, between 2 and 4 d_model, around SwiGLU's 8/3) is solved to hit ``n``.

    >>> s = shape_for_params(7e9)
    >>> abs(s.params / 7e9 - 1) < 0.02, s.d_model % s.n_heads, s.d_head
    (True, 0, 128)
    """
    if not (math.isfinite(n) and n > 0):
        raise InputError(f"params: must be a finite positive number; got {n!r}")
    best, best_score = None, math.inf
    aspect = _target_aspect(n)
    for n_layers in range(1, 257):
        d_center = aspect * n_layers
        for d_model in {_round_width(d_center * f) for f in _WIDTH_FACTORS}:
            d_head = 16 if d_model < 128 else 32 if d_model < 256 else 64 if d_model < 1024 else 128
            if d_model % d_head:
                continue
            emb = 2 * vocab_size * d_model + d_model if kind != "non_embedding" else d_model
            per_layer = (n - emb) / n_layers - 4 * d_model * d_model - 2 * d_model
            if per_layer <= 0:
                continue
            grain = 16 if d_model < 512 else 64
            d_ff = int(round(per_layer / (3 * d_model) / grain)) * grain
            if not 2 * d_model <= d_ff <= 4 * d_model:
                continue
            shape = ModelShape(d_model, n_layers, d_model // d_head, d_head, d_ff, vocab_size, seq_len)
            err = abs(count_params(shape, kind) / n - 1)
            if err > tolerance:
                continue
            score = abs(math.log(d_model / n_layers / aspect)) + abs(math.log(d_ff / (8 / 3 * d_model))) + 10 * err
            if score < best_score:
                best, best_score = shape, score
    if best is None:
        raise InputError(f"params: no Llama-style decoder shape with vocab {vocab_size} comes within "
                         f"{tolerance:.0%} of {n:.3g} {'non-embedding' if kind == 'non_embedding' else 'total'} "
                         f"parameters (the smallest holds {2 * vocab_size * 16:.3g} in its embeddings); give the "
                         "vocabulary your runs use (--vocab), or plan from a fit of probes, whose shape family "
                         "reaches probe sizes")
    return best


def count_params(shape: ModelShape, kind: str) -> int:
    """The parameter count a fit's N means: "non_embedding", or "total"/"unspecified" (total)."""
    return shape.non_embedding_params if kind == "non_embedding" else shape.params


@dataclass(frozen=True)
class ShapeFamily:
    """How the planner builds shapes.

    ``kind="llama"``: production rules (:func:`shape_for_params`: aspect ratio, head size by
    width). ``kind="probe"``: the probe runner's own family (``probes.config.ModelConfig``): a
    fixed depth and head size, MLP width from ``ffn_ratio``, width a multiple of the head size,
    so that a planned model can be trained by the probe runner as it is.
    """

    kind: str = "llama"
    vocab_size: int = 32000
    seq_len: int = 2048
    depth: int = 2
    d_head: int = 16
    ffn_ratio: float = 8 / 3

    def __post_init__(self):
        if self.kind not in ("llama", "probe"):
            raise InputError(f"family: must be 'llama' or 'probe'; got {self.kind!r}")
        for name in ("vocab_size", "seq_len", "depth", "d_head"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name}: must be a positive integer; got {v!r}")

    def shape(self, width: int) -> ModelShape:
        """The probe-family shape of a given width."""
        return ModelShape(width, self.depth, width // self.d_head, self.d_head, probe_d_ff(width, self.ffn_ratio),
                          self.vocab_size, self.seq_len)


@lru_cache(maxsize=32)
def family_shapes(family: ShapeFamily, max_width: int = 16384) -> tuple[ModelShape, ...]:
    """Every probe-family shape from one head wide to ``max_width`` (built once per family)."""
    return tuple(family.shape(w) for w in range(family.d_head, max_width + 1, family.d_head))
