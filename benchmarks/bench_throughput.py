"""Benchmark: probe training throughput (tokens/s) and MFU per width, on CPU or GPU.

    python benchmarks/bench_throughput.py                 # the machine's device, default shapes
    python benchmarks/bench_throughput.py --compile       # also torch.compile (GPU)
    python benchmarks/bench_throughput.py --concurrent 4  # k processes training the first shape at once

GPU shapes (seq 1024, vocab 32k, bf16, fused AdamW): width 256 x 4 layers, 512 x 4 and 1024 x 8. CPU
shapes are the small probes the tests use. Compile time is measured apart (the warm-up steps) and kept
out of tokens/s and MFU. Concurrent processes each train 1/k of the single process's batch (so k of them
fit where one did), wait at a barrier after their warm-up, and time the same steps: the aggregate is all
their tokens over the window from the first start to the last end, not a sum of unaligned rates.
Results go to benchmarks/results/throughput_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_SHAPES = [(256, 4, 1024, 32000, 64), (512, 4, 1024, 32000, 32), (1024, 8, 1024, 32000, 16)]
CPU_SHAPES = [(64, 2, 128, 257, 16), (128, 2, 128, 257, 16), (256, 2, 128, 257, 16), (512, 4, 128, 257, 8)]


def measure(width: int, depth: int, seq: int, vocab: int, batch: int, steps: int, compile_: bool,
            device: str, barrier=None) -> dict:
    import torch
    import torch.nn.functional as F

    from probes.config import ModelConfig
    from probes.device import autocast, device_name, synchronize
    from probes.model import build_model
    from probes.mup import make_optimizer
    from probes.train import device_peak_flops

    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1 if barrier is not None else torch.get_num_threads())
    cfg = ModelConfig(width=width, depth=depth, d_head=64 if width >= 256 else 16, base_width=width,
                      base_depth=depth, vocab_size=vocab, seq_len=seq)
    model = build_model(cfg, dev)
    opt = make_optimizer(model, 1e-3)
    if compile_:
        torch._dynamo.reset()
    fwd = torch.compile(model) if compile_ else model
    x = torch.randint(0, vocab, (batch, seq + 1), device=dev)

    def step():
        with autocast(dev):
            logits = fwd(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3 if not compile_ else 10):  # warm-up, and the compile when compiling
        step()
    synchronize(dev)
    warmup_s = time.perf_counter() - t0
    if barrier is not None:
        barrier.wait()
    start = time.time()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(dev)
    dt = time.perf_counter() - t0
    tps = steps * batch * seq / dt
    peak = device_peak_flops(dev)
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"width": width, "depth": depth, "seq_len": seq, "vocab": vocab, "batch": batch, "compile": compile_,
            "params_total": cfg.params_total, "flops_per_token": cfg.flops_per_token, "tokens_per_s": tps,
            "mfu": tps * cfg.flops_per_token / peak if peak else None, "warmup_s": warmup_s,
            "tokens": steps * batch * seq, "start": start, "end": start + dt, "max_memory_gib": mem,
            "device": device_name(dev)}


def _worker(args):
    return measure(*args)


def concurrent(shape, k: int, steps: int, device: str) -> dict:
    """k processes training ``shape`` at 1/k of its batch each, timed over one aligned window."""
    w, d, s, v, b = shape
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(k)
        with ctx.Pool(k) as pool:
            many = pool.map(_worker, [(w, d, s, v, max(1, b // k), steps, False, device, barrier)] * k)
    window = max(r["end"] for r in many) - min(r["start"] for r in many)
    return {"processes": k, "batch_per_process": max(1, b // k), "window_s": window,
            "aggregate_tokens_per_s": sum(r["tokens"] for r in many) / window,
            "max_memory_gib_per_process": max((r["max_memory_gib"] or 0.0) for r in many) or None}


def run(shapes, steps: int, device: str, compile_: bool, concurrency=(), out: Path | None = None) -> dict:
    results = []
    for w, d, s, v, b in shapes:
        for comp in ([False, True] if compile_ else [False]):
            r = measure(w, d, s, v, b, steps, comp, device)
            results.append(r)
            print(json.dumps({k: r[k] for k in ("width", "depth", "compile", "tokens_per_s", "mfu", "warmup_s")}))
    res = {"device": results[0]["device"], "results": results, "concurrent": []}
    single = results[0]["tokens_per_s"]
    for k in concurrency:
        c = concurrent(shapes[0], k, steps, device)
        c["speedup_vs_one_process"] = c["aggregate_tokens_per_s"] / single
        res["concurrent"].append(c)
        print(json.dumps(c))
    if out is not None:
        out.write_text(json.dumps(res, indent=2))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--concurrent", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0)
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    shapes, steps = (GPU_SHAPES, args.steps or 30) if cuda else (CPU_SHAPES, args.steps or 10)
    run(shapes, steps, "cuda" if cuda else "cpu", args.compile and cuda, (args.concurrent,) if args.concurrent else (),
        ROOT / "benchmarks" / "results" / f"throughput_{'gpu' if cuda else 'cpu'}.json")


if __name__ == "__main__":
    main()
