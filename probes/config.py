"""Typed, frozen configuration of a probe run; the resolved config keys every result.

One scale dial: width (d_model) and depth; heads follow from a fixed head size and the MLP
width from a fixed ratio. Unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from fits.errors import InputError
from scaling_core.shape import ModelShape, probe_d_ff

__all__ = ["ModelConfig", "TrainConfig", "DataConfig", "ProbeConfig"]


def _from_dict(cls, d: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
    return cls(**d)


@dataclass(frozen=True)
class ModelConfig:
    """Decoder shape and parametrization.

    width : d_model; depth : number of layers; d_head : fixed head size (heads = width/d_head);
    kv_heads : key/value heads for grouped-query attention (0: one per query head; else it must
    divide the heads), as the production family plans them (``scaling_core.shape``);
    base_width, base_depth : muP/CompleteP reference shape (m = width/base_width,
    m_L = depth/base_depth); parametrization : "mup" or "sp" (standard, for comparison).
    """

    width: int = 64
    depth: int = 2
    d_head: int = 16
    ffn_ratio: float = 8 / 3
    kv_heads: int = 0
    base_width: int = 64
    base_depth: int = 2
    vocab_size: int = 257
    seq_len: int = 128
    parametrization: str = "mup"
    init_std: float = 0.02          # sigma: hidden init std at the base width
    embed_std: float = 0.02         # constant across widths
    readout_zero_init: bool = True  # Tensor Programs V recommends a zero readout under muP
    query_zero_init: bool = True
    embedding_multiplier: float = 1.0
    output_multiplier: float = 1.0  # alpha_out: logits = alpha_out / m * W h

    def __post_init__(self):
        for name in ("width", "depth", "d_head", "base_width", "base_depth", "vocab_size", "seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"model.{name}: must be a positive integer; got {v!r}")
        if self.width % self.d_head:
            raise InputError(f"model.width: must be divisible by d_head={self.d_head} into whole heads; "
                             f"got {self.width}")
        if not isinstance(self.kv_heads, int) or self.kv_heads < 0 or (
                self.kv_heads and self.n_heads % self.kv_heads):
            raise InputError(f"model.kv_heads: must be 0 (one per head) or divide the {self.n_heads} heads of width "
                             f"{self.width}; got {self.kv_heads!r}")
        if self.parametrization not in ("mup", "sp"):
            raise InputError(f"model.parametrization: must be 'mup' or 'sp'; got {self.parametrization!r}")

    @property
    def n_heads(self) -> int:
        return self.width // self.d_head

    @property
    def n_kv_heads(self) -> int:
        return self.shape.kv_heads

    @property
    def shape(self) -> ModelShape:
        """The planner's shape of this model: parameter and FLOP counts live there, once."""
        kv = self.kv_heads if self.kv_heads and self.kv_heads < self.n_heads else 0
        return ModelShape(self.width, self.depth, self.n_heads, self.d_head, self.d_ff, self.vocab_size,
                          self.seq_len, kv)

    @property
    def d_ff(self) -> int:
        return probe_d_ff(self.width, self.ffn_ratio)

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width if self.parametrization == "mup" else 1.0

    @property
    def depth_mult(self) -> float:
        return self.depth / self.base_depth if self.parametrization == "mup" else 1.0

    @property
    def non_embedding_params(self) -> int:
        return self.shape.non_embedding_params

    @property
    def params_total(self) -> int:
        return self.shape.params

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token, attention included (scaling_core.shape.ModelShape)."""
        return self.shape.flops_per_token


@dataclass(frozen=True)
class DataConfig:
    """corpus: "stdlib" (the interpreter's standard library sources), "stdlib+site" (plus
    site-packages), a text file, directory or glob, or a token file (.bin/.npy);
    tokenizer: "byte" or "bpe:<vocab size>"; unique_tokens: train on only the first U training
    tokens, repeated (epochs); label_noise: fraction of targets replaced by random tokens."""

    corpus: str = "stdlib"
    tokenizer: str = "byte"
    token_dtype: str = "uint16"
    val_fraction: float = 0.05
    unique_tokens: int | None = None
    label_noise: float = 0.0

    def __post_init__(self):
        if not 0 < self.val_fraction < 0.5:
            raise InputError(f"data.val_fraction: must be in (0, 0.5); got {self.val_fraction!r}")
        if not 0 <= self.label_noise < 1:
            raise InputError(f"data.label_noise: must be in [0, 1); got {self.label_noise!r}")
        if self.unique_tokens is not None and self.unique_tokens < 1:
            raise InputError(f"data.unique_tokens: must be a positive integer; got {self.unique_tokens!r}")
        if self.token_dtype not in ("uint16", "uint32"):
            raise InputError(f"data.token_dtype: must be 'uint16' or 'uint32'; got {self.token_dtype!r}")
        if not (self.tokenizer == "byte" or self.tokenizer.startswith("bpe:")):
            raise InputError(f"data.tokenizer: must be 'byte' or 'bpe:<vocab>'; got {self.tokenizer!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. tokens: the token counts at which to record end-of-cooldown losses (WSD
    branches one short cooldown per count off a single stable phase; cosine runs to the largest)."""

    tokens: tuple = (200_000,)
    lr: float = 3e-3
    batch_size: int = 16           # sequences per step
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    schedule: str = "wsd"
    warmup_frac: float = 0.05      # of the *shortest* token count, unless warmup_steps is set
    warmup_steps: int | None = None
    cooldown_frac: float = 0.2     # of each token count's own steps
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 8
    gns_every: int = 0             # gradient-noise-scale estimate every k evaluations (0: off)
    target_losses: tuple = ()      # record the first step reaching each (critical-batch data)
    device: str = "auto"
    compile: bool = False
    checkpoint_every: int = 200
    save_model: bool = False       # save the final model with save_pretrained (transformers layout)
    threads: int = 0               # torch CPU threads (0: torch's default); recorded, not hashed
    peak_tflops: float | None = None  # the device's dense bf16 peak for MFU, when probes.device does not know it

    def __post_init__(self):
        raw = self.tokens if isinstance(self.tokens, (list, tuple)) else (self.tokens,)
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and float(t) == int(t) for t in raw):
            raise InputError(f"train.tokens: must be whole positive token counts, e.g. [200000, 400000]; "
                             f"got {self.tokens!r}")
        toks = tuple(int(t) for t in raw)
        object.__setattr__(self, "tokens", tuple(sorted(toks)))
        object.__setattr__(self, "target_losses", tuple(float(t) for t in self.target_losses))
        if not toks or min(toks) < 1:
            raise InputError(f"train.tokens: must be positive token counts; got {self.tokens!r}")
        if not self.lr > 0:
            raise InputError(f"train.lr: must be positive; got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"train.batch_size: must be a positive integer; got {self.batch_size!r}")
        if self.schedule not in ("wsd", "cosine"):
            raise InputError(f"train.schedule: must be 'wsd' or 'cosine'; got {self.schedule!r}")
        if not 0 <= self.warmup_frac < 1 or not 0 < self.cooldown_frac <= 1:
            raise InputError("train.warmup_frac/cooldown_frac: must be fractions of the run")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 1):
            raise InputError(f"train.warmup_steps: must be a positive integer; got {self.warmup_steps!r}")
        for name in ("eval_every", "eval_batches", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"train.{name}: must be a positive integer; got {v!r}")
        if str(self.device).startswith("mps"):
            raise InputError("train.device: 'mps' is not supported (bf16 autocast, fused AdamW and the device checks "
                             "are CUDA's); use auto, cpu or cuda[:N]")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise InputError(f"train.device: must be auto, cpu or cuda[:N]; got {self.device!r}")
        if self.peak_tflops is not None and not (isinstance(self.peak_tflops, (int, float)) and self.peak_tflops > 0):
            raise InputError(f"train.peak_tflops: must be a positive number (dense bf16 TFLOP/s); got {self.peak_tflops!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise InputError(f"train.threads: must be a non-negative integer; got {self.threads!r}")

    def warmup_for(self, steps_per_count: list[int]) -> int:
        """Warmup steps: ``warmup_steps`` when set, else ``warmup_frac`` of the shortest count, so
        that every branch has a stable phase and a standalone run of any count can match it."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(1, round(self.warmup_frac * min(steps_per_count)))


@dataclass(frozen=True)
class ProbeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeConfig":
        unknown = sorted(set(d) - {"model", "train", "data"})
        if unknown:
            raise InputError(f"config: unknown section(s) {unknown}; sections are model, train, data")
        return cls(model=_from_dict(ModelConfig, d.get("model", {}), "model"),
                   train=_from_dict(TrainConfig, d.get("train", {}), "train"),
                   data=_from_dict(DataConfig, d.get("data", {}), "data"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the resolved config (device and compile excluded: they do not change results)."""
        d = self.to_dict()
        for k in ("device", "compile", "checkpoint_every", "save_model", "threads", "peak_tflops"):
            d["train"].pop(k)
        if not d["model"]["kv_heads"]:  # added later: a default value keeps the runs' existing keys
            d["model"].pop("kv_heads")
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
