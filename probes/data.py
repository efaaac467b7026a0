"""Corpora the probes train on; nothing is downloaded.

* ``stdlib``: the Python source files of the running interpreter's standard library (real code
  no one here wrote), in sorted path order, split into train and validation by a hash of each
  file's content; ``stdlib+site`` adds the installed site-packages' sources (for GPU machines).
* a text file, a directory (all files below it) or a glob of text files;
* pre-tokenised arrays: ``.bin`` (uint16 or uint32, as nanoGPT writes them) or ``.npy``.

Tokenizers: ``byte`` (256 byte values + an end-of-document token, id 256) or ``bpe:<vocab>``,
a byte-level BPE trained locally with ``tokenizers`` on the training split and saved with the
corpus. Every corpus carries a manifest (files, bytes, tokens, tokenizer) and the bytes per
token of its validation split, so losses convert to bits per byte.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling_core.io import atomic_write_bytes, atomic_write_text
from fits.errors import InputError

from .config import DataConfig

__all__ = ["Corpus", "load_corpus", "corpus_files", "Batches"]

EOD = 256  # end-of-document id of the byte tokenizer


def corpus_files(spec: str) -> list[Path]:
    """The text files of a corpus spec, in a deterministic order."""
    if spec in ("stdlib", "stdlib+site"):
        paths = sysconfig.get_paths()
        roots = [Path(paths["stdlib"])]
        files = [f for f in roots[0].rglob("*.py") if "site-packages" not in f.parts
                 and "dist-packages" not in f.parts]
        if spec == "stdlib+site":
            files += list(Path(paths["purelib"]).rglob("*.py"))
        return sorted(set(files))
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
    if not matches:
        raise InputError(f"data.corpus: no file, directory or glob match for {spec!r}")
    return matches


@dataclass(frozen=True)
class Corpus:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    bytes_per_token: float  # of the validation split; NaN for pre-tokenised input
    manifest: dict

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        return loss_nats_per_token / self.bytes_per_token / math.log(2)


def _is_val(content: bytes, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha1(content).digest()[:8], "big")
    return h / 2**64 < fraction


def _load_token_file(path: Path, cfg: DataConfig) -> Corpus:
    try:
        arr = np.load(path) if path.suffix == ".npy" else np.fromfile(path, dtype=np.dtype(cfg.token_dtype))
    except (OSError, ValueError) as exc:
        raise InputError(f"data.corpus: cannot read token file {str(path)!r} ({exc})") from None
    arr = np.asarray(arr).ravel()
    if arr.size < 4 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"data.corpus: token file {str(path)!r} holds no integer tokens "
                         f"(dtype {arr.dtype}, {arr.size} values)")
    n_val = max(2, int(len(arr) * cfg.val_fraction))
    vocab = int(arr.max()) + 1
    manifest = {"corpus": str(path), "files": 1, "tokens": int(arr.size), "tokenizer": "pre-tokenised",
                "vocab_size": vocab, "bytes": None}
    return Corpus(arr[:-n_val].astype(np.int64), arr[-n_val:].astype(np.int64), vocab, float("nan"), manifest)


def _train_bpe(texts, vocab: int, out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out))
    return tok


def _read_cache(cdir: Path) -> "Corpus | None":
    """A cached corpus, checked against its manifest; None (and a message) when a file is missing,
    truncated or corrupt, so that the corpus is tokenised again rather than trained on in part."""
    try:
        manifest = json.loads((cdir / "manifest.json").read_text())
        dt = np.dtype(manifest["dtype"])
        train = np.fromfile(cdir / "train.bin", dtype=dt)
        val = np.fromfile(cdir / "val.bin", dtype=dt)
        ok = train.size == manifest["train_tokens"] and val.size == manifest["val_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        ok, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = (f"train.bin holds {train.size} tokens and val.bin {val.size}, the manifest says "
               f"{manifest['train_tokens']} and {manifest['val_tokens']}")
    if not ok:
        print(f"corpus cache {cdir} is incomplete ({why}); tokenising the corpus again", file=sys.stderr)
        return None
    return Corpus(train.astype(np.int64), val.astype(np.int64), manifest["vocab_size"],
                  manifest["val_bytes_per_token"], manifest)


def load_corpus(cfg: DataConfig, cache_dir: Path | None = None) -> Corpus:
    """Tokenise a corpus (cached under ``cache_dir`` by a hash of its spec and tokenizer)."""
    spec = Path(cfg.corpus)
    if spec.suffix in (".bin", ".npy") and not spec.is_dir():
        if not spec.is_file():
            raise InputError(f"data.corpus: no token file at {cfg.corpus!r}")
        return _load_token_file(spec, cfg)
    files = corpus_files(cfg.corpus)
    key = hashlib.sha256(json.dumps([cfg.corpus, cfg.tokenizer, cfg.val_fraction,
                                     [str(f) for f in files]]).encode()).hexdigest()[:12]
    cdir = Path(cache_dir) / f"corpus-{key}" if cache_dir else None
    if cdir is not None and (cdir / "manifest.json").is_file():
        cached = _read_cache(cdir)
        if cached is not None:
            return cached
    train_docs, val_docs = [], []
    for f in files:
        try:
            b = f.read_bytes()
        except OSError:
            continue
        if b:
            (val_docs if _is_val(b, cfg.val_fraction) else train_docs).append(b)
    if not train_docs or not val_docs:
        raise InputError(f"data.corpus: {cfg.corpus!r} gives an empty train or validation split "
                         f"({len(train_docs)} train and {len(val_docs)} validation documents from "
                         f"{len(files)} files); give more text")
    if cfg.tokenizer == "byte":
        vocab = 257
        enc = lambda docs: np.concatenate([np.append(np.frombuffer(d, np.uint8).astype(np.uint16), EOD)
                                           for d in docs])
    else:
        try:
            vocab = int(cfg.tokenizer.split(":", 1)[1])
        except ValueError:
            raise InputError(f"data.tokenizer: 'bpe:<vocab>' needs an integer vocab; got {cfg.tokenizer!r}") from None
        if cdir is None:
            raise InputError("data.tokenizer: a BPE tokenizer needs a cache directory to be saved in")
        cdir.mkdir(parents=True, exist_ok=True)
        tok = _train_bpe((d.decode("utf-8", "replace") for d in train_docs), vocab, cdir / "tokenizer.json")
        vocab = tok.get_vocab_size()
        eod = tok.token_to_id("<|endoftext|>")
        enc = lambda docs: np.concatenate([np.append(np.asarray(e.ids, np.uint32), eod) for e in
                                           tok.encode_batch([d.decode("utf-8", "replace") for d in docs])])
    train, val = enc(train_docs), enc(val_docs)
    val_bytes = sum(len(d) for d in val_docs)
    manifest = {
        "corpus": cfg.corpus, "tokenizer": cfg.tokenizer, "vocab_size": vocab, "files": len(files),
        "train_documents": len(train_docs), "val_documents": len(val_docs),
        "bytes": sum(len(d) for d in train_docs) + val_bytes, "train_tokens": int(train.size),
        "val_tokens": int(val.size), "val_bytes_per_token": val_bytes / val.size,
        "dtype": "uint16" if vocab <= 65536 else "uint32",
    }
    if cdir is not None:
        cdir.mkdir(parents=True, exist_ok=True)
        dt = np.dtype(manifest["dtype"])
        # token files first, each atomically, the manifest last: a reader that sees the manifest
        # (other workers tokenising the same corpus) sees complete files
        atomic_write_bytes(cdir / "train.bin", train.astype(dt).tobytes())
        atomic_write_bytes(cdir / "val.bin", val.astype(dt).tobytes())
        atomic_write_text(cdir / "manifest.json", json.dumps(manifest, indent=1))
    return Corpus(train.astype(np.int64), val.astype(np.int64), vocab, manifest["val_bytes_per_token"], manifest)


class Batches:
    """Random training windows (seeded) and a fixed set of validation windows.

    With ``unique_tokens`` U, training draws only from the first U training tokens, so a run
    longer than U repeats data (epochs = tokens seen / U). ``label_noise`` replaces that
    fraction of targets with uniformly random tokens (fixed per position, like noisy labels).
    """

    def __init__(self, corpus: Corpus, seq_len: int, seed: int, unique_tokens: int | None = None,
                 label_noise: float = 0.0):
        self.seq_len = seq_len
        pool = corpus.train if unique_tokens is None else corpus.train[:unique_tokens + 1]
        if len(pool) <= seq_len + 1 or len(corpus.val) <= seq_len + 1:
            raise InputError(f"data: the corpus holds too few tokens ({len(pool)} train, {len(corpus.val)} "
                             f"validation) for sequences of {seq_len}")
        self.pool = pool
        self.targets = pool.copy()
        if label_noise > 0:
            noise_rng = np.random.default_rng(seed + 7919)
            flip = noise_rng.random(len(pool)) < label_noise
            self.targets[flip] = noise_rng.integers(0, corpus.vocab_size, int(flip.sum()))
        self.unique_tokens = len(pool) - 1
        self.val = corpus.val
        self.rng = np.random.default_rng(seed)

    def train_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.pool) - self.seq_len - 1, batch_size)
        idx = starts[:, None] + np.arange(self.seq_len)[None, :]
        return self.pool[idx], self.targets[idx + 1]

    def val_batches(self, n_batches: int, batch_size: int):
        """A fixed, evenly spaced set of validation windows (the same for every run)."""
        n = n_batches * batch_size
        starts = np.linspace(0, len(self.val) - self.seq_len - 2, n).astype(np.int64)
        idx = starts[:, None] + np.arange(self.seq_len)[None, :]
        x, y = self.val[idx], self.val[idx + 1]
        for i in range(n_batches):
            yield x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
