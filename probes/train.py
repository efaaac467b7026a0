"""Training one probe: AdamW with muP groups, warmup-stable-decay with branch cooldowns,
evaluations recorded as rows, divergence detection, checkpoints and exact resume.

Run directory ``<out>/<key>/``: ``config.json`` (resolved config), ``metrics.jsonl`` (one row
per evaluation, appended and fsynced), ``ckpt.pt`` (written atomically), ``done.json`` when
finished. A run killed at any moment resumes from its last checkpoint; rows written after that
checkpoint are cut first, so no row is ever partial or duplicated.

Warmup-stable-decay (Hägele et al. 2024, arXiv:2405.18392): one stable phase at the peak
learning rate serves every token count in ``train.tokens``; for each count but the largest a
short linear cooldown branches off the stable phase (its state saved and restored), ending in a
``final`` evaluation at exactly that count. The largest count is the main run's own cooldown.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
import time
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling_core.io import atomic_write_text
from fits.errors import InputError

from .config import ProbeConfig
from .data import Batches, load_corpus
from .device import autocast, device_kind, device_name, gpu_path, peak_flops, resolve_device
from .model import build_model
from .mup import make_optimizer

__all__ = ["train_probe", "resolve_device", "device_peak_flops", "RunResult"]

CODE_VERSION = "0.2.0"


@functools.lru_cache(maxsize=None)
def _versions() -> dict:
    """Library versions recorded with every row (read once per process)."""
    import platform

    import transformers

    return {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "python_version": platform.python_version()}




def device_peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Dense bf16 peak of the run's device (None on the CPU or for an unknown device, which warns)."""
    return peak_flops(device_name(device), override_tflops) if device.type == "cuda" or override_tflops else None


@dataclass(frozen=True)
class RunResult:
    key: str
    run_dir: Path
    rows: int
    diverged: bool
    resumed: bool


class _Schedule:
    """Learning-rate multiplier: linear warmup, constant, linear cooldown to 0 at ``end``."""

    def __init__(self, cfg, steps_per_count: list[int]):
        self.warmup = cfg.warmup_for(steps_per_count)
        self.cooldown_frac = cfg.cooldown_frac
        self.kind = cfg.schedule
        self.total = steps_per_count[-1]

    def cooldown_start(self, end: int) -> int:
        """First cooldown step of a branch ending at ``end`` (it keeps a stable phase after warmup
        whenever the count allows one)."""
        return max(self.warmup, end - max(1, round(self.cooldown_frac * end)))

    def __call__(self, step: int, end: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine":
            frac = (step - self.warmup) / max(1, end - self.warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        start = self.cooldown_start(end)
        return 1.0 if step < start else max(0.0, (end - step) / max(1, end - start))


def _append_row(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=float) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_rows(path: Path, keep: int) -> None:
    """Keep the first ``keep`` complete lines of a metrics file (drops any torn last line)."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    complete = lines[:-1] if lines and lines[-1] else lines[:-1]  # text after the last \n is torn
    atomic_write_text(path, b"".join(l + b"\n" for l in complete[:keep]).decode())


class _Trainer:
    def __init__(self, cfg: ProbeConfig, run_dir: Path, cache_dir: Path, progress: bool):
        self.cfg, self.dir, self.progress = cfg, run_dir, progress
        t, m, d = cfg.train, cfg.model, cfg.data
        self.device = resolve_device(t.device, gpus_expected=os.environ.get("PROBES_GPUS_EXPECTED") == "1")
        self.corpus = load_corpus(d, cache_dir)
        if self.corpus.vocab_size > m.vocab_size:
            raise InputError(f"model.vocab_size: the corpus needs {self.corpus.vocab_size} tokens; "
                             f"got {m.vocab_size}")
        self.tokens_per_step = t.batch_size * m.seq_len
        if t.tokens[0] < self.tokens_per_step:
            raise InputError(f"train.tokens: {t.tokens[0]} tokens is less than one step "
                             f"(batch_size x seq_len = {self.tokens_per_step})")
        self.steps = [math.ceil(n / self.tokens_per_step) for n in t.tokens]
        self.schedule = _Schedule(t, self.steps)
        self.batches = Batches(self.corpus, m.seq_len, t.seed, d.unique_tokens, d.label_noise)
        self.model = build_model(m, self.device, seed=t.seed)
        self.opt = make_optimizer(self.model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps)
        self.forward = self.model
        if t.compile and gpu_path(self.device):
            # one compiled graph per run: dynamo's cache from an earlier run in this process (another width,
            # another logit multiplier) would count against its recompile limit and, past it, run uncompiled
            torch._dynamo.reset()
            self.forward = torch.compile(self.model)
        self.warm = {"train": not t.compile, "eval": not t.compile}  # the first compiled call of each graph
        self.compile_s = 0.0
        self.peak = device_peak_flops(self.device, t.peak_tflops)
        self.metrics = run_dir / "metrics.jsonl"
        self.n_rows = 0
        self.targets_hit: set = set()
        self.recent: list[float] = []
        self.wall = 0.0
        self.tokens_timed = 0
        self.diverged = False
        self.evals = 0

    # --- state ------------------------------------------------------------------------------
    def _state(self, step: int, branches_done: int) -> dict:
        st = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": step,
              "branches_done": branches_done, "batches": self.batches.state(), "n_rows": self.n_rows,
              "torch_rng": torch.get_rng_state(), "targets_hit": sorted(self.targets_hit),
              "wall": self.wall, "recent": self.recent, "tokens_timed": self.tokens_timed,
              "compile_s": self.compile_s}
        if self.device.type == "cuda":
            st["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return st

    def save(self, step: int, branches_done: int) -> None:
        tmp = self.dir / "ckpt.pt.tmp"
        torch.save(self._state(step, branches_done), tmp)
        os.replace(tmp, self.dir / "ckpt.pt")

    def read_checkpoint(self) -> dict:
        """The checkpoint's state, read onto the CPU: the CPU RNG state must stay a CPU ByteTensor
        (``map_location`` to a GPU would move it there, and ``set_rng_state`` refuses it); model and
        optimizer tensors move to the run's device as they are loaded."""
        return torch.load(self.dir / "ckpt.pt", map_location="cpu", weights_only=False)

    def load(self, st: dict) -> tuple[int, int]:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.batches.set_state(st["batches"])
        torch.set_rng_state(st["torch_rng"].cpu())
        if "cuda_rng" in st and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"].cpu(), self.device)
        self.compile_s = st.get("compile_s", 0.0)
        self.n_rows, self.targets_hit = st["n_rows"], set(st["targets_hit"])
        self.wall, self.recent = st["wall"], st["recent"]
        # throughput = timed tokens / timed seconds: both are restored, or tokens_per_s and MFU drop
        self.tokens_timed = st.get("tokens_timed", st["step"] * self.tokens_per_step)
        _truncate_rows(self.metrics, self.n_rows)
        return st["step"], st["branches_done"]

    # --- steps ------------------------------------------------------------------------------
    def _to_device(self, a):
        t = torch.as_tensor(a)
        if self.device.type == "cuda":  # pinned, so the copy overlaps the previous step's kernels
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _loss(self, x, y):
        x, y = self._to_device(x), self._to_device(y)
        with autocast(self.device):
            logits = self.forward(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    def train_step(self, step: int, end: int) -> float:
        t = self.cfg.train
        mult = self.schedule(step, end)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        x, y = self.batches.train_batch(t.batch_size)
        t0 = time.perf_counter()
        loss = self._loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.opt.step()
        value = float(loss.detach())  # the step's one host sync: the stream's work so far is done when it returns
        if self.warm["train"]:
            self.wall += time.perf_counter() - t0
            self.tokens_timed += self.tokens_per_step
        else:  # the first compiled step compiles: its time is compile time, not training throughput
            self.compile_s += time.perf_counter() - t0
            self.warm["train"] = True
        self.recent = (self.recent + [value])[-50:]
        if not math.isfinite(value) or value > math.log(self.cfg.model.vocab_size) + 2.0:
            self.diverged = True
        return value

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        t0 = time.perf_counter()
        losses = [self._loss(x, y).detach() for x, y in
                  self.batches.val_batches(self.cfg.train.eval_batches, self.cfg.train.batch_size)]
        value = float(np.mean(torch.stack(losses).float().cpu().numpy().astype(np.float64)))  # one host sync
        if not self.warm["eval"]:
            self.compile_s += time.perf_counter() - t0
            self.warm["eval"] = True
        self.model.train()
        return value

    def noise_scale(self, k: int = 4) -> dict:
        """Two-batch gradient noise scale (McCandlish et al. 2018, App. A): small batch = one
        training batch, big batch = k of them; estimates |G|^2 and tr(Sigma) unbiasedly."""
        b_s = self.tokens_per_step
        b_b = k * b_s
        grads = []
        state = self.batches.state()
        for _ in range(k):
            self.opt.zero_grad(set_to_none=True)
            self._loss(*self.batches.train_batch(self.cfg.train.batch_size)).backward()
            grads.append(torch.cat([p.grad.reshape(-1).float() for p in self.model.parameters()
                                    if p.grad is not None]))
        self.batches.set_state(state)  # the estimate must not change the training data stream
        self.opt.zero_grad(set_to_none=True)
        g_small = float(torch.stack([(g * g).sum() for g in grads]).mean())
        mean = torch.stack(grads).mean(0)
        g_big = float((mean * mean).sum())
        g2 = (b_b * g_big - b_s * g_small) / (b_b - b_s)
        trace = (g_small - g_big) / (1 / b_s - 1 / b_b)
        return {"gns_g2": g2, "gns_trace": trace, "grad_noise_scale": trace / g2 if g2 > 0 else float("nan")}

    # --- rows -------------------------------------------------------------------------------
    def row(self, step: int, tokens: int, val_loss: float, phase: str, final: bool, **extra) -> dict:
        c, m, t, d = self.cfg, self.cfg.model, self.cfg.train, self.cfg.data
        tps = self.tokens_timed / self.wall if self.wall > 0 else float("nan")
        row = {
            "run_id": c.key(), "width": m.width, "depth": m.depth, "n_heads": m.n_heads,
            "params": m.non_embedding_params, "params_total": m.params_total, "tokens": tokens,
            "flops": m.flops_per_token * tokens, "lr": t.lr, "batch_tokens": self.tokens_per_step,
            "batch_size": t.batch_size, "seq_len": m.seq_len, "seed": t.seed, "step": step,
            "train_loss": float(np.mean(self.recent)) if self.recent else float("nan"),
            "val_loss": val_loss, "val_bpb": self.corpus.bits_per_byte(val_loss),
            "schedule": t.schedule, "phase": phase, "final": final, "wall_s": self.wall,
            "tokens_per_s": tps,
            "mfu": tps * m.flops_per_token / self.peak if self.peak else float("nan"),
            "grad_noise_scale": float("nan"), "diverged": self.diverged,
            "parametrization": m.parametrization, "base_width": m.base_width, "base_depth": m.base_depth,
            "d_head": m.d_head, "kv_heads": m.kv_heads, "ffn_ratio": m.ffn_ratio, "eval_batches": t.eval_batches,
            "unique_tokens": self.batches.unique_tokens, "epoch": tokens / self.batches.unique_tokens,
            "label_noise": d.label_noise, "weight_decay": t.weight_decay,
            "corpus": d.corpus, "tokenizer": d.tokenizer, "vocab_size": m.vocab_size,
            "device": device_name(self.device), "device_kind": device_kind(self.device),
            "compile_s": self.compile_s,
            "warmup_steps": self.schedule.warmup, "threads": torch.get_num_threads(),
            "code_version": CODE_VERSION, **_versions(),
        }
        row.update(extra)
        return row

    def record(self, row: dict) -> None:
        _append_row(self.metrics, row)
        self.n_rows += 1

    def eval_row(self, step: int, phase: str, final: bool, tokens: int | None = None) -> float:
        val = self.evaluate()
        extra = {}
        self.evals += 1
        t = self.cfg.train
        if t.gns_every and self.evals % t.gns_every == 0 and phase == "stable":
            extra = self.noise_scale()
        tok = tokens if tokens is not None else step * self.tokens_per_step
        self.record(self.row(step, tok, val, phase, final, **extra))
        for target in t.target_losses:
            if target not in self.targets_hit and val <= target and phase == "stable":
                self.targets_hit.add(target)
                self.record(self.row(step, tok, val, "target", False, target_loss=target))
        return val


def train_probe(cfg: ProbeConfig, out: Path, cache_dir: Path | None = None,
                progress: bool = True) -> RunResult:
    """Train (or resume, or skip when finished) one probe; rows go to ``out/<key>/metrics.jsonl``."""
    key = cfg.key()
    run_dir = Path(out) / key
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if (run_dir / "done.json").exists():
        done = json.loads((run_dir / "done.json").read_text())
        return RunResult(key, run_dir, done["rows"], done["diverged"], False)
    atomic_write_text(run_dir / "config.json", json.dumps({"key": key, **cfg.to_dict()}, indent=1, default=str))
    tr = _Trainer(cfg, run_dir, Path(cache_dir or Path(out) / "_cache"), progress)
    step, branches_done, resumed = 0, 0, False
    ckpt = run_dir / "ckpt.pt"
    if ckpt.exists():
        try:
            state = tr.read_checkpoint()
        except Exception as exc:  # a checkpoint torn by a kill or a full disk: start the run again
            os.replace(ckpt, run_dir / "ckpt.pt.corrupt")
            print(f"run {key}: checkpoint {ckpt} is unreadable ({type(exc).__name__}); kept as ckpt.pt.corrupt, "
                  "training the run again from step 0", file=sys.stderr)
            tr = _Trainer(cfg, run_dir, Path(cache_dir or Path(out) / "_cache"), progress)
            _truncate_rows(tr.metrics, 0)
        else:  # a checkpoint that reads but does not apply is a bug, not corruption: it raises
            step, branches_done = tr.load(state)
            resumed = True
    else:
        _truncate_rows(tr.metrics, 0)
    t = cfg.train
    total = tr.steps[-1]
    branches = tr.steps[:-1] if t.schedule == "wsd" else []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=step, desc=f"probe {key} w{cfg.model.width}", unit="step", leave=False)
    while step < total and not tr.diverged:
        while branches_done < len(branches) and step == tr.schedule.cooldown_start(branches[branches_done]):
            _branch(tr, step, branches[branches_done], t.tokens[branches_done])
            branches_done += 1
        tr.train_step(step, total)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{tr.recent[-1]:.3f}", tok_s=f"{tr.tokens_timed / max(tr.wall, 1e-9):,.0f}")
        if tr.diverged:
            break
        if step % t.eval_every == 0 and step < total:
            tr.eval_row(step, "stable", False)
        if step % t.checkpoint_every == 0 and step < total:
            tr.save(step, branches_done)
    if bar is not None:
        bar.close()
    if tr.diverged:
        tr.record(tr.row(step, step * tr.tokens_per_step, float("nan"), "diverged", False))
    else:
        tr.eval_row(step, "cooldown" if t.schedule == "wsd" else "end", True, tokens=t.tokens[-1])
        if t.save_model:
            tr.model.save_pretrained(run_dir / "model")
    atomic_write_text(run_dir / "done.json", json.dumps({"key": key, "rows": tr.n_rows, "diverged": tr.diverged,
                                                         "steps": step, "wall_s": tr.wall}))
    (run_dir / "ckpt.pt").unlink(missing_ok=True)
    return RunResult(key, run_dir, tr.n_rows, tr.diverged, resumed)


def _branch(tr: _Trainer, start: int, end: int, tokens: int) -> None:
    """A cooldown from ``start`` to ``end`` off the stable phase; state restored afterwards."""
    saved = (copy.deepcopy(tr.model.state_dict()), copy.deepcopy(tr.opt.state_dict()), tr.batches.state(),
             list(tr.recent), tr.diverged)
    for s in range(start, end):
        tr.train_step(s, end)
        if tr.diverged:
            break
    if tr.diverged:
        tr.record(tr.row(end, tokens, float("nan"), "diverged", False))
    else:
        tr.eval_row(end, "cooldown", True, tokens=tokens)
    model_state, opt_state, batch_state, recent, diverged = saved
    tr.model.load_state_dict(model_state)
    tr.opt.load_state_dict(opt_state)
    tr.batches.set_state(batch_state)
    tr.recent, tr.diverged = recent, diverged
