"""Repeated-data and double-descent risk.

* :func:`double_descent_risk`: epochs, effective data (Muennighoff et al. 2023), a capacity ratio
  (Morris et al. 2025: ~3.6 bits per parameter against the information in the unique data), a
  risk level with its reasons, and a recommendation.
* :func:`ridgeless_risk`, :func:`ridge_risk`, :func:`theory_curve`: the closed-form risk of
  ridgeless and optimally ridged least squares against gamma = p/n (Hastie et al. 2019; Nakkiran
  et al. 2020), the textbook picture of why the interpolation peak happens and why tuned
  regularisation removes it.
* :func:`detect_double_descent`, :func:`epoch_bumps`: find model-wise and epoch-wise bumps in
  probe sweeps, and :func:`capacity_from_bump` turns where a bump sits into bits per parameter.

Risk levels are calibrated on published fits rather than guessed: the value kept by repeated
data is D'/D under Muennighoff et al.'s fitted R_D* = 15.39 (4 epochs keep 93%, i.e. "low";
below 50%, about 27-28 epochs and beyond, every further token is worth little: "high"); the
capacity ratio's threshold 1 is where the data's information equals the model's storage
(Morris et al. 2025), the interpolation threshold where double descent peaks (Nakkiran 2019).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .forms import effective_data

__all__ = ["RiskAssessment", "double_descent_risk", "ridgeless_risk", "ridge_risk", "theory_curve",
           "plot_theory", "detect_double_descent", "epoch_bumps", "capacity_from_bump",
           "BITS_PER_PARAM", "R_D_STAR", "R_N_STAR"]

BITS_PER_PARAM = 3.6       # Morris et al. 2025, arXiv:2505.24832
R_D_STAR = 15.387756       # Muennighoff et al. 2023, arXiv:2305.16264
R_N_STAR = 5.309743
KEPT_LOW, KEPT_HIGH = 0.9, 0.5   # value kept D'/D: >= 0.9 low, < 0.5 high
DEFAULT_BITS_PER_TOKEN = 3.0     # ~2.1 nats/token: a typical LM loss on web text


@dataclass(frozen=True)
class RiskAssessment:
    """Repeated-data and double-descent risk of a (N, D, U) plan."""

    params: float
    tokens: float
    unique_tokens: float
    epochs: float
    effective_tokens: float
    value_kept: float
    capacity_bits: float
    data_bits: float
    capacity_ratio: float
    threshold_distance: float  # |log10 capacity ratio|: decades from the interpolation threshold
    level: str
    reasons: tuple = ()
    recommendation: str = ""
    sources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def to_frame(self):
        import pandas as pd

        d = self.to_dict()
        d["reasons"] = " | ".join(d["reasons"])
        d.pop("sources")
        return pd.DataFrame([d])

    def report(self) -> str:
        lines = [f"Repeated-data / double-descent risk: {self.level.upper()}",
                 f"  N {self.params:.3g}, D {self.tokens:.3g}, unique U {self.unique_tokens:.3g}: "
                 f"{self.epochs:.3g} epochs, effective data {self.effective_tokens:.3g} ({self.value_kept:.0%} of D)",
                 f"  capacity {self.capacity_bits:.3g} bits vs data {self.data_bits:.3g} bits: ratio "
                 f"{self.capacity_ratio:.3g} ({self.threshold_distance:.2f} decades from the interpolation threshold)"]
        lines += [f"  - {r}" for r in self.reasons]
        lines.append(f"  recommendation: {self.recommendation}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


_ORDER = ("none", "low", "medium", "high")


def double_descent_risk(params: float, tokens: float, unique_tokens: float, bits_per_token: float | None = None,
                        bits_per_param: float = BITS_PER_PARAM, R_D_star: float = R_D_STAR,
                        label_noise: float = 0.0) -> RiskAssessment:
    """Assess the risk of training N parameters on D tokens drawn from U unique tokens.

    Parameters
    ----------
    params, tokens, unique_tokens : N, D and U.
    bits_per_token : information per unique token (default 3.0 bits, about a 2.1 nats/token loss);
        give the loss of a similar model in bits per token for a better estimate.
    bits_per_param : storage capacity (Morris et al. 2025: ~3.6).
    label_noise : known fraction of noisy targets; noise sharpens the interpolation peak.

    Examples
    --------
    >>> double_descent_risk(1e9, 2e10, 2e10).level
    'none'
    >>> double_descent_risk(146e6, 59 * 100e6, 100e6).level
    'high'
    """
    for name, v in (("params", params), ("tokens", tokens), ("unique_tokens", unique_tokens)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
            raise InputError(f"{name}: must be a finite positive number; got {v!r}")
    bpt = DEFAULT_BITS_PER_TOKEN if bits_per_token is None else float(bits_per_token)
    U = min(float(unique_tokens), float(tokens))
    epochs = tokens / U
    d_eff = float(effective_data(tokens, U, R_D_star))
    kept = d_eff / tokens
    cap, info = bits_per_param * params, bpt * U
    ratio = cap / info
    dist = abs(math.log10(ratio))
    reasons, level = [], "none"

    def raise_to(lvl):
        nonlocal level
        if _ORDER.index(lvl) > _ORDER.index(level):
            level = lvl

    if epochs > 1.0 + 1e-9:
        if kept >= KEPT_LOW:
            raise_to("low")
            reasons.append(f"{epochs:.3g} epochs keep {kept:.0%} of the value of fresh data (Muennighoff et al. 2023: "
                           "up to ~4 epochs cost little)")
        elif kept >= KEPT_HIGH:
            raise_to("medium")
            reasons.append(f"{epochs:.3g} epochs keep only {kept:.0%} of the value of fresh data")
        else:
            raise_to("high")
            reasons.append(f"{epochs:.3g} epochs keep only {kept:.0%} of the value of fresh data: most repeated "
                           f"tokens are wasted (R_D* = {R_D_star:.3g})")
    if ratio >= 0.5 and epochs > 1.0 + 1e-9:
        # the model can store a large share of the unique data and sees it repeatedly: memorisation,
        # and near ratio 1 the interpolation threshold where double descent peaks
        near = dist < math.log10(2.0)
        raise_to("high" if (near or ratio > 1) and epochs > 4 else "medium")
        reasons.append(f"capacity ratio {ratio:.3g}: the model can hold "
                       f"{'most of ' if ratio < 1 else 'all of '}the unique data "
                       f"({cap:.3g} vs {info:.3g} bits){', at the interpolation threshold' if near else ''}")
    if label_noise > 0 and level in ("medium", "high"):
        reasons.append(f"label noise {label_noise:.0%} sharpens the double-descent peak (Nakkiran et al. 2019)")
    if level == "none":
        reasons.append("single pass over ample unique data")
    rec = {
        "none": "no action needed",
        "low": "acceptable; prefer more unique data if it is cheap",
        "medium": ("reduce epochs (fewer tokens or a smaller model at this budget), add unique data, or regularise "
                   "(weight decay, dropout) and watch validation loss for an epoch-wise bump"),
        "high": (f"do not plan on repeated data: add unique data (at least {tokens / 4:.3g} unique tokens keeps "
                 "repetition under 4 epochs), or train a smaller model on fewer tokens; if neither is possible, "
                 "regularise strongly and stop early on validation loss"),
    }[level]
    return RiskAssessment(
        params=float(params), tokens=float(tokens), unique_tokens=U, epochs=epochs, effective_tokens=d_eff,
        value_kept=kept, capacity_bits=cap, data_bits=info, capacity_ratio=ratio, threshold_distance=dist,
        level=level, reasons=tuple(reasons), recommendation=rec,
        sources={"effective_data": "Muennighoff et al. 2023, arXiv:2305.16264, eq. 5 (R_D* fitted there)",
                 "capacity": f"Morris et al. 2025, arXiv:2505.24832 ({bits_per_param} bits/parameter)",
                 "threshold": "Nakkiran et al. 2019, arXiv:1912.02292 (peak at the interpolation threshold)"},
    )


# --- theory panel -------------------------------------------------------------------------------

def ridgeless_risk(gamma, snr: float = 5.0, sigma2: float = 1.0):
    """Excess risk of min-norm least squares, isotropic features, gamma = p/n (Hastie et al. 2019,
    Thm. 1-3): sigma^2 gamma/(1-gamma) below 1; r^2 (1 - 1/gamma) + sigma^2/(gamma-1) above.

    >>> float(ridgeless_risk(0.5, snr=5.0))
    1.0
    """
    g = np.asarray(gamma, dtype=float)
    r2 = snr * sigma2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g < 1, sigma2 * g / (1 - g), r2 * (1 - 1 / g) + sigma2 / (g - 1))


def _mp_integrals(gamma: float, lam: float) -> tuple[float, float]:
    """Integrals over the Marchenko-Pastur law (ratio gamma): (int 1/(s+l)^2, int s/(s+l)^2)."""
    from scipy.integrate import quad

    a, b = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    rho = lambda s: math.sqrt(max((b - s) * (s - a), 0.0)) / (2 * math.pi * gamma * s)
    i1 = quad(lambda s: rho(s) / (s + lam) ** 2, a, b, limit=200)[0]
    i2 = quad(lambda s: rho(s) * s / (s + lam) ** 2, a, b, limit=200)[0]
    return i1, i2


def ridge_risk(gamma: float, lam: float | None = None, snr: float = 5.0, sigma2: float = 1.0) -> float:
    """Excess risk of ridge regression with penalty ``lam`` (default: the optimal lam* = gamma/SNR,
    Dobriban & Wager 2018; Nakkiran et al. 2020), from the Marchenko-Pastur law: bias
    r^2 lam^2 int 1/(s+lam)^2 (plus r^2 (1-1/gamma) from the null space) and variance
    sigma^2 gamma int s/(s+lam)^2."""
    lam = gamma / snr if lam is None else lam
    if lam <= 0:
        raise InputError(f"lam: must be positive (use ridgeless_risk for lam = 0); got {lam!r}")
    r2 = snr * sigma2
    i1, i2 = _mp_integrals(gamma, lam)
    null = max(0.0, 1 - 1 / gamma)
    return r2 * (lam ** 2 * i1 + null) + sigma2 * gamma * i2


def theory_curve(gammas=None, snrs=(1.0, 5.0, 20.0), sigma2: float = 1.0):
    """Tidy DataFrame of ridgeless and optimally ridged risk against gamma for several SNRs."""
    import pandas as pd

    gammas = np.concatenate([np.linspace(0.05, 0.95, 19), np.linspace(1.05, 5, 25)]) if gammas is None else gammas
    rows = []
    for snr in snrs:
        for g in gammas:
            rows.append({"gamma": g, "snr": snr, "ridgeless": float(ridgeless_risk(g, snr, sigma2)),
                         "optimal_ridge": ridge_risk(g, None, snr, sigma2)})
    return pd.DataFrame(rows)


def plot_theory(ax=None, curve=None):
    """Risk against gamma = p/n: the ridgeless peak at 1 and the optimally ridged curve without it."""
    from ._plot import get_axes

    ax = get_axes(ax)
    curve = theory_curve() if curve is None else curve
    for k, (snr, g) in enumerate(curve.groupby("snr")):
        ax.plot(g["gamma"], g["ridgeless"], color=f"C{k}", label=f"ridgeless, SNR {snr:g}")
        ax.plot(g["gamma"], g["optimal_ridge"], color=f"C{k}", ls="--", label=f"optimal ridge, SNR {snr:g}")
    ax.axvline(1.0, color="0.5", lw=1, ls=":")
    ax.set_ylim(0, max(4.0, float(curve["optimal_ridge"].max()) * 1.5))
    ax.set_xlabel("gamma = parameters / samples")
    ax.set_ylabel("excess test risk")
    ax.set_title("Double descent (Hastie et al. 2019) and its removal by tuned ridge")
    ax.legend(fontsize="x-small")
    return ax


# --- detection in probe sweeps -----------------------------------------------------------------

def detect_double_descent(df, n: str = "params", loss: str = "val_loss", train_loss: str = "train_loss",
                          seed: str = "seed", min_prominence_sigmas: float = 2.0):
    """Model-wise bumps: local maxima of validation loss in log N whose prominence exceeds
    ``min_prominence_sigmas`` x the seed noise, while training loss falls.

    ``df`` holds one row per (N, seed) at a fixed unique dataset (e.g. probes' final rows).
    Returns a DataFrame with params_peak, prominence, noise and train-loss trend (empty: no bump).
    """
    import pandas as pd

    from ._data import read_table

    t = read_table(df)
    for col in (n, loss, train_loss):
        if col not in t.columns:
            raise InputError(f"detect_double_descent: column {col!r} not found; columns are {list(t.columns)}")
    g = t.groupby(n)
    mean = g[loss].mean().sort_index()
    train = g[train_loss].mean().reindex(mean.index)
    if seed in t.columns and t[seed].nunique() > 1:
        noise = float(np.sqrt(np.nanmean(g[loss].var(ddof=1))))
    else:
        noise = float(np.median(np.abs(np.diff(mean.to_numpy())))) / math.sqrt(2)
    v = mean.to_numpy()
    rows = []
    for i in range(1, len(v) - 1):
        if v[i] > v[i - 1] and v[i] > v[i + 1]:
            left, right = v[:i].min(), v[i + 1:].min()
            prom = v[i] - max(left, right)
            if prom > min_prominence_sigmas * noise:
                rows.append({"params_peak": float(mean.index[i]), "val_loss_peak": float(v[i]),
                             "prominence": float(prom), "noise": noise,
                             "train_loss_falling": bool(train.iloc[i + 1] < train.iloc[i - 1])})
    return pd.DataFrame(rows, columns=["params_peak", "val_loss_peak", "prominence", "noise", "train_loss_falling"])


def epoch_bumps(steps, val_loss, min_prominence_sigmas: float = 2.0) -> list[dict]:
    """Epoch-wise bumps in one run's validation curve: local maxima more prominent than
    ``min_prominence_sigmas`` x the curve's eval-to-eval noise (robust sd of second differences)."""
    s, v = np.asarray(steps, float), np.asarray(val_loss, float)
    if len(v) < 5:
        return []
    d2 = np.diff(v, 2)
    noise = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / math.sqrt(6)
    out = []
    for i in range(1, len(v) - 1):
        if v[i] > v[i - 1] and v[i] > v[i + 1]:
            prom = v[i] - max(v[:i].min(), v[i + 1:].min())
            if prom > min_prominence_sigmas * max(noise, 1e-12):
                out.append({"step": s[i], "val_loss": v[i], "prominence": prom, "noise": noise})
    return out


def capacity_from_bump(params_peak: float, unique_tokens: float, bits_per_token: float) -> float:
    """Bits per parameter implied by a model-wise peak at ``params_peak``: at the interpolation
    threshold the model's capacity equals the data's information, so bits/param = U bits/token / N."""
    return unique_tokens * bits_per_token / params_peak
