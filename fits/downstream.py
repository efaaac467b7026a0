"""Task accuracy from (N, D): what a planned model will score on a benchmark. The result objects
(:class:`DownstreamFit`, :class:`TaskFit`) and the laws live here; reading an eval table and
fitting it (:func:`fits.downstream_fit.fit_downstream`) in :mod:`fits.downstream_fit`.

Two methods, chosen per task by rolling-origin backtests over the table's model sizes:

- **two-step** (Bhagia et al. 2024, arXiv:2412.04403): the task's loss (e.g. bits per byte of the
  correct answer) from (N, D) by a registered loss form fitted on each run's final, cooled-down
  evaluation; then accuracy from task loss by a sigmoid whose floor is the task's chance level,
  fitted on every evaluation after the warmup (the loss-to-accuracy map does not depend on where in
  its schedule a run is);
- **direct** (Krajewski et al. 2025, arXiv:2512.08894): -log accuracy = A N^-alpha + B D^-beta on
  the final evaluations.

Intervals come from a joint bootstrap by run (both steps refitted on the same resampled runs), the
steps' residual spread and the measured run-to-run noise (reruns of one cell, and the scatter of
each run's last evaluations), scaled up where the table's own backtests show them too narrow.

Every task gets a verdict: ``predictable``, ``near chance`` (the ladder does not leave the chance
floor), ``not monotone`` (accuracy does not rise with compute), ``saturating`` (the ladder is at
its fitted ceiling), ``noisy`` (run-to-run noise is a large share of the ladder's range) or
``unreliable`` (its own backtest misses by more than the noise allows). Only predictable tasks get
a point prediction from :meth:`DownstreamFit.predict`; the rest get their verdict and its reason.

>>> from fits import fit_downstream  # doctest: +SKIP
>>> down = fit_downstream("ladder.csv", d="tokens", run="run", bootstrap=100)  # doctest: +SKIP
>>> down.predict(7e9, 1.4e11)  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .errors import InputError

__all__ = ["DownstreamFit", "TaskFit", "load_downstream", "chance_level", "sigmoid", "VERDICTS"]

VERDICTS = ("predictable", "near chance", "not monotone", "saturating", "noisy", "unreliable")
METHODS = ("two_step", "direct")

# chance accuracy of common multiple-choice tasks (1 / number of choices), matched on the task name
_CHANCE = (("mmlu", 0.25), ("hellaswag", 0.25), ("arc_easy", 0.25), ("arc_challenge", 0.25),
           ("openbookqa", 0.25), ("sciq", 0.25), ("csqa", 0.2), ("commonsense_qa", 0.2),
           ("socialiqa", 1 / 3), ("social_iqa", 1 / 3), ("siqa", 1 / 3), ("boolq", 0.5),
           ("piqa", 0.5), ("winogrande", 0.5), ("copa", 0.5), ("lambada", 0.0))

def chance_level(task: str) -> float | None:
    """The chance accuracy of a task recognised by name (None when unknown)."""
    t = task.lower()
    for key, value in _CHANCE:
        if key in t:
            return value
    return None


# --- the laws -----------------------------------------------------------------------------

def sigmoid(L, chance, top, k, L0):
    """Accuracy from task loss: chance + (top - chance) / (1 + exp(k (L - L0))), k > 0."""
    with np.errstate(over="ignore"):
        return chance + (top - chance) / (1.0 + np.exp(k * (np.asarray(L, float) - L0)))


def _sigmoid_slope(L, chance, top, k, L0):
    s = 1.0 / (1.0 + np.exp(np.clip(k * (np.asarray(L, float) - L0), -50, 50)))
    return -(top - chance) * k * s * (1 - s)


def _direct(N, D, A, B, alpha, beta):
    """Krajewski et al.'s law: accuracy = exp(-(A N^-alpha + B D^-beta))."""
    return np.exp(-(A * np.asarray(N, float) ** -alpha + B * np.asarray(D, float) ** -beta))


_DIRECT_FLOOR = 1e-12  # the Chinchilla form with E held here is the direct law on -log accuracy


# --- result objects -----------------------------------------------------------------------

@dataclass(frozen=True)
class TaskFit:
    """One task's fitted laws, noise, backtests and verdict. ``samples`` hold the bootstrap
    parameter draws (rows of the same resampled runs across both steps and the direct law)."""

    task: str
    loss_column: str
    accuracy_column: str
    chance: float
    chance_known: bool
    form: str
    law: dict                  # task loss from (N, D)
    sigmoid: dict              # accuracy from task loss: top, k, L0
    direct: dict               # A, B, alpha, beta
    resid: dict                # sd of residuals: loss (task-loss units), sigmoid, direct (accuracy)
    noise: dict                # checkpoint, rerun, used (accuracy sd)
    samples: dict              # law, sigmoid, direct: lists of parameter rows
    backtest: dict             # method -> {mae, errors, ratios}; empty when no backtest could run
    method: str
    verdict: str
    reason: str
    ladder: dict               # sizes, best and largest-size accuracy, rank correlation
    calibration: float = 1.0   # interval scale from the table's own backtests (>= 1)

    @property
    def predictable(self) -> bool:
        return self.verdict == "predictable"

    # point predictions ---------------------------------------------------------------------
    def task_loss(self, N, D) -> np.ndarray:
        from .forms import get_form

        return np.asarray(get_form(self.form)(np.asarray(N, float), np.asarray(D, float), self.law), float)

    def accuracy(self, N, D, method: str | None = None) -> np.ndarray:
        """The method's point prediction at (N, D), whatever the verdict (``predict`` on the fit
        withholds it for tasks that are not predictable)."""
        method = method or self.method
        if method == "two_step":
            return sigmoid(self.task_loss(N, D), self.chance, **self.sigmoid)
        return _direct(N, D, **self.direct)

    def _draws(self, N, D, method: str) -> np.ndarray:
        """Bootstrap draws of the accuracy at (N, D), shape (B, ...)."""
        from .forms import get_form

        N, D = np.asarray(N, float), np.asarray(D, float)
        if method == "two_step":
            law = get_form(self.form)
            names = law.param_names
            rows = [(a, b) for a, b in zip(self.samples["law"], self.samples["sigmoid"])
                    if np.all(np.isfinite(a)) and np.all(np.isfinite(b))]
            out = [sigmoid(law(N, D, dict(zip(names, a))), self.chance, *b) for a, b in rows]
        else:
            out = [_direct(N, D, *r) for r in self.samples["direct"] if np.all(np.isfinite(r))]
        return np.asarray(out, float)

    def _noise_sd(self, N, D, method: str) -> np.ndarray:
        """The spread one run adds around the law: the step residuals carried to accuracy, or the
        measured run-to-run noise when larger."""
        if method == "two_step":
            L = self.task_loss(N, D)
            from_loss = np.abs(_sigmoid_slope(L, self.chance, **self.sigmoid)) * self.resid["loss"]
            own = np.hypot(from_loss, self.resid["sigmoid"])
        else:
            own = np.full(np.broadcast(np.asarray(N), np.asarray(D)).shape, self.resid["direct"])
        return np.maximum(own, self.noise["used"])

    def interval(self, N, D, level: float = 0.9, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A ``level`` prediction interval for one run's final accuracy at (N, D): the bootstrap
        quantiles around the point prediction, combined in quadrature with the run-to-run spread,
        scaled by the calibration from the table's backtests and clipped to [0, 1]."""
        method = method or self.method
        p = self.accuracy(N, D, method)
        draws = self._draws(N, D, method)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        sd = self._noise_sd(N, D, method)
        if len(draws) >= 10:
            q_lo, q_hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2], axis=0)
            lo_w, hi_w = np.maximum(p - q_lo, 0), np.maximum(q_hi - p, 0)
        else:
            lo_w = hi_w = np.zeros_like(p)
        c = self.calibration
        lo = p - c * np.hypot(lo_w, z * sd)
        hi = p + c * np.hypot(hi_w, z * sd)
        return np.clip(lo, 0, 1), np.clip(hi, 0, 1)

    # serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        from scaling_core.io import to_jsonable

        return to_jsonable(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskFit":
        nan = float("nan")
        d = {**d, "samples": {k: np.array(v, dtype=float).tolist() for k, v in d["samples"].items()},
             "resid": {k: nan if v is None else float(v) for k, v in d["resid"].items()}}
        for m, bt in (d.get("backtest") or {}).items():
            bt["ratios"] = [float(x) for x in bt.get("ratios", [])]
            bt["mae"] = nan if bt.get("mae") is None else float(bt["mae"])
        return cls(**d)


@dataclass(frozen=True)
class DownstreamFit:
    """Per-task accuracy laws fitted to one eval table; see :func:`fit_downstream`."""

    tasks: dict
    options: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict, repr=False)  # the points behind each task, for plots (not saved)

    def __getitem__(self, task: str) -> TaskFit:
        try:
            return self.tasks[task]
        except KeyError:
            raise InputError(f"task: {task!r} is not in this fit; tasks are {sorted(self.tasks)}") from None

    @property
    def predictable(self) -> list[str]:
        return [t for t, f in self.tasks.items() if f.predictable]

    def predict(self, N, D, level: float = 0.9, tasks=None) -> list[dict]:
        """One record per task at a single (N, D): the verdict, and for predictable tasks the
        accuracy with its ``level`` interval (None otherwise). Needs numpy only (the plan path)."""
        out = []
        for name in tasks or self.tasks:
            t = self[name]
            rec = {"task": name, "verdict": t.verdict, "reason": t.reason, "method": t.method,
                   "chance": t.chance, "accuracy": None, "lo": None, "hi": None, "level": level}
            if t.predictable:
                lo, hi = t.interval(N, D, level)
                rec.update(accuracy=float(t.accuracy(N, D)), lo=float(lo), hi=float(hi))
            out.append(rec)
        return out

    def to_frame(self):
        """The per-task table: chosen method, backtest errors (accuracy points), noise, verdict."""
        import pandas as pd

        rows = []
        for name, t in self.tasks.items():
            bt = t.backtest or {}
            rows.append({
                "task": name, "verdict": t.verdict, "method": t.method, "chance": t.chance,
                "best_accuracy": t.ladder.get("best"), "rank_corr": t.ladder.get("rank_corr"),
                "noise_sd": t.noise["used"],
                "backtest_mae_two_step": bt.get("two_step", {}).get("mae"),
                "backtest_mae_direct": bt.get("direct", {}).get("mae"),
                "calibration": t.calibration, "reason": t.reason,
            })
        return pd.DataFrame(rows).set_index("task")

    def report(self, at: tuple[float, float] | None = None, level: float = 0.9) -> str:
        o = self.options
        lines = [f"Task accuracy laws: {len(self.tasks)} task(s), {o.get('n_runs')} runs at "
                 f"{len(o.get('sizes', []))} model sizes ({', '.join(f'{s:.3g}' for s in o.get('sizes', []))})",
                 f"  task loss from (N, D): {o.get('form')} form on each run's final evaluation; "
                 f"sigmoid on {o.get('sigmoid_rows_words')}",
                 f"  backtests: {o.get('backtest_words')}; intervals: joint bootstrap by run "
                 f"({o.get('bootstrap')} refits) + run-to-run noise, scaled by the backtests", ""]
        head = f"{'task':<36} {'verdict':<13} {'method':<9} {'backtest |err| (pts)':>20} {'noise':>6}"
        if at is not None:
            head += f"   accuracy at N={at[0]:.3g}, D={at[1]:.3g} ({level:.0%})"
        lines.append(head)
        preds = {r["task"]: r for r in self.predict(*at, level=level)} if at is not None else {}
        for name, t in self.tasks.items():
            bt = t.backtest.get(t.method, {}).get("mae") if t.backtest else None
            cell = f"{100 * bt:.1f}" if bt is not None else "n/a"
            row = f"{name[:36]:<36} {t.verdict:<13} {t.method:<9} {cell:>20} {100 * t.noise['used']:>6.1f}"
            r = preds.get(name)
            if r and r["accuracy"] is not None:
                row += f"   {100 * r['accuracy']:.1f} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]"
            elif r:
                row += "   (not predicted)"
            lines.append(row)
        lines.append("")
        for name, t in self.tasks.items():
            if not t.predictable:
                lines.append(f"  {name}: {t.verdict}: {t.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def plot(self, task: str, at: tuple[float, float] | None = None, level: float = 0.9):
        """Both steps of one task: task loss against compute per size, and accuracy against task
        loss with the sigmoid; the prediction at ``at`` = (N, D) with its band. Returns the figure."""
        from ._plot import pyplot

        plt = pyplot()
        t = self[task]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        pts = self.data.get(task, {})
        N, D = np.asarray(pts.get("N", []), float), np.asarray(pts.get("D", []), float)
        L, acc = np.asarray(pts.get("loss", []), float), np.asarray(pts.get("accuracy", []), float)
        for n in np.unique(N):
            m = N == n
            order = np.argsort(D[m])
            a1.plot(6 * n * D[m][order], L[m][order], "o", ms=4, label=f"N={n:.3g}")
            dd = np.geomspace(D[m].min() / 2, D[m].max() * 4, 40)
            a1.plot(6 * n * dd, t.task_loss(n, dd), "-", lw=1, color=a1.lines[-1].get_color())
        a1.set_xscale("log")
        a1.set_xlabel("training FLOPs (6ND)")
        a1.set_ylabel(t.loss_column)
        a1.set_title(f"{task}: step 1, task loss")
        ck = pts.get("curve_loss", [])
        a2.plot(ck, pts.get("curve_accuracy", []), ".", ms=2, alpha=0.3, color="grey", label="evaluations")
        a2.plot(L, acc, "o", ms=4, label="final evaluations")
        grid = np.linspace(min(np.min(L, initial=np.inf), np.min(ck, initial=np.inf)) * 0.8,
                           max(np.max(L, initial=-np.inf), np.max(ck, initial=-np.inf)) * 1.05, 200)
        if np.all(np.isfinite(grid)):
            a2.plot(grid, sigmoid(grid, t.chance, **t.sigmoid), "-", label="sigmoid")
        a2.axhline(t.chance, ls=":", color="k", lw=1, label="chance")
        if at is not None and t.predictable:
            p = float(t.accuracy(*at))
            lo, hi = t.interval(*at, level)
            xl = float(t.task_loss(*at)) if t.method == "two_step" else np.nan
            if np.isfinite(xl):
                a2.errorbar([xl], [p], yerr=[[p - float(lo)], [float(hi) - p]], fmt="*", ms=12, color="C3",
                            label=f"prediction ({level:.0%})")
                a1.plot([6 * at[0] * at[1]], [xl], "*", ms=12, color="C3")
            else:
                a2.axhspan(float(lo), float(hi), color="C3", alpha=0.2, label=f"direct law ({level:.0%})")
                a2.axhline(p, color="C3")
        a2.set_xlabel(t.loss_column)
        a2.set_ylabel(t.accuracy_column)
        a2.set_title(f"step 2: accuracy ({t.verdict}, {t.method})")
        a2.legend(fontsize=7)
        a1.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        from scaling_core.io import to_jsonable

        return {"kind": "downstream", "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
                "options": to_jsonable(self.options), "provenance": self.provenance}

    def to_json(self, path) -> Path:
        import json

        from scaling_core.io import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: dict) -> "DownstreamFit":
        if d.get("kind") != "downstream":
            raise InputError("downstream: the file is not a downstream fit (written by `fit downstream --out`)")
        return cls({k: TaskFit.from_dict(v) for k, v in d["tasks"].items()}, d.get("options", {}),
                   d.get("provenance", {}))


def load_downstream(path) -> DownstreamFit:
    """Read a fit written by :meth:`DownstreamFit.to_json` (``fit downstream --out``)."""
    from scaling_core.io import read_json

    return DownstreamFit.from_dict(read_json(path, "downstream"))
