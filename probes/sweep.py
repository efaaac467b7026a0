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

    [[run]]                 # optional explicit runs (flat keys), e.g. an isoFLOP ladder;
    width = 128             # with [[run]] entries, each run is crossed with the [grid] axes
    tokens = [300000]
"""
from __future__ import annotations

import fcntl
import itertools
import os
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scaling_core.io import atomic_write_text
from fits.errors import InputError

from .config import DataConfig, ModelConfig, ProbeConfig, TrainConfig
from .executors import run_locked

if TYPE_CHECKING:
    import pandas as pd  # noqa: F401

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["expand_grid", "load_grid", "run_sweep", "sweep_status", "export_results", "design_grid",
           "DEFAULT_GRIDS", "default_threads", "ladder_runs", "ladder_toml"]

DEFAULT_GRIDS = Path(__file__).with_name("grids")
_SECTION = {f: "model" for f in ModelConfig.__dataclass_fields__}
_SECTION.update({f: "train" for f in TrainConfig.__dataclass_fields__})
_SECTION.update({f: "data" for f in DataConfig.__dataclass_fields__})


def _vocab_for(tokenizer) -> int:
    if tokenizer == "byte":
        return 257
    head, _, vocab = str(tokenizer).partition(":")
    if head != "bpe" or not vocab.isdigit() or int(vocab) < 258:
        raise InputError(f"data.tokenizer: must be 'byte' or 'bpe:<vocab>' with a vocabulary of at least 258; "
                         f"got {tokenizer!r}")
    return int(vocab)


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
    for k, v in grid.items():  # an empty axis would silently drop to the defaults
        if isinstance(v, list) and not v:
            raise InputError(f"grid: axis {k!r} is an empty list; give at least one value or remove it")
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
    keys = list(axes)
    combos = [dict(zip(keys, c)) for c in itertools.product(*(axes[k] for k in keys))] if axes else [{}]
    runs = spec.get("run", [])
    if runs:  # explicit runs, each crossed with the [grid] axes (e.g. seeds)
        configs = [_config(spec, {**combo, **r}) for r in runs for combo in combos]
    elif axes:
        configs = [_config(spec, combo) for combo in combos]
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


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (the variable's list when set,
    else every device CUDA counts)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [v.strip() for v in env.split(",") if v.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch, no driver: no GPU
        return []


def gpu_slots(workers: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each local worker: one GPU each, round robin (None: no GPU to give).

    >>> gpu_slots(4, ["0", "1"])
    ['0', '1', '0', '1']
    """
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def _init_worker(parent: int, slots) -> None:
    """Worker initializer: its own GPU (before CUDA starts in it), and death with its parent."""
    if slots is not None:
        slot = slots.get()
        if slot is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = slot
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker whose sweep process dies (kill -9 included) stops too, instead of
    training on as an orphan. Linux asks the kernel for SIGTERM on the parent's death (prctl
    PR_SET_PDEATHSIG); elsewhere a thread polls the parent."""
    import ctypes
    import signal
    import threading

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

    def watch():
        import time

        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def default_threads(workers: int) -> int:
    """CPU threads per probe process: the cores shared evenly (torch's default of all cores per
    process oversubscribes the machine when several probes run at once, ~100x slower)."""
    import os

    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_sweep(configs: list[ProbeConfig], out, workers: int = 1, progress: bool = True,
              threads: int | None = None, attempts: int = 2, executor: str = "local",
              options: dict | None = None) -> dict:
    """Run every config (skipping finished ones); ``workers`` processes share the machine.

    ``threads``: torch CPU threads per process (default: the cores divided among the workers).
    A worker that dies (killed, out of memory) fails its own run, not the sweep: the pool is
    restarted and unfinished runs are tried again (resuming from their checkpoints) up to
    ``attempts`` times; a run that still has not finished, or that raised an error, is reported
    as ``failed: <why>``.

    ``executor``: "local" (this machine), "ray" or "slurm" (``probes.executors``; ``options`` are
    passed on, e.g. address, gpus_per_probe, partition). Every executor trains into the same
    run store under ``out`` with the same locks, so the guarantees above hold on each.
    """
    from .executors import EXECUTORS, run_ray, run_slurm

    if executor not in EXECUTORS:
        raise InputError(f"executor: must be one of {list(EXECUTORS)}; got {executor!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a Ray or Slurm task takes one core unless told otherwise: the driver's core count is not the workers'
    threads = threads or (1 if executor in ("ray", "slurm") else default_threads(workers))
    # tokenise the corpus once, before workers start
    from .data import load_corpus
    for data_cfg in {c.data for c in configs}:
        load_corpus(data_cfg, out / "_cache")
    if executor == "ray":
        return run_ray(configs, out, threads=threads, attempts=attempts, progress=progress, **(options or {}))
    if executor == "slurm":
        return run_slurm(configs, out, threads=threads, progress=progress, **(options or {}))
    statuses = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(configs), desc="sweep", unit="run")
    if workers <= 1:
        for c in configs:
            try:
                k, s = run_locked(c, out, progress, threads)
            except Exception as exc:  # noqa: BLE001 - one run's failure is recorded, the sweep goes on
                k, s = c.key(), f"failed: {type(exc).__name__}: {exc}"
            statuses[k] = s
            bar.update(1) if bar else None
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        pending = list(configs)
        tries = {c.key(): 0 for c in configs}
        gpus = visible_gpus() if any(c.train.device != "cpu" for c in configs) else []
        while pending:
            broken = []
            ctx = mp.get_context("spawn")
            slots = None
            if gpus:  # one GPU per worker, round robin: not every worker on GPU 0
                slots = ctx.Queue()
                for slot in gpu_slots(workers, gpus):
                    slots.put(slot)
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(os.getpid(), slots)) as ex:
                futures = {ex.submit(run_locked, c, out, False, threads): c for c in pending}
                for fut, c in futures.items():
                    try:
                        k, s = fut.result()
                    except BrokenProcessPool:
                        broken.append(c)
                        continue
                    except Exception as exc:  # noqa: BLE001 - the run failed, not the sweep
                        k, s = c.key(), f"failed: {type(exc).__name__}: {exc}"
                    statuses[k] = s
                    bar.update(1) if bar else None
            pending = []
            for c in broken:
                tries[c.key()] += 1
                if (out / c.key() / "done.json").exists():
                    statuses[c.key()] = "trained"
                elif tries[c.key()] >= attempts:
                    statuses[c.key()] = f"failed: its worker died {attempts} times"
                else:
                    pending.append(c)
                    continue
                bar.update(1) if bar else None
    if bar:
        bar.close()
    return statuses


def sync_mlflow(out, uri: str | None = None, experiment: str = "probes") -> int:
    """Log every run's rows that MLflow does not have yet (``fits.tracking.log_rows``) to ``uri``
    (default: the embedded SQLite store ``<out>/mlflow.db``). Returns the number of rows logged."""
    from fits.tracking import default_uri, log_rows

    out = Path(out)
    uri = uri or default_uri(out)
    n = 0
    for d in sorted(p for p in out.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists()):
        n += log_rows(d.name, _read_rows(d / "metrics.jsonl", finished=(d / "done.json").exists()), uri, experiment)
    return n


def _read_rows(path: Path, finished: bool = False) -> list[dict]:
    """Complete rows of a metrics file. A torn last line (a kill mid-write) is ignored while the run
    can still resume and rewrite it; in a finished run it is a lost row, and an error names it."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    if finished and lines[-1]:
        raise InputError(f"runs: {str(path)!r} of a finished run ends in a partial line (a row was lost); "
                         f"delete {str(path.parent)!r} and run the grid again to retrain it")
    rows = []
    for i, line in enumerate(lines[:-1]):  # anything after the last newline is incomplete
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"runs: line {i + 1} of {str(path)!r} is not a JSON row; delete "
                                 f"{str(path.parent)!r} and run the grid again to retrain it") from None
    return rows


def _read_json(path: Path) -> dict | None:
    """A run's JSON file, or None when it is missing, empty or corrupt."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _running(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (the lock dies with its process, on any host
    sharing the filesystem's flock)."""
    lock = run_dir / "lock"
    if not lock.exists():
        return False
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


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
        cfg = _read_json(d / "config.json")
        done = d / "done.json"
        info = _read_json(done) if done.exists() else {}
        error = ""
        if cfg is None:
            status, error = "corrupt", f"config.json unreadable: delete {d} and run the grid again"
        elif info is None:
            status, error = "corrupt", f"done.json unreadable: delete {done} to resume the run from its checkpoint"
        elif info:
            status = "diverged" if info.get("diverged") else "done"
        elif _running(d):
            status = "running"
        else:
            status = "interrupted" if (d / "ckpt.pt").exists() or (d / "metrics.jsonl").exists() else "started"
            error = _last_error(d)
            if error:
                status = "failed"
        try:
            n_rows = len(_read_rows(d / "metrics.jsonl"))
        except InputError as exc:
            status, error, n_rows = "corrupt", str(exc), 0
        model, train = (cfg or {}).get("model", {}), (cfg or {}).get("train", {})
        rows.append({"run_id": key, "status": status, "width": model.get("width"), "lr": train.get("lr"),
                     "rows": n_rows, "error": error})
    return pd.DataFrame(rows, columns=["run_id", "status", "width", "lr", "rows", "error"])


def _last_error(run_dir: Path) -> str:
    """The last line of a failed run's error file, if it has one."""
    err = run_dir / "error.txt"
    if not err.exists():
        return ""
    lines = [line for line in err.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def export_results(out, path=None, final_only: bool = False):
    """Concatenate every run's rows into one table (and write it atomically as CSV)."""
    import pandas as pd

    out = Path(out)
    if not out.is_dir():
        raise InputError(f"runs: no results directory at {str(out)!r}")
    rows = [r for d in sorted(out.iterdir()) if d.is_dir()
            for r in _read_rows(d / "metrics.jsonl", finished=(d / "done.json").exists())]
    if not rows and path is not None:  # never replace a results file with an empty one
        raise InputError(f"runs: no evaluation rows under {str(out)!r}; nothing written to {str(path)!r}")
    df = pd.DataFrame(rows)
    if final_only and len(df):
        df = df[df["final"].astype(bool)]
    if path is not None:
        atomic_write_text(path, df.to_csv(index=False))
    return df


LADDER_WIDTHS = (32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512)
LADDER_LEVELS = (4e11, 8e11, 1.6e12, 3.2e12)  # the default CPU ladder (probes/grids/default.toml)


def ladder_runs(levels, widths=LADDER_WIDTHS, depth: int = 2,
                tpp_range=(4.0, 500.0), seq_len: int = 128, batch_size: int = 8, d_head: int = 16,
                vocab_size: int = 257) -> list[dict]:
    """An isoFLOP ladder as runs: for every width, the token counts at which it spends each compute
    level of ``levels`` (FLOPs) with tokens per parameter inside ``tpp_range``. One WSD run per
    width records all its levels by branch cooldowns, so the ladder costs about one run per width
    at its highest level. Token counts are whole optimizer steps.

    Returns a list of {"width", "tokens": [...], "levels": [...], "cost"} (widths with < 1 level dropped).
    """
    step_tokens = seq_len * batch_size
    runs = []
    for w in widths:
        m = ModelConfig(width=w, depth=depth, d_head=d_head, base_width=min(widths), seq_len=seq_len,
                        vocab_size=vocab_size)
        toks, lv = [], []
        for c in sorted(levels):
            steps = round(c / m.flops_per_token / step_tokens)
            tokens = steps * step_tokens
            if steps >= 1 and tpp_range[0] <= tokens / m.params_total <= tpp_range[1]:
                toks.append(tokens)
                lv.append(c)
        if toks:
            runs.append({"width": w, "tokens": toks, "levels": lv, "cost": toks[-1] * m.flops_per_token})
    return runs


def ladder_toml(levels=LADDER_LEVELS, header: str = "", warmup_steps: int = 32, lr: float = 0.01, seeds=(0,),
                eval_batches: int = 32, widths=LADDER_WIDTHS, depth: int = 2, seq_len: int = 128,
                batch_size: int = 8, tpp_range=(4.0, 500.0), base_width: int = 16) -> str:
    """A probe grid (TOML) for :func:`ladder_runs`; every run shares one warmup length in steps.

    Defaults are the measured choices for CPU probes (byte tokens, seq 128): 8 sequences a step
    (1024 tokens, near the critical batch: 16 sequences lost 4% loss at equal tokens), lr 0.01 at
    base width 16 (best of 0.005, 0.01, 0.02), a 32-step warmup that every branch shares."""
    runs = ladder_runs(levels, widths=widths, depth=depth, tpp_range=tpp_range, seq_len=seq_len,
                       batch_size=batch_size)
    if not runs:
        raise InputError(f"levels: no width in {list(widths)} reaches any of the compute levels "
                         f"{[f'{c:.3g}' for c in levels]} with {tpp_range} tokens per parameter")
    head = "\n".join([*header.splitlines(),
                      "isoFLOP ladder: compute levels " + ", ".join(f"{c:.3g}" for c in sorted(levels)) + " FLOPs;",
                      "one WSD run per width records every level it reaches (branch cooldowns); "
                      f"total {sum(r['cost'] for r in runs):.3g} FLOPs"])
    return runs_toml({r["width"]: r["tokens"] for r in runs}, head, warmup_steps=warmup_steps, lr=lr, seeds=seeds,
                     eval_batches=eval_batches, depth=depth, seq_len=seq_len, batch_size=batch_size,
                     base_width=base_width)


def design_candidates(widths=LADDER_WIDTHS, depth: int = 2, seq_len: int = 128, batch_size: int = 8,
                      tpp_range=(4.0, 500.0), n_tokens: int = 16, d_head: int = 16,
                      vocab_size: int = 257, min_steps: int = 800) -> "pd.DataFrame":
    """Candidate probe runs for :func:`fits.design.design_runs`: every width at ``n_tokens``
    log-spaced token counts (whole optimizer steps) with tokens per parameter inside ``tpp_range``
    and at least ``min_steps`` steps (25x the probes' 32 warmup steps, the default ladder's shortest
    run: a shorter run's loss measures its warmup more than its model, and lies outside the data of
    the reference fit the design starts from).
    Columns width, N (non-embedding parameters, the fit's default N), D, group (the width: one WSD
    run per width, branches for its shorter counts), fpt (FLOPs per token)."""
    import pandas as pd

    step_tokens = seq_len * batch_size
    rows = []
    for w in widths:
        m = ModelConfig(width=w, depth=depth, d_head=d_head, base_width=min(widths), seq_len=seq_len,
                        vocab_size=vocab_size)
        lo, hi = tpp_range[0] * m.params_total, tpp_range[1] * m.params_total
        steps = sorted({max(1, round(t / step_tokens)) for t in np.geomspace(lo, hi, n_tokens)
                        if t >= min_steps * step_tokens})
        for st in steps:
            rows.append({"width": w, "N": float(m.non_embedding_params), "D": float(st * step_tokens),
                         "group": w, "fpt": m.flops_per_token})
    return pd.DataFrame(rows)


def runs_toml(runs: dict, header: str = "", warmup_steps: int = 32, lr: float = 0.01, seeds=(0,),
              eval_batches: int = 32, depth: int = 2, seq_len: int = 128, batch_size: int = 8,
              base_width: int = 16) -> str:
    """A probe grid (TOML) with one WSD run per width ({width: [token counts]}) on the measured CPU
    defaults of :func:`ladder_toml`; every run shares one warmup length in steps."""
    lines = [f"# {line}" for line in header.splitlines()] + [
        "[grid]", f"seed = {list(seeds)}", "",
        "[model]", f"depth = {depth}", "d_head = 16", f"base_width = {base_width}", f"seq_len = {seq_len}", "",
        "[train]", f"lr = {lr}", f"batch_size = {batch_size}", f"warmup_steps = {warmup_steps}",
        f"eval_batches = {eval_batches}", "eval_every = 1000000", 'schedule = "wsd"', "",
        "[data]", 'corpus = "stdlib"', 'tokenizer = "byte"', ""]
    for w in sorted(runs):
        lines += ["[[run]]", f"width = {w}", f"tokens = {sorted(int(t) for t in runs[w])}", ""]
    return "\n".join(lines)


def ladder_levels(budget: float, widths=LADDER_WIDTHS, depth: int = 2, n_budgets: int = 4, ratio: float = 2.0,
                  seq_len: int = 128, batch_size: int = 8) -> list[float]:
    """The ``n_budgets`` compute levels, ``ratio`` apart, of the isoFLOP ladder whose runs (see
    :func:`ladder_runs`) cost ``budget`` FLOPs in all: the top level is solved for by bisection."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise InputError(f"budget: must be a finite positive number of FLOPs; got {budget!r}")
    kw = dict(widths=widths, depth=depth, seq_len=seq_len, batch_size=batch_size)

    def levels(top):
        return [top / ratio ** i for i in range(n_budgets)][::-1]

    def cost(top):
        return sum(r["cost"] for r in ladder_runs(levels(top), **kw))

    smallest = ModelConfig(width=min(widths), depth=depth, d_head=16, base_width=min(widths), seq_len=seq_len)
    one_step = smallest.flops_per_token * seq_len * batch_size
    lo, hi = math.log(one_step), math.log(max(budget, one_step) * 10)
    if cost(math.exp(hi)) < budget * 0.5 or budget < one_step:
        raise InputError(f"budget: {budget:.3g} FLOPs is less than one training step of the smallest probe "
                         f"({one_step:.3g} FLOPs) or outside what widths {min(widths)}-{max(widths)} can spend")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cost(math.exp(mid)) <= budget else (lo, mid)
    if not ladder_runs(levels(math.exp(lo)), **kw):
        raise InputError(f"budget: {budget:.3g} FLOPs leaves no run with at least one training step "
                         f"(one step of the smallest probe costs {one_step:.3g} FLOPs)")
    return levels(math.exp(lo))


def design_grid(budget: float, widths=LADDER_WIDTHS, depth: int = 2, n_budgets: int = 4, ratio: float = 2.0,
                seq_len: int = 128, batch_size: int = 8, base: dict | None = None) -> str:
    """An isoFLOP ladder (TOML) whose runs cost ``budget`` FLOPs in all (:func:`ladder_levels`)."""
    kw = dict(widths=widths, depth=depth, seq_len=seq_len, batch_size=batch_size)
    levels = ladder_levels(budget, n_budgets=n_budgets, ratio=ratio, **kw)
    total = sum(r["cost"] for r in ladder_runs(levels, **kw))
    header = "\n".join([*(f"{k} = {v}" for k, v in (base or {}).items()), cost_words(total)])
    return ladder_toml(levels, header=header, **kw)


# training FLOP/s of CPU probes on this repository's 2-core machine, end to end: the default
# ladder's 1.6e13 FLOPs of runs took 9.6 min with 2 workers, evaluations included (bare training
# steps reach 4.7e10-1.0e11 at widths 64-256, benchmarks/results/throughput_cpu.json)
CPU_FLOPS = 2.8e10


def cost_words(flops: float) -> str:
    """What ``flops`` of probes take: CPU-hours at the measured CPU rate and H100-hours at 40% MFU."""
    from scaling_core.budget import Budget

    def span(hours: float) -> str:
        for limit, unit, scale in ((1 / 60, "s", 3600), (1, "min", 60), (48, "h", 1), (math.inf, "days", 1 / 24)):
            if hours < limit:
                return f"~{hours * scale:,.3g} {unit}"

    h100 = Budget(flops, gpu="h100", mfu=0.4).gpu_hours
    return (f"cost: {flops:.3g} FLOPs = {span(flops / CPU_FLOPS / 3600)} on 2 CPU cores (measured "
            f"{CPU_FLOPS:.2g} FLOP/s) = {span(h100)} of one H100 at 40% MFU")
