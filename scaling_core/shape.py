"""A concrete decoder shape for a parameter count, built as labs build them.

Llama-family block (pre-norm RMSNorm, SwiGLU MLP, rotary positions, no biases): per layer the
attention projections q and o (d x H d_head each) and k, v (d x G d_head each, G key/value heads:
grouped-query attention), the MLP's gate, up and down (3 d d_ff), and two norms (2 d). Total
parameters add the input embedding and the readout (V d each, or once when tied) and a final
norm; the total is what Chinchilla-style fits count as N.

The production family (:func:`shape_for_params`, Llama 3 / OLMo style): head size 64 below
d_model 2048 and 128 from there, query heads a multiple of the tensor-parallel degree (8), so
d_model is a multiple of 512 (1024 from 2048); 8 key/value heads (or as many as there are
heads); d_ff a multiple of 128 between 2 and 4 d_model; an even depth; the vocabulary padded to a
multiple of 128; untied embeddings. The aspect ratio d_model/n_layers follows common practice
(about 64 for small models, 128 from ~10B, as in GPT-3 and Llama); Kaplan et al. 2020 (Sec. 3.1)
find loss depends only weakly on shape at fixed N. Models too small for that family (below
d_model 512 at two layers) take a small-model shape, and say so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

from .errors import InputError

__all__ = ["ModelShape", "shape_for_params", "decoder_params", "decoder_flops_per_token", "probe_d_ff",
           "ShapeFamily", "family_shapes", "count_params", "pad_vocab", "PRODUCTION_TP", "PRODUCTION_KV_HEADS"]

PRODUCTION_TP = 8         # query heads divide into 8-way tensor parallelism
PRODUCTION_KV_HEADS = 8   # grouped-query attention as in Llama 3 (8B to 405B)
VOCAB_MULTIPLE = 128


def pad_vocab(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The vocabulary rounded up to a multiple of ``multiple`` (embedding tables tile evenly).

    >>> pad_vocab(50257), pad_vocab(32000)
    (50304, 32000)
    """
    return -(-int(vocab_size) // multiple) * multiple


def _attn_width(d_model: int, kv_dim: int | None) -> int:
    return 2 * d_model * d_model + 2 * d_model * (d_model if kv_dim is None else kv_dim)


def decoder_params(d_model: int, n_layers: int, d_ff: int, vocab_size: int, kv_dim: int | None = None,
                   tied: bool = False) -> tuple[int, int]:
    """(non-embedding, total) parameters of the block described above; ``kv_dim`` is the key/value
    width (kv heads x head size; d_model when every head has its own), ``tied`` shares the
    embedding with the readout."""
    d = d_model
    non_emb = n_layers * (_attn_width(d, kv_dim) + 3 * d * d_ff + 2 * d) + d
    return non_emb, non_emb + (1 if tied else 2) * vocab_size * d


def decoder_flops_per_token(d_model: int, n_layers: int, d_ff: int, vocab_size: int, seq_len: int,
                            kv_dim: int | None = None) -> float:
    """Training FLOPs per token: 6 x the matrix weights a token passes through (attention
    projections, MLP, readout; not the embedding lookup or norm gains) + attention scores and
    values, 6 n_layers seq_len d_model (Kaplan et al. 2020, Table 1, forward x 3)."""
    d = d_model
    matmul = n_layers * (_attn_width(d, kv_dim) + 3 * d * d_ff) + vocab_size * d
    return 6.0 * matmul + 6.0 * n_layers * seq_len * d


def probe_d_ff(width: int, ffn_ratio: float = 8 / 3) -> int:
    """MLP width of the probe family: ffn_ratio x width rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(ffn_ratio * width / 8)) * 8)


@dataclass(frozen=True)
class ModelShape:
    """A decoder's shape. ``n_kv_heads`` 0 means one key/value head per query head;
    ``production`` says whether it follows the production family's rules (see the module)."""

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_ff: int
    vocab_size: int
    seq_len: int
    n_kv_heads: int = 0
    tie_embeddings: bool = False
    production: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def _kv_dim(self) -> int:
        return self.kv_heads * self.d_head

    @property
    def non_embedding_params(self) -> int:
        return decoder_params(self.d_model, self.n_layers, self.d_ff, self.vocab_size, self._kv_dim,
                              self.tie_embeddings)[0]

    @property
    def params(self) -> int:
        """Total parameters, embeddings and readout included."""
        return decoder_params(self.d_model, self.n_layers, self.d_ff, self.vocab_size, self._kv_dim,
                              self.tie_embeddings)[1]

    @property
    def flops_per_token(self) -> float:
        return decoder_flops_per_token(self.d_model, self.n_layers, self.d_ff, self.vocab_size, self.seq_len,
                                       self._kv_dim)

    def describe(self) -> str:
        """One line: the settings a trainer types in."""
        kv = (f", {self.kv_heads} kv heads (grouped-query)" if self.kv_heads < self.n_heads else ", full multi-head")
        return (f"d_model {self.d_model}, {self.n_layers} layers, {self.n_heads} heads x {self.d_head}{kv}, "
                f"d_ff {self.d_ff} (SwiGLU), vocab {self.vocab_size}, seq {self.seq_len}, "
                f"{'tied' if self.tie_embeddings else 'untied'} embeddings")

    def to_dict(self) -> dict:
        return {**asdict(self), "n_kv_heads": self.kv_heads, "params": self.params,
                "non_embedding_params": self.non_embedding_params, "flops_per_token": self.flops_per_token}


_WIDTH_FACTORS = tuple(2.0 ** (k / 4) for k in range(-12, 5))  # 1/8x .. 2x the target width


def _round_width(d: float) -> int:
    """Small-model widths: multiples of 16 below 128, 32 below 256, 64 beyond."""
    grain = 16 if d < 128 else 32 if d < 256 else 64
    return max(16, int(round(d / grain)) * grain)


def _target_aspect(n: float) -> float:
    return 64.0 * 2.0 ** min(1.0, max(0.0, math.log10(n) - 9.0))


def _production_widths(tp: int, kv_heads: int):
    """(d_model, d_head) of the production family: head 64 below 2048, 128 from there; heads a
    multiple of ``tp`` and of ``kv_heads``."""
    step = math.lcm(tp, kv_heads)
    for d_head, lo, hi in ((64, 1, 2047), (128, 2048, 131072)):
        for d_model in range(d_head * step, hi + 1, d_head * step):
            if d_model >= lo:
                yield d_model, d_head


def _small_widths(aspect: float, n_layers: int):
    for d_model in sorted({_round_width(aspect * n_layers * f) for f in _WIDTH_FACTORS}):
        if d_model < 512:
            yield d_model, 16 if d_model < 128 else 32 if d_model < 256 else 64


def shape_for_params(n: float, vocab_size: int = 32000, seq_len: int = 2048,
                     tolerance: float = 0.02, kind: str = "total", tp: int = PRODUCTION_TP,
                     kv_heads: int = PRODUCTION_KV_HEADS, tie_embeddings: bool = False) -> ModelShape:
    """The production-family shape (see the module) whose parameter count (``kind``: "total" or
    "non_embedding") is within ``tolerance`` of ``n`` and whose aspect ratio is closest to common
    practice; below the family's smallest model, a small-model shape (``production`` False).

    For each even depth and each production width, the MLP width (a multiple of 128 between 2 and
    4 d_model, around SwiGLU's 8/3) is solved to hit ``n``. ``tp``: query heads are a multiple of
    it; ``kv_heads``: key/value heads (at most the query heads; it must divide them).

    >>> s = shape_for_params(7e9)
    >>> abs(s.params / 7e9 - 1) < 0.02, s.n_heads % 8, s.d_head, s.d_ff % 128, s.n_layers % 2, s.kv_heads
    (True, 0, 128, 0, 0, 8)
    """
    if not (math.isfinite(n) and n > 0):
        raise InputError(f"params: must be a finite positive number; got {n!r}")
    for name, v in (("tp", tp), ("kv_heads", kv_heads), ("vocab_size", vocab_size), ("seq_len", seq_len)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name}: must be a positive integer; got {v!r}")
    vocab = pad_vocab(vocab_size)
    aspect = _target_aspect(n)
    emb_share = (1 if tie_embeddings else 2) * vocab if kind != "non_embedding" else 0

    def search(widths_for, production: bool, depths):
        best, best_score = None, math.inf
        for n_layers in depths:
            for d_model, d_head in widths_for(n_layers):
                heads = d_model // d_head
                kv = min(kv_heads, heads) if production else heads
                if heads % kv:
                    continue
                kv_dim = kv * d_head
                per_layer = ((n - emb_share * d_model - d_model) / n_layers - _attn_width(d_model, kv_dim)
                             - 2 * d_model)
                if per_layer <= 0:
                    continue
                grain = 128 if production else 16 if d_model < 512 else 64
                d_ff = int(round(per_layer / (3 * d_model) / grain)) * grain
                if not 2 * d_model <= d_ff <= 4 * d_model:
                    continue
                shape = ModelShape(d_model, n_layers, heads, d_head, d_ff, vocab, seq_len,
                                   kv if kv < heads else 0, tie_embeddings, production)
                err = abs(count_params(shape, kind) / n - 1)
                if err > tolerance:
                    continue
                score = (abs(math.log(d_model / n_layers / aspect)) + abs(math.log(d_ff / (8 / 3 * d_model)))
                         + 10 * err)
                if score < best_score:
                    best, best_score = shape, score
        return best

    widths = list(_production_widths(tp, kv_heads))
    near = lambda L: [(d, h) for d, h in widths if aspect * L / 8 <= d <= aspect * L * 2]  # as _WIDTH_FACTORS
    best = search(near, True, range(2, 513, 2))
    if best is None:
        best = search(lambda L: _small_widths(aspect, L), False, range(1, 257))
    if best is None:
        raise InputError(f"params: no Llama-style decoder shape with vocab {vocab} comes within "
                         f"{tolerance:.0%} of {n:.3g} {'non-embedding' if kind == 'non_embedding' else 'total'} "
                         f"parameters (the smallest holds {2 * vocab * 16:.3g} in its embeddings); give the "
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
    kv_heads: int | None = None   # llama: PRODUCTION_KV_HEADS; probe: one per query head
    tp: int = PRODUCTION_TP       # llama: query heads are a multiple of it

    def __post_init__(self):
        if self.kind not in ("llama", "probe"):
            raise InputError(f"family: must be 'llama' or 'probe'; got {self.kind!r}")
        for name in ("vocab_size", "seq_len", "depth", "d_head", "tp") + (("kv_heads",) if self.kv_heads else ()):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name}: must be a positive integer; got {v!r}")

    def shape(self, width: int) -> ModelShape:
        """The probe-family shape of a given width."""
        heads = width // self.d_head
        kv = self.kv_heads if self.kv_heads and self.kv_heads < heads else 0
        return ModelShape(width, self.depth, heads, self.d_head, probe_d_ff(width, self.ffn_ratio),
                          self.vocab_size, self.seq_len, kv)

    def for_params(self, n: float, kind: str) -> ModelShape:
        """The family's shape whose parameter count (the fit's ``kind``) is nearest ``n``."""
        if self.kind == "llama":
            return shape_for_params(n, vocab_size=self.vocab_size, seq_len=self.seq_len, kind=kind, tp=self.tp,
                                    kv_heads=self.kv_heads or PRODUCTION_KV_HEADS)
        return min(family_shapes(self), key=lambda s: abs(math.log(count_params(s, kind) / n)))


@lru_cache(maxsize=32)
def family_shapes(family: ShapeFamily, max_width: int = 16384) -> tuple[ModelShape, ...]:
    """Every probe-family shape from one head wide to ``max_width`` whose heads divide into its
    key/value heads (built once per family)."""
    kv = family.kv_heads or 1
    return tuple(family.shape(w) for w in range(family.d_head * kv, max_width + 1, family.d_head * kv))
