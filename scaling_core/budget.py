"""Budgets in FLOPs, accelerator-hours or money, and the conversions between them."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

from .hardware import get_accelerator

__all__ = ["Budget", "UNITS"]

UNITS = ("flops", "gpu-hours", "usd")


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a positive number; got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name}: must be a finite positive number; got {value!r}")
    return v


@dataclass(frozen=True)
class Budget:
    """A training budget: FLOPs, and the hardware assumptions that turn it into hours and money.

    >>> b = Budget.from_gpu_hours(2000, gpu="h100", mfu=0.4)
    >>> f"{b.flops:.3e}"
    '2.849e+21'
    >>> round(b.gpu_hours, 6)
    2000.0
    """

    flops: float
    gpu: str | None = None
    peak_tflops: float | None = None
    mfu: float = 0.4
    price_per_hour: float | None = None

    def __post_init__(self):
        _positive("budget", self.flops)
        if not 0 < self.mfu <= 1:
            raise InputError(f"mfu: must be in (0, 1]; got {self.mfu!r}")
        if self.price_per_hour is not None:
            _positive("price_per_hour", self.price_per_hour)
        if self.peak_tflops is not None:
            _positive("peak_tflops", self.peak_tflops)
        if self.gpu is not None:
            get_accelerator(self.gpu)  # an unknown name fails here, before any work

    @property
    def peak(self) -> float | None:
        """Peak FLOP/s of one device (from --peak-tflops, else the table), or None."""
        if self.peak_tflops is not None:
            return self.peak_tflops * 1e12
        if self.gpu is not None:
            return get_accelerator(self.gpu).peak_tflops * 1e12
        return None

    def hours_for(self, flops: float) -> float | None:
        """Device-hours that ``flops`` take at the stated MFU, or None without a device."""
        peak = self.peak
        return None if peak is None else flops / (peak * self.mfu) / 3600.0

    def cost_for(self, flops: float) -> float | None:
        h = self.hours_for(flops)
        return None if h is None or self.price_per_hour is None else h * self.price_per_hour

    @property
    def gpu_hours(self) -> float | None:
        """Device-hours of the whole budget at the stated MFU, or None without a device."""
        return self.hours_for(self.flops)

    @property
    def cost_usd(self) -> float | None:
        return self.cost_for(self.flops)

    @classmethod
    def from_gpu_hours(cls, hours, gpu=None, mfu=0.4, peak_tflops=None, price_per_hour=None) -> "Budget":
        hours = _positive("budget", hours)
        probe = cls(1.0, gpu=gpu, peak_tflops=peak_tflops, mfu=mfu, price_per_hour=price_per_hour)
        if probe.peak is None:
            raise InputError("gpu: a budget in gpu-hours needs --gpu or --peak-tflops")
        return cls(hours * 3600.0 * probe.peak * mfu, gpu, peak_tflops, mfu, price_per_hour)

    @classmethod
    def from_usd(cls, usd, price_per_hour, gpu=None, mfu=0.4, peak_tflops=None) -> "Budget":
        usd = _positive("budget", usd)
        if price_per_hour is None:
            raise InputError("price_per_hour: a budget in usd needs --price-per-hour")
        price = _positive("price_per_hour", price_per_hour)
        return cls.from_gpu_hours(usd / price, gpu, mfu, peak_tflops, price)

    @classmethod
    def from_unit(cls, amount, unit: str = "flops", **hardware) -> "Budget":
        """Build a budget from an amount in ``unit`` (one of UNITS)."""
        if unit == "flops":
            return cls(_positive("budget", amount), **hardware)
        if unit == "gpu-hours":
            return cls.from_gpu_hours(amount, **hardware)
        if unit == "usd":
            return cls.from_usd(amount, **hardware)
        raise InputError(f"unit: must be one of {list(UNITS)}; got {unit!r}")
