"""muP transfer check: does the loss-minimising learning rate stay put as width grows?

Per width, the optimum comes from a parabola in log lr through the best run and its
neighbours (the best run itself when the curve is not convex there); the drift exponent is the
slope of log lr_opt against log width, with a bootstrap interval over runs. Verdict: transfers
when the fitted drift moves the optimum by less than a factor ``tolerance`` (2, one grid step)
over the width range. Single widths whose optimum strays beyond the tolerance are listed in the
evidence: with one seed and a flat optimum they are usually noise, and the interval says how much.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import read_table
from .errors import InputError

__all__ = ["TransferResult", "check_transfer", "parabola_optimum"]


def parabola_optimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """(x*, y*, method) of a minimum: a parabola through the lowest point and its neighbours in x
    (means over repeats), or the lowest point when the parabola is not convex or its vertex lies
    outside the neighbours' span.

    >>> x = np.log([1e-3, 2e-3, 4e-3, 8e-3]); xs, ys, m = parabola_optimum(x, (x - np.log(3e-3))**2)
    >>> f"{np.exp(xs):.2g} {m}"
    '0.003 parabola'
    """
    xs = np.unique(x)
    means = np.array([np.mean(y[x == v]) for v in xs])
    i = int(np.argmin(means))
    lo, hi = max(0, i - 1), min(len(xs), i + 2)
    if hi - lo >= 3:
        c2, c1, c0 = np.polyfit(xs[lo:hi], means[lo:hi], 2)
        if c2 > 0:
            v = -c1 / (2 * c2)
            if xs[lo] <= v <= xs[hi - 1]:
                return float(v), float(c0 - c1 * c1 / (4 * c2)), "parabola"
    return float(xs[i]), float(means[i]), "best-run"


@dataclass(frozen=True, eq=False)
class TransferResult:
    """Per-width optima, the drift exponent of lr_opt against width, and a verdict."""

    optima: pd.DataFrame
    drift: float
    drift_interval: tuple
    verdict: str
    evidence: str
    runs: pd.DataFrame

    def report(self) -> str:
        return (f"muP transfer check: {self.verdict}\n  {self.evidence}\n"
                f"  drift exponent d log lr_opt / d log width = {self.drift:+.3f} "
                f"[{self.drift_interval[0]:+.3f}, {self.drift_interval[1]:+.3f}]\n\n"
                + self.optima.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

    def __str__(self) -> str:
        return self.report()

    def _repr_html_(self) -> str:
        return f"<b>muP transfer: {self.verdict}</b><p>{self.evidence}</p>" + self.optima.to_html(index=False)

    def plot(self, ax=None):
        """Loss against learning rate, one curve per width (mean over repeats, their range shaded),
        optima marked."""
        from ._plot import get_axes

        ax = get_axes(ax)
        for k, (w, g) in enumerate(self.runs.groupby("width")):
            by = g[np.isfinite(g["loss"])].groupby("lr")["loss"]
            m = by.mean()
            ax.plot(m.index, m.values, "o-", color=f"C{k}", ms=3, label=f"width {w:g}")
            if (by.size() > 1).any():  # repeats (seeds): their range as a band
                ax.fill_between(m.index, by.min().values, by.max().values, color=f"C{k}", alpha=0.2, lw=0)
            o = self.optima[self.optima["width"] == w]
            ax.axvline(float(o["lr_opt"].iloc[0]), color=f"C{k}", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend(fontsize="small")
        return ax


def check_transfer(df, width: str = "width", lr: str = "lr", loss: str = "val_loss",
                   tolerance: float = 2.0, bootstrap: int = 200, level: float = 0.9,
                   seed: int = 0) -> TransferResult:
    """Check learning-rate transfer across widths from a sweep of (width, lr, loss) runs.

    Rows with a true ``diverged`` column or a non-finite loss count as failed runs (loss +inf
    is not fitted, but they still mark the lr as too high).

    >>> import numpy as np, pandas as pd
    >>> rows = [(w, lr, (np.log(lr) - np.log(4e-3)) ** 2 + 3) for w in (64, 128, 256)
    ...         for lr in 2.0 ** -np.arange(5, 12)]
    >>> check_transfer(pd.DataFrame(rows, columns=["width", "lr", "val_loss"])).verdict
    'transfers'
    """
    t = read_table(df)
    for col in (width, lr, loss):
        if col not in t.columns:
            raise InputError(f"check_transfer: column {col!r} not found; columns are {list(t.columns)}")
    runs = pd.DataFrame({"width": pd.to_numeric(t[width], errors="coerce"),
                         "lr": pd.to_numeric(t[lr], errors="coerce"),
                         "loss": pd.to_numeric(t[loss], errors="coerce")})
    if "diverged" in t.columns:
        runs.loc[t["diverged"].fillna(False).astype(bool).to_numpy(), "loss"] = np.inf
    runs = runs[np.isfinite(runs["width"]) & (runs["width"] > 0) & (runs["lr"] > 0)]
    ok = runs[np.isfinite(runs["loss"])]
    widths = np.sort(ok["width"].unique())
    if len(widths) < 2:
        raise InputError(f"check_transfer: need runs at two or more widths; got {list(widths)}")

    def optima(frame):
        out = []
        for w in widths:
            g = frame[frame["width"] == w]
            if g["lr"].nunique() < 1:
                continue
            x, m, method = parabola_optimum(np.log(g["lr"].to_numpy()), g["loss"].to_numpy())
            out.append({"width": w, "lr_opt": float(np.exp(x)), "loss_opt": m, "method": method,
                        "n_lrs": int(g["lr"].nunique())})
        return pd.DataFrame(out)

    opt = optima(ok)
    lw, ll = np.log(opt["width"].to_numpy()), np.log(opt["lr_opt"].to_numpy())
    drift = float(np.polyfit(lw, ll, 1)[0])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        parts = [g.iloc[rng.integers(0, len(g), len(g))] for _, g in ok.groupby("width")]
        o = optima(pd.concat(parts))
        if len(o) >= 2:
            boots.append(np.polyfit(np.log(o["width"]), np.log(o["lr_opt"]), 1)[0])
    q = ((1 - level) / 2, (1 + level) / 2)
    interval = tuple(float(v) for v in np.quantile(boots, q)) if boots else (float("nan"), float("nan"))
    base = opt["lr_opt"].iloc[0]
    ratio = opt["lr_opt"] / base
    opt["ratio_to_base"] = ratio
    within = bool(np.all((ratio <= tolerance * 1.0001) & (ratio >= 1 / tolerance / 1.0001)))
    span = np.log(widths[-1] / widths[0])
    allowed = np.log(tolerance) / span  # the drift that moves lr_opt by `tolerance` over the range
    edge = [w for w, g in ok.groupby("width") if g.loc[g["loss"].idxmin(), "lr"] in (g["lr"].min(), g["lr"].max())]
    verdict = "transfers" if abs(drift) <= allowed else "does not transfer"
    evidence = (f"optimal lr per width {', '.join(f'{w:g}: {v:.3g}' for w, v in zip(opt['width'], opt['lr_opt']))}; "
                f"largest ratio to the base width {max(ratio.max(), 1 / ratio.min()):.2f}x (tolerance {tolerance}x); "
                f"drift {drift:+.3f} per log width (a {tolerance}x move over the range is {allowed:.3f})")
    if not within:
        stray = [f"{w:g} ({r:.2f}x)" for w, r in zip(opt["width"], ratio) if r > tolerance or r < 1 / tolerance]
        evidence += f"; single widths beyond {tolerance}x of the base: {', '.join(stray)}"
    if np.isfinite(interval[0]) and (interval[0] < -allowed or interval[1] > allowed) and verdict == "transfers":
        evidence += "; the drift interval reaches past the tolerance: more seeds would firm this up"
    if edge:
        evidence += f"; the best lr sits on the edge of the grid at widths {edge}: widen the lr grid"
    return TransferResult(optima=opt, drift=drift, drift_interval=interval, verdict=verdict, evidence=evidence,
                          runs=ok)
