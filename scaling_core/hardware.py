"""Accelerator peaks: dense bf16 tensor throughput, from each vendor's datasheet.

Peaks are dense (no 2:4 sparsity) bf16 with fp32 accumulation, per device. Measured
throughput is lower: MFU (model FLOPs utilisation) converts peak to what a run achieves.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

__all__ = ["Accelerator", "ACCELERATORS", "get_accelerator"]


@dataclass(frozen=True)
class Accelerator:
    name: str
    peak_tflops: float  # dense bf16, TFLOP/s
    source: str


ACCELERATORS = {a.name: a for a in (
    Accelerator("a100", 312.0, "NVIDIA A100 Tensor Core GPU datasheet (SXM, BF16 dense)"),
    Accelerator("h100", 989.4, "NVIDIA H100 Tensor Core GPU datasheet (SXM, BF16 dense)"),
    Accelerator("h100-pcie", 756.0, "NVIDIA H100 Tensor Core GPU datasheet (PCIe, BF16 dense)"),
    Accelerator("h200", 989.4, "NVIDIA H200 Tensor Core GPU datasheet (SXM, BF16 dense)"),
    Accelerator("b200", 2250.0, "NVIDIA HGX B200 datasheet (per GPU, BF16 dense = half the sparse 4.5 PF)"),
    Accelerator("l40s", 362.0, "NVIDIA L40S datasheet (BF16 dense)"),
    Accelerator("mi300x", 1307.4, "AMD Instinct MI300X datasheet (BF16 dense)"),
    Accelerator("mi325x", 1307.4, "AMD Instinct MI325X datasheet (BF16 dense)"),
    Accelerator("tpu-v5e", 197.0, "Google Cloud TPU v5e documentation (BF16 per chip)"),
    Accelerator("tpu-v5p", 459.0, "Google Cloud TPU v5p documentation (BF16 per chip)"),
    Accelerator("tpu-v6e", 918.0, "Google Cloud TPU v6e (Trillium) documentation (BF16 per chip)"),
)}


def get_accelerator(name: str) -> Accelerator:
    """Look up an accelerator by name (case-insensitive).

    >>> get_accelerator("H100").peak_tflops
    989.4
    """
    key = str(name).strip().lower()
    if key not in ACCELERATORS:
        raise InputError(f"gpu: must be one of {sorted(ACCELERATORS)}; got {name!r} "
                         "(or give --peak-tflops for another device)")
    return ACCELERATORS[key]
