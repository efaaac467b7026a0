"""Benchmark: probe training throughput (tokens/s) and MFU per width, on CPU or GPU.

    python benchmarks/bench_throughput.py                 # the machine's device, default shapes
    python benchmarks/bench_throughput.py --compile       # also torch.compile (GPU)
    python benchmarks/bench_throughput.py --concurrent 4  # k processes training width-256 probes at once

GPU shapes follow the reference in issue 4 (seq 1024, vocab 32k, bf16, fused AdamW): width 256 x 4
layers and 1024 x 8 layers, plus 512 x 4. CPU shapes are the small probes the tests use.
Results go to benchmarks/results/throughput_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(width: int, depth: int, seq: int, vocab: int, batch: int, steps: int, compile_: bool,
            device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from probes.config import ModelConfig
    from probes.model import build_model
    from probes.mup import make_optimizer
    from probes.train import device_peak_flops

    dev = torch.device(device)
    cfg = ModelConfig(width=width, depth=depth, d_head=64 if width >= 256 else 16, base_width=width,
                      base_depth=depth, vocab_size=vocab, seq_len=seq)
    model = build_model(cfg, dev)
    opt = make_optimizer(model, 1e-3)
    fwd = torch.compile(model) if compile_ else model
    x = torch.randint(0, vocab, (batch, seq + 1), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = fwd(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if not compile_ else 10):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = steps * batch * seq / dt
    peak = device_peak_flops(dev)
    return {"width": width, "depth": depth, "seq_len": seq, "vocab": vocab, "batch": batch, "compile": compile_,
            "params_total": cfg.params_total, "flops_per_token": cfg.flops_per_token, "tokens_per_s": tps,
            "mfu": tps * cfg.flops_per_token / peak if peak else None,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}


def _worker(args):
    return measure(*args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--concurrent", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0)
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        shapes = [(256, 4, 1024, 32000, 64), (512, 4, 1024, 32000, 32), (1024, 8, 1024, 32000, 16)]
        steps = args.steps or 30
    else:
        shapes = [(64, 2, 128, 257, 16), (128, 2, 128, 257, 16), (256, 2, 128, 257, 16), (512, 4, 128, 257, 8)]
        steps = args.steps or 10
    results = []
    for w, d, s, v, b in shapes:
        for comp in ([False, True] if (args.compile and cuda) else [False]):
            r = measure(w, d, s, v, b, steps, comp, device)
            results.append(r)
            print(json.dumps(r))
    out = {"device": results[0]["device"], "results": results}
    if args.concurrent:
        w, d, s, v, b = shapes[0]
        ctx = mp.get_context("spawn")
        t0 = time.perf_counter()
        with ctx.Pool(args.concurrent) as pool:
            many = pool.map(_worker, [(w, d, s, v, b, steps, False, device)] * args.concurrent)
        out["concurrent"] = {"processes": args.concurrent, "aggregate_tokens_per_s": sum(r["tokens_per_s"] for r in many),
                             "single_tokens_per_s": results[0]["tokens_per_s"], "wall_s": time.perf_counter() - t0}
        out["concurrent"]["speedup"] = out["concurrent"]["aggregate_tokens_per_s"] / results[0]["tokens_per_s"]
        print(json.dumps(out["concurrent"]))
    name = "gpu" if cuda else "cpu"
    (ROOT / "benchmarks" / "results" / f"throughput_{name}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
