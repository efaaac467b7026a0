"""Sweeps: a TOML grid expands into probe configs keyed by hash; runs are skipped when
finished, resumed when interrupted, locked while running (so several workers, or several
processes sharing one GPU, never train the same run), and exported into one results table.

Grid file::

    [grid]                  # lists; the Cartesian product becomes runs
    width = [64, 128, 256]
    lr = [1e-3, 3e-3]
    seed = [0]
    tokens = [100000, 200000, 400000]   # WSD: every run records all of these (branch cooldowns)

    [model]                 # fixed settings (ModelConfig / TrainConfig / DataConfig keys)
    base_width = 64
    [train]
    eval_every = 100
    [data]
    corpus = "stdlib"

    [[run]]                 # optional explicit runs (flat keys), e.g. an isoFLOP design
    width = 128
    tokens = [300000]
"""
from __future__ import annotations

import fcntl
import itertools
import json
import math
import sys
from pathlib import Path

from fits._io import atomic_write_text
from fits.errors import InputError

from .config import DataConfig, ModelConfig, ProbeConfig, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["expand_grid", "load_grid", "run_sweep", "sweep_status", "export_results", "design_grid",
           "DEFAULT_GRIDS"]

DEFAULT_GRIDS = Path(__file__).with_name("grids")
_SECTION = {f: "model" for f in ModelConfig.__dataclass_fields__}
_SECTION.update({f: "train" for f in TrainConfig.__dataclass_fields__})
_SECTION.update({f: "data" for f in DataConfig.__dataclass_fields__})


def _vocab_for(tokenizer: str) -> int:
    return 257 if tokenizer == "byte" else int(tokenizer.split(":", 1)[1])


def _config(fixed: dict, flat: dict) -> ProbeConfig:
    d = {"model": dict(fixed.get("model", {})), "train": dict(fixed.get("train", {})),
         "data": dict(fixed.get("data", {}))}
    for k, v in flat.items():
        d[_SECTION[k]][k] = v
    if "vocab_size" not in d["model"]:
        tok = d["data"].get("tokenizer", "byte")
        if not str(d["data"].get("corpus", "stdlib")).endswith((".bin", ".npy")):
            d["model"]["vocab_size"] = _vocab_for(tok)
    return ProbeConfig.from_dict(d)


def expand_grid(spec: dict) -> list[ProbeConfig]:
    """Configs of a parsed grid file (see the module docstring); unknown keys are errors."""
    allowed = {"grid", "model", "train", "data", "run"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise InputError(f"grid: unknown section(s) {unknown}; sections are {sorted(allowed)}")
    for sec in ("model", "train", "data"):
        bad = sorted(set(spec.get(sec, {})) - {k for k, s in _SECTION.items() if s == sec})
        if bad:
            raise InputError(f"grid: unknown key(s) {bad} in [{sec}]")
    grid = dict(spec.get("grid", {}))
    for k in list(grid) + [k for r in spec.get("run", []) for k in r]:
        if k not in _SECTION:
            raise InputError(f"grid: unknown key {k!r}; allowed keys are {sorted(_SECTION)}")
    schedule = grid.get("schedule", [spec.get("train", {}).get("schedule", "wsd")])
    tokens = grid.pop("tokens", None)
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    if tokens is not None:
        if not isinstance(tokens, list):
            tokens = [tokens]
        if schedule == ["wsd"] or schedule == "wsd":
            axes["tokens"] = [tokens]  # one run records them all
        else:
            axes["tokens"] = [[t] for t in tokens]
    configs = []
    if axes:
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            configs.append(_config(spec, dict(zip(keys, combo))))
    for r in spec.get("run", []):
        configs.append(_config(spec, r))
    if not configs:
        configs.append(_config(spec, {}))
    seen, unique = set(), []
    for c in configs:
        if c.key() not in seen:
            seen.add(c.key())
            unique.append(c)
    return unique


def load_grid(path) -> list[ProbeConfig]:
    """Read a TOML grid file (a path, or the name of a built-in grid such as ``default``)."""
    p = Path(path)
    if not p.is_file() and (DEFAULT_GRIDS / f"{path}.toml").is_file():
        p = DEFAULT_GRIDS / f"{path}.toml"
    if not p.is_file():
        raise InputError(f"grid: no file at {str(path)!r} (built-in grids: "
                         f"{sorted(x.stem for x in DEFAULT_GRIDS.glob('*.toml'))})")
    try:
        spec = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"grid: {str(p)!r} is not valid TOML ({exc})") from None
    return expand_grid(spec)


def _run_locked(cfg: ProbeConfig, out: Path, progress: bool, threads: int | None):
    """Train one config unless another process holds its lock. Returns (key, status)."""
    from .train import train_probe

    if threads:
        import torch
        torch.set_num_threads(threads)
    run_dir = out / cfg.key()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return cfg.key(), "busy"
        if (run_dir / "done.json").exists():
            return cfg.key(), "skipped"
        res = train_probe(cfg, out, progress=progress)
        return cfg.key(), "diverged" if res.diverged else ("resumed" if res.resumed else "trained")


def run_sweep(configs: list[ProbeConfig], out, workers: int = 1, progress: bool = True) -> dict:
    """Run every config (skipping finished ones); ``workers`` processes share the machine."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # tokenise the corpus once, before workers start
    from .data import load_corpus
    for data_cfg in {c.data for c in configs}:
        load_corpus(data_cfg, out / "_cache")
    statuses = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(configs), desc="sweep", unit="run")
    if workers <= 1:
        for c in configs:
            k, s = _run_locked(c, out, progress, None)
            statuses[k] = s
            bar.update(1) if bar else None
    else:
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for k, s in ex.map(_run_locked, configs, [out] * len(configs), [False] * len(configs),
                               [threads] * len(configs)):
                statuses[k] = s
                bar.update(1) if bar else None
    if bar:
        bar.close()
    return statuses


def _read_rows(path: Path) -> list[dict]:
    """Complete rows of a metrics file (a torn last line, from a kill mid-write, is ignored)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # anything after the last newline is incomplete
    return [json.loads(l) for l in lines if l]


def sweep_status(out, configs: list[ProbeConfig] | None = None):
    """Tidy status of a results directory: one row per run (done, diverged, running/partial, pending)."""
    import pandas as pd

    out = Path(out)
    rows = []
    keys = {c.key(): c for c in configs} if configs else {}
    dirs = {p.name: p for p in out.iterdir() if p.is_dir() and (p / "config.json").exists()} if out.is_dir() else {}
    for key in sorted(set(dirs) | set(keys)):
        d = dirs.get(key)
        if d is None:
            c = keys[key]
            rows.append({"run_id": key, "status": "pending", "width": c.model.width, "lr": c.train.lr, "rows": 0})
            continue
        cfg = json.loads((d / "config.json").read_text())
        done = d / "done.json"
        info = json.loads(done.read_text()) if done.exists() else {}
        status = ("diverged" if info.get("diverged") else "done") if info else (
            "interrupted" if (d / "ckpt.pt").exists() or (d / "metrics.jsonl").exists() else "started")
        rows.append({"run_id": key, "status": status, "width": cfg["model"]["width"], "lr": cfg["train"]["lr"],
                     "rows": len(_read_rows(d / "metrics.jsonl"))})
    return pd.DataFrame(rows, columns=["run_id", "status", "width", "lr", "rows"])


def export_results(out, path=None, final_only: bool = False):
    """Concatenate every run's rows into one table (and write it atomically as CSV)."""
    import pandas as pd

    out = Path(out)
    if not out.is_dir():
        raise InputError(f"runs: no results directory at {str(out)!r}")
    rows = [r for d in sorted(out.iterdir()) if d.is_dir() for r in _read_rows(d / "metrics.jsonl")]
    df = pd.DataFrame(rows)
    if final_only and len(df):
        df = df[df["final"].astype(bool)]
    if path is not None:
        atomic_write_text(path, df.to_csv(index=False))
    return df


def design_grid(budget: float, widths=(32, 48, 64, 96, 128, 192, 256, 384, 512), depth: int = 4,
                n_budgets: int = 3, sizes_per_budget: int = 4, ratio: float = 4.0,
                seq_len: int = 128, batch_size: int = 16, base: dict | None = None) -> str:
    """An isoFLOP probe design as TOML: ``n_budgets`` compute levels ``ratio`` apart whose runs
    (``sizes_per_budget`` widths around 20 tokens per parameter) cost ``budget`` FLOPs in all."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise InputError(f"budget: must be a finite positive number of FLOPs; got {budget!r}")
    weights = [ratio ** -i for i in range(n_budgets)]
    c_top = budget / (sizes_per_budget * sum(weights))
    levels = sorted(c_top * w for w in weights)
    step_tokens = seq_len * batch_size
    lines = ["# isoFLOP probe design: " + f"total {budget:.3g} FLOPs, budgets " +
             ", ".join(f"{c:.3g}" for c in levels),
             "[model]", f"depth = {depth}", f"seq_len = {seq_len}", f"base_width = {min(widths)}", "",
             "[train]", f"batch_size = {batch_size}", "schedule = \"wsd\"", ""]
    for k, v in (base or {}).items():
        lines.insert(0, f"# {k} = {v}")
    runs = 0
    for c in levels:
        cands = []
        for w in widths:
            m = ModelConfig(width=w, depth=depth, d_head=16, base_width=min(widths), seq_len=seq_len)
            tokens = c / m.flops_per_token
            if tokens >= step_tokens:
                cands.append((abs(math.log(tokens / m.params_total / 20.0)), w, int(tokens)))
        for _, w, tokens in sorted(sorted(cands)[:sizes_per_budget], key=lambda t: t[1]):
            lines += ["[[run]]", f"width = {w}", f"tokens = [{tokens}]", f"# budget {c:.3g} FLOPs", ""]
            runs += 1
    if runs == 0:
        smallest = ModelConfig(width=min(widths), depth=depth, d_head=16, base_width=min(widths), seq_len=seq_len)
        raise InputError(f"budget: {budget:.3g} FLOPs spread over {n_budgets} budgets x {sizes_per_budget} "
                         f"runs leaves at most {c_top:.3g} FLOPs per run, less than one training step of the "
                         f"smallest probe ({smallest.flops_per_token * step_tokens:.3g} FLOPs)")
    return "\n".join(lines)
