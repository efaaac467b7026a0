"""The hyperparameter axes beyond lr and batch: weight decay as an AdamW timescale (the optimal
tau = 1 / (lr wd) as a fraction of the run, against tokens per parameter) and the critical batch (steps
to a target loss against batch size, B_crit as a law of D; the two-batch gradient noise scale).
:func:`fits.fit_hyperparameters` fits them with the lr and batch laws when a sweep has the data."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._data import final_rows, read_table
from scaling_core.io import to_jsonable
from .errors import InputError

__all__ = ["WeightDecayFit", "fit_weight_decay", "critical_batch", "critical_batch_law", "noise_scale_batch"]


@dataclass(frozen=True, eq=False)
class WeightDecayFit:
    """The optimal AdamW timescale tau_epoch = B / (lr wd D), the fraction of the run over which
    AdamW's weights average their updates (Wang & Aitchison 2025), per (N, D) cell and as a law
    tau* = k (D/N)^p in tokens per parameter (Bergsma et al. 2025), or a constant when the sweep
    has one tokens-per-parameter ratio. ``weight_decay`` turns it back into wd for a plan."""

    law: dict
    cells: pd.DataFrame
    per_lr: pd.DataFrame
    runs: pd.DataFrame
    notes: tuple = ()

    def tau(self, N, D):
        tpp = np.asarray(D, float) / np.asarray(N, float)
        return np.exp(self.law["log_k"]) * tpp ** self.law["p"]

    def weight_decay(self, lr, batch, N, D):
        """wd that puts the run at the optimal timescale: wd = B / (lr tau* D)."""
        return np.asarray(batch, float) / (np.asarray(lr, float) * self.tau(N, D) * np.asarray(D, float))

    def report(self) -> str:
        lw = self.law
        head = (f"AdamW timescale: tau* = {np.exp(lw['log_k']):.3g} (D/N)^{lw['p']:.3g} of the run"
                if lw["p"] != 0 else f"AdamW timescale: tau* = {np.exp(lw['log_k']):.3g} of the run (constant)")
        lines = [head, f"  from {lw['n_cells']} cell(s), tokens per parameter {lw['tpp_min']:.3g}..{lw['tpp_max']:.3g}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += ["", self.cells.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def plot(self, ax=None):
        """Final loss against tau_epoch, one line per (horizon, lr); the optimum per cell marked."""
        from ._plot import get_axes

        ax = get_axes(ax)
        r = self.runs[np.isfinite(self.runs["tau"])]
        for k, ((D, lr_), g) in enumerate(r.groupby(["D", "lr"])):
            g = g.sort_values("tau")
            ax.plot(g["tau"], g["loss"], marker="o", ms=3, lw=1, color=f"C{k % 10}", label=f"D={D:.3g}, lr={lr_:.3g}")
        for _, c in self.cells.iterrows():
            ax.axvline(c["tau_opt"], color="k", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="AdamW timescale tau_epoch = B / (lr wd D)", ylabel="final loss",
               title="weight decay as a timescale (dotted: optimum per cell)")
        ax.legend(fontsize="x-small", ncol=2)
        return ax

    def to_dict(self) -> dict:
        return to_jsonable({"law": self.law, "cells": self.cells.to_dict(orient="records"),
                            "per_lr": self.per_lr.to_dict(orient="records"), "notes": list(self.notes)})


def fit_weight_decay(df, n: str = "params", d: str = "tokens", lr: str = "lr", batch: str = "batch_tokens",
                     wd: str = "weight_decay", loss: str = "val_loss") -> WeightDecayFit:
    """Optimal AdamW timescale from an lr x weight-decay sweep (one or more horizons and sizes).

    Per (N, D, lr) the loss is a parabola in log tau_epoch through the best run and its neighbours;
    the cell's optimum is taken at its best lr, or, where wd barely matters there (the optimum on
    the grid's edge), as the median over the lrs whose optimum lies inside the grid. Wang & Aitchison's claim that the optimum is a
    timescale (not a wd) shows as tau* varying little across lrs within a cell (``per_lr``).

    >>> rows = [(1e7, D, lr, 1e6, w, 3 + 0.01 * np.log(1e6 / (lr * w * D) / 0.3) ** 2)
    ...         for D in (1e9, 4e9) for lr in (1e-3, 2e-3) for w in (0.3, 1.0, 3.0, 10.0, 30.0)]
    >>> f = fit_weight_decay(pd.DataFrame(rows, columns=["params", "tokens", "lr", "batch_tokens",
    ...                                                  "weight_decay", "val_loss"]))
    >>> round(float(f.tau(1e6, 1e8)), 2)
    0.3
    """
    from .transfer import parabola_optimum

    t = read_table(df)
    t = final_rows(t)
    for name, col in (("n", n), ("d", d), ("lr", lr), ("batch", batch), ("wd", wd), ("loss", loss)):
        if col not in t.columns:
            raise InputError(f"{name}: column {col!r} not found; columns are {list(t.columns)}")
    r = pd.DataFrame({k: pd.to_numeric(t[c], errors="coerce") for k, c in
                      (("N", n), ("D", d), ("lr", lr), ("batch", batch), ("wd", wd), ("loss", loss))})
    if "diverged" in t.columns:
        r = r[~t["diverged"].fillna(False).astype(bool).to_numpy()]
    r = r[np.isfinite(r).all(axis=1)]
    r = r.assign(tau=np.where(r["wd"] > 0, r["batch"] / (r["lr"] * r["wd"] * r["D"]), np.inf))
    per_lr, cells, notes = [], [], []
    for (N, D), g in r.groupby(["N", "D"]):
        rows = []
        for lr_, gl in g[np.isfinite(g["tau"])].groupby("lr"):
            if gl["tau"].nunique() < 3:
                continue
            x, best, how = parabola_optimum(np.log(gl["tau"].to_numpy()), gl["loss"].to_numpy())
            no_wd = g[(g["lr"] == lr_) & ~np.isfinite(g["tau"])]["loss"]
            edge = bool(np.isclose(x, np.log(gl["tau"].min())) or np.isclose(x, np.log(gl["tau"].max())))
            rows.append({"N": N, "D": D, "lr": lr_, "tau_opt": math.exp(x), "loss_opt": best, "method": how,
                         "at_edge": edge,
                         "gain_vs_no_wd": float(no_wd.mean() / best - 1) if len(no_wd) else float("nan")})
        if not rows:
            continue
        per_lr += rows
        b = dict(min(rows, key=lambda q: q["loss_opt"]))
        inner = [q["tau_opt"] for q in rows if not q["at_edge"]]
        b["source"] = "the best lr"
        if b["at_edge"] and inner:  # wd barely matters at the best lr: read tau* where it does
            b.update(tau_opt=float(np.median(inner)), at_edge=False,
                     source=f"median over the {len(inner)} lr(s) whose optimum lies inside the grid")
        cells.append({**b, "tpp": D / N, "tau_spread_across_lr": float(max(inner) / min(inner)) if inner else np.nan,
                      "n_lr": len(rows)})
    if not cells:
        raise InputError(f"df: need a cell with three or more positive weight decays at one lr; "
                         f"the {wd!r} column has {r['wd'].nunique()} distinct value(s)")
    cells, per_lr = pd.DataFrame(cells), pd.DataFrame(per_lr)
    inside = cells[~cells["at_edge"]]
    if inside.empty:
        raise InputError("df: the best timescale lies on the edge of the weight-decay grid at every lr of every "
                         "cell; extend the grid (more and less decay)")
    if len(inside) < len(cells):
        notes.append(f"{len(cells) - len(inside)} cell(s) with the optimum on the grid's edge left out of the law")
    x, y = np.log(inside["tpp"].to_numpy()), np.log(inside["tau_opt"].to_numpy())
    if len(inside) >= 2 and np.ptp(x) > math.log(1.5):
        p, log_k = np.polyfit(x, y, 1)
    else:
        p, log_k = 0.0, float(np.mean(y))
        notes.append("one tokens-per-parameter ratio: tau* held constant (Wang & Aitchison 2025)")
    moved = cells["source"] != "the best lr"
    if moved.any():
        notes.append(f"in {int(moved.sum())} cell(s) weight decay barely matters at the best lr (its optimum is the "
                     "grid's edge); tau* there is read at the lrs where it matters")
    law = {"log_k": float(log_k), "p": float(p), "n_cells": len(inside), "tpp_min": float(inside["tpp"].min()),
           "tpp_max": float(inside["tpp"].max())}
    return WeightDecayFit(law=law, cells=cells, per_lr=per_lr, runs=r, notes=tuple(notes))


# --- critical batch size ----------------------------------------------------------------------

def critical_batch(df, batch: str = "batch_tokens", steps: str = "step", target: str = "target_loss",
                   group: tuple = ()) -> pd.DataFrame:
    """B_crit from steps to reach target losses at several batch sizes (McCandlish et al. 2018):
    S = S_min (1 + B_crit / B), linear in 1/B. One row per target loss (and group), with S_min,
    E_min = S_min B_crit (tokens) and B_crit.

    >>> B = np.array([256, 512, 1024, 2048, 4096.]); S = 100 * (1 + 1000 / B)
    >>> r = critical_batch(pd.DataFrame({"batch_tokens": B, "step": S, "target_loss": 3.0}))
    >>> round(float(r["b_crit"].iloc[0]))
    1000
    """
    t = read_table(df)
    if "phase" in t.columns and (t["phase"] == "target").any():
        t = t[t["phase"] == "target"]
    for col in (batch, steps, target, *group):
        if col not in t.columns:
            raise InputError(f"critical_batch: column {col!r} not found; columns are {list(t.columns)}")
    rows = []
    for key, g in t.groupby([target, *group]):
        # the fewest steps at each batch size (over seeds and learning rates: the best tuned run)
        s = g.groupby(batch)[steps].min()
        if len(s) < 3:
            continue
        inv_b = 1.0 / s.index.to_numpy(float)
        slope, icpt = np.polyfit(inv_b, s.to_numpy(float), 1)
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip([target, *group], key))
        ok = icpt > 0 and slope > 0
        row.update({"s_min": icpt if ok else np.nan, "b_crit": slope / icpt if ok else np.nan,
                    "e_min": slope if ok else np.nan, "n_batches": len(s)})
        rows.append(row)
    return pd.DataFrame(rows)


def critical_batch_law(cb: pd.DataFrame, bootstrap: int = 200, seed: int = 0) -> dict:
    """B_crit(D) = k D^b across target losses, D = E_min (the fewest tokens that reach the target):
    the critical batch grows with the data a run needs (Zhang et al. 2024, arXiv:2410.21676; Bergsma
    et al. 2025). ``cb`` is :func:`critical_batch`'s table. Returns log_k, b with a bootstrap
    interval over targets, n_targets and the D range.

    >>> D = np.array([1e8, 3e8, 1e9, 3e9]); cb = pd.DataFrame({"e_min": D, "b_crit": 50 * D**0.4})
    >>> round(critical_batch_law(cb)["b"], 3)
    0.4
    """
    if not {"b_crit", "e_min"} <= set(cb.columns):
        raise InputError("critical batch: no target loss was reached at three or more batch sizes")
    ok = cb[np.isfinite(cb["b_crit"]) & np.isfinite(cb["e_min"]) & (cb["b_crit"] > 0) & (cb["e_min"] > 0)]
    if len(ok) < 3 or ok["e_min"].max() / ok["e_min"].min() < 1.5:
        raise InputError(f"critical batch: need 3+ targets with a finite B_crit over a range of token counts; "
                         f"got {len(ok)}")
    x, y = np.log(ok["e_min"].to_numpy(float)), np.log(ok["b_crit"].to_numpy(float))
    b, log_k = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0:
            boots.append(np.polyfit(x[i], y[i], 1)[0])
    lo, hi = np.quantile(boots, [0.05, 0.95]) if boots else (np.nan, np.nan)
    return {"log_k": float(log_k), "b": float(b), "b_low": float(lo), "b_high": float(hi), "n_targets": len(ok),
            "D_min": float(np.exp(x.min())), "D_max": float(np.exp(x.max()))}


def noise_scale_batch(df, group: str = "run_id") -> pd.DataFrame:
    """B_simple = tr(Sigma) / |G|^2 from the probes' two-batch estimates, pooled per group by
    averaging numerator and denominator separately (McCandlish et al. 2018, App. A)."""
    t = read_table(df)
    need = ("gns_trace", "gns_g2", "val_loss", "tokens")
    missing = [c for c in need if c not in t.columns]
    if missing:
        raise InputError(f"noise_scale_batch: columns {missing} not found (run probes with train.gns_every > 0)")
    t = t[np.isfinite(t["gns_trace"]) & np.isfinite(t["gns_g2"])]
    out = t.groupby(group).agg(trace=("gns_trace", "mean"), g2=("gns_g2", "mean"), loss=("val_loss", "mean"),
                               tokens=("tokens", "max")).reset_index()
    out["b_simple"] = out["trace"] / out["g2"]
    return out
