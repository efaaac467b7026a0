"""Where a probe runs: device resolution, the accelerator path (bf16 autocast, fused AdamW, compile,
synchronisation) and the dense bf16 peak that MFU is measured against.

The accelerator path is taken on CUDA devices and, for testing, on the CPU when the environment sets
``PROBES_EMULATE_GPU=1``: bf16 autocast on the CPU, fused AdamW, ``torch.compile`` and a device-kind
tag in every row then run as they would on a GPU, so that what a GPU user runs has run before (CI has
no GPU).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys

import torch

from fits.errors import InputError

__all__ = ["resolve_device", "gpu_path", "autocast", "synchronize", "device_kind", "device_name", "peak_flops",
           "PEAK_TFLOPS", "EMULATE_ENV"]

EMULATE_ENV = "PROBES_EMULATE_GPU"

#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) keyed by the exact name CUDA reports
#: (``torch.cuda.get_device_name``), from the vendors' datasheets. A MIG slice ``... MIG <g>g.<mem>``
#: gets g/7 of its GPU's peak. Names not listed get no MFU and a warning; ``--peak-tflops`` sets it.
PEAK_TFLOPS = {
    "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0, "NVIDIA A800-SXM4-80GB": 312.0, "NVIDIA A800 80GB PCIe": 312.0,
    "NVIDIA A10": 125.0, "NVIDIA L4": 121.0, "NVIDIA L40": 181.0, "NVIDIA L40S": 362.0,
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
    "NVIDIA H800": 989.0, "NVIDIA H800 PCIe": 756.0, "NVIDIA H200": 989.0, "NVIDIA H200 NVL": 835.0,
    "NVIDIA GH200 480GB": 989.0, "NVIDIA B200": 2250.0,
    "AMD Instinct MI250X": 383.0, "AMD Instinct MI300X": 1307.0,
}
# GPUs without bf16 tensor cores: autocast to bf16 runs emulated there (slow), and MFU in bf16 means nothing
NO_BF16 = ("Tesla V100", "Tesla T4", "Tesla P100", "Quadro RTX")
_MIG = re.compile(r"\s+MIG\s+(\d+)g\.\S+$")
_warned: set = set()


def gpu_path(device: torch.device) -> bool:
    """Whether a run takes the accelerator path: on CUDA, or on the CPU under ``PROBES_EMULATE_GPU=1``."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get(EMULATE_ENV) == "1")


def resolve_device(name: str, gpus_expected: bool = False) -> torch.device:
    """The torch device of ``train.device``. ``auto`` is CUDA when there is one, else the CPU; with
    ``gpus_expected`` (the executor gave the run GPUs) ``auto`` without a visible GPU is an error,
    not a silent CPU run. ``mps`` is refused: the probes' accelerator path is CUDA's."""
    if name.startswith("mps"):
        raise InputError("train.device: 'mps' is not supported (bf16 autocast, fused AdamW and the device checks "
                         "are CUDA's); use cpu or cuda")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if gpus_expected:
            raise InputError("train.device: 'auto' was given GPUs by the executor, but none is visible "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}); "
                             "refusing to fall back to the CPU silently: set train.device = 'cpu' to train there")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"train.device: {name!r} asked for but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on the accelerator path (CUDA, or the CPU when emulating), else nothing."""
    if not gpu_path(device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (that device, not device 0); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (emulating the GPU path)" if gpu_path(device) else "cpu"


def device_kind(device: torch.device) -> str:
    """What changes a run's numbers: the device type and the compute dtype ('cpu-fp32', 'cuda-bf16')."""
    return f"{device.type}-{'bf16' if gpu_path(device) else 'fp32'}"


def peak_flops(name: str, override_tflops: float | None = None) -> float | None:
    """Dense bf16 peak FLOP/s of a device by its exact name (:data:`PEAK_TFLOPS`; a MIG slice gets its
    share), or ``override_tflops``; None (and one warning per name) when it is unknown.

    >>> peak_flops("NVIDIA H100 NVL") / 1e12
    835.0
    >>> round(peak_flops("NVIDIA A100-SXM4-40GB MIG 3g.20gb") / 1e12, 1)
    133.7
    >>> peak_flops("NVIDIA RTX A1000 Laptop GPU") is None
    True
    """
    if override_tflops:
        return float(override_tflops) * 1e12
    if name.startswith("cpu"):
        return None
    share = 1.0
    m = _MIG.search(name)
    if m:
        share, name = int(m.group(1)) / 7.0, name[: m.start()]
    if name in PEAK_TFLOPS:
        return PEAK_TFLOPS[name] * 1e12 * share
    if name not in _warned:
        _warned.add(name)
        why = ("it has no bf16 tensor cores (bf16 runs emulated)" if name.startswith(NO_BF16)
               else "its dense bf16 peak is not in probes.device.PEAK_TFLOPS")
        print(f"warning: no MFU for {name!r}: {why}; give train.peak_tflops (probe run --peak-tflops)",
              file=sys.stderr)
    return None
