"""Optimal and sequential probe design: which runs most shrink the plan's uncertainty at a target.

The decision at a target budget C is the predicted loss there (``criterion="loss"``: log L at the
compute-optimal allocation) or the compute-optimal size (``"n_opt"``: log N_opt). Linearised around
the law, a probe run at (N, D) with log-loss noise sigma adds J J^T / sigma^2 to the precision of
the law's parameters (J = d log L / d theta), and the variance of the decision q is g^T Lambda^-1 g
(g = dq / d theta): c-optimal design (Chaloner & Verdinelli 1995). The prior precision is the
inverse covariance of a fit's bootstrap refits (a published preset's, or the user's own fit, whose
refits already carry the runs it has seen), widened by ``prior_scale``. The variance is averaged
over draws of the law from those refits, so the design does not bet on one law.

The form itself may be wrong. Its misfit delta(log N, log D) is a smooth Gaussian process added to
every run's log loss and to the decision (Kennedy & O'Hagan 2001): runs near the target's optimum
inform delta there, and runs close to each other share it, so a cluster of cheap runs far from the
target buys less than the form alone says. Computed in function space: the joint covariance of q and
every candidate's log loss, conditioned on each chosen run by a rank-one update.

The linearisation cannot see a fit that wanders off to a bound (a floor E at 0 on a small table), so
a fresh design can be checked by the fitter itself (``simulate``): a few seedings of the greedy are
each fitted on simulated runs from laws drawn from the prior, and the one that misses least is kept.

Runs are picked greedily by variance removed per FLOP. Cost follows the probe runner: one WSD run
per width reaches its largest token count, and each smaller count of the same width is a branch
cooldown costing only its last ``cooldown_frac`` of steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["DesignResult", "design_runs", "design_variance", "isoflop_baseline", "run_cost", "simulate_design",
           "summarise_simulation"]

CRITERIA = ("loss", "n_opt")
# The form's own misfit (sd of log loss, correlation length in decades of N and D): the best of
# 0.01-0.05 over 1-2 decades on replays of the Chinchilla and Farseer tables, where trusting the form
# (0) lost to random subsets (benchmarks/results/design.json).
MISFIT = 0.03
MISFIT_LENGTH = 1.5
# The share of a run's noise variance common to all its branches (one seed, one trajectory up to the
# branch points; a branch adds only its cooldown's share): without it, branches of one width count as
# independent runs and a design piles them onto the cheapest width (benchmarks/results/design_e2e.json).
SHARED_NOISE = 0.8
# The N x D interaction the Chinchilla form lacks (log loss per decade of N per decade of D), which the
# simulated truths of ``simulate_design`` carry: fitted to the form's residuals it is -0.025 on the Farseer
# table (and explains 91% of their variance), -0.012 on Chinchilla's, -0.08 on the CPU probes: larger
# models gain more from more data than the form allows (benchmarks/results/interaction.json).
INTERACTION = 0.03
# The designs a simulation check compares with the unchecked one (``spread`` seed widths reaching up to
# budget / (2 spread)): (seed widths, the largest seed's cheapest run as a share of the budget). A wider
# reach buys one larger width early; on the CPU ladder's prior, at 3e13 FLOPs with 8e12 of probes, that
# halved the simulated fits ending with E on its bound (benchmarks/results/design_e2e.json).
PROPOSALS = ((2, 3 / 4), (3, 1 / 3), (3, 1 / 2), (4, 1 / 4))
_Z90 = 1.6448536269514722


def run_cost(design: pd.DataFrame, cooldown_frac: float = 0.2) -> float:
    """FLOPs of a design (columns group, D, fpt: FLOPs per token): per group, its largest token
    count in full plus ``cooldown_frac`` of every smaller one (branch cooldowns)."""
    if len(design) == 0:
        return 0.0
    total = 0.0
    for _, g in design.groupby("group"):
        d = np.sort(g["D"].to_numpy(float))
        total += float(g["fpt"].iloc[0]) * (d[-1] + cooldown_frac * d[:-1].sum())
    return total


def _sigma(prior, noise: float | None) -> float:
    """Run-to-run sd of log loss: as given, else the prior fit's residual scale, at least 0.01."""
    if noise is not None and not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
        raise InputError(f"noise: must be a finite positive sd of log loss; got {noise!r}")
    return float(noise if noise is not None else max(prior.noise_scale, 0.01))


def _bootstrap_thetas(prior) -> np.ndarray:
    """The prior's bootstrap refits as optimiser vectors (theta), the non-finite ones dropped."""
    law = prior.law
    if prior.bootstrap_params is None or len(prior.bootstrap_params) < 10:
        raise InputError("prior: the fit needs bootstrap refits (>= 10) to give a prior covariance")
    boot = np.array([law.to_theta(dict(zip(law.param_names, r))) for r in prior.bootstrap_params])
    return boot[np.all(np.isfinite(boot), axis=1)]


def _samples(prior, n_draws: int, seed: int) -> np.ndarray:
    """Parameter vectors (theta) to average the criterion over: the point fit plus bootstrap draws."""
    theta0 = prior.law.to_theta(prior.params)
    boot = _bootstrap_thetas(prior)
    rng = np.random.default_rng(seed)
    pick = boot[rng.choice(len(boot), size=min(n_draws - 1, len(boot)), replace=False)]
    return np.vstack([theta0, pick]), boot


def _optimum(law, target: float, p: dict) -> tuple[float, float]:
    """The law's compute-optimal (N, D) at ``target`` FLOPs, as two floats."""
    n, d = law.optimal(target, p)
    return float(np.ravel(n)[0]), float(np.ravel(d)[0])


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise InputError(f"criterion: must be one of {list(CRITERIA)}; got {criterion!r}")


def _jacobian(law, theta, N, D) -> np.ndarray:
    """d log L / d theta at (N, D), shape (n, p): analytic where the form has it."""
    data = {"N": N, "D": D, "logN": np.log(N), "logD": np.log(D)}
    if hasattr(law, "log_jacobian"):
        return law.log_jacobian(theta, data)
    eps = 1e-6
    base = law.log_predict(theta, data)
    return np.column_stack([(law.log_predict(theta + eps * e, data) - base) / eps for e in np.eye(len(theta))])


def _criterion_gradient(law, theta, target: float, criterion: str) -> np.ndarray:
    """dq / d theta by central differences, q = log L at the optimum (loss) or log N_opt (n_opt)."""
    def q(t):
        p = law.from_theta(t)
        n, d = _optimum(law, target, p)
        return math.log(n) if criterion == "n_opt" else math.log(float(law(n, d, p)))

    g = np.zeros(len(theta))
    for j in range(len(theta)):
        h = 1e-4 * max(1.0, abs(theta[j]))
        e = np.zeros(len(theta))
        e[j] = h
        g[j] = (q(theta + e) - q(theta - e)) / (2 * h)
    return g


def _curvature(law, p: dict, n: float, d: float) -> float:
    """d^2 log L / ds^2 along the isoFLOP line (log N = log n + s, log D = log d - s) at the optimum (n, d)."""
    h = 0.05
    f = [math.log(float(law(n * math.exp(s), d * math.exp(-s), p))) for s in (-h, 0.0, h)]
    return (f[0] - 2 * f[1] + f[2]) / h**2


def _kernel(a: np.ndarray, b: np.ndarray, amp: float, length: float) -> np.ndarray:
    """Squared-exponential covariance of the form's misfit between points (log10 N, log10 D)."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return amp**2 * np.exp(-d2 / (2 * length**2))


@dataclass
class _Model:
    """Joint Gaussian covariance, per law draw, of the decision q and every candidate's log loss,
    conditioned on the runs chosen so far. Entry 0 is q; entry 1 + i is candidate i."""

    C: np.ndarray  # (S, 1 + n_cand, 1 + n_cand)
    sigma: float

    def variance(self) -> float:
        """Mean over draws of Var(q) given the runs conditioned on so far."""
        return float(np.mean(self.C[:, 0, 0]))

    def gains(self) -> np.ndarray:
        """Mean over draws of the variance each candidate would remove: Cov(q, y_i)^2 / Var(y_i)."""
        var = self.C[:, 1:, 1:].diagonal(axis1=1, axis2=2)  # 0 for runs already observed
        return np.mean(self.C[:, 0, 1:] ** 2 / np.maximum(var, 1e-300), axis=0)

    def observe(self, i: int) -> None:
        """Condition on candidate i's run (a rank-one update of every draw's covariance)."""
        c = self.C[:, :, 1 + i].copy()
        self.C -= np.einsum("sa,sb->sab", c, c) / c[:, 1 + i][:, None, None]

    def variance_with(self, rows) -> float:
        """Var(q) with candidate ``rows`` observed (the model itself is left as it is)."""
        m = _Model(self.C.copy(), self.sigma)
        for i in rows:
            m.observe(int(i))
        return m.variance()


def _build(prior, candidates: pd.DataFrame, target: float, criterion: str, noise: float | None,
           prior_scale: float, n_draws: int, seed: int, misfit: float = 0.0, misfit_length: float = 1.0,
           seen: pd.DataFrame | None = None, shared_noise: float = 0.0) -> _Model:
    """The linearised model: log L_i = f(theta) + J_i dtheta + delta(x_i) + noise, with theta from the
    prior's refits (covariance x ``prior_scale``) and delta a smooth misfit of the form (amplitude
    ``misfit`` in log loss, correlation length ``misfit_length`` decades of N and D). Of the noise
    variance sigma^2, the fraction ``shared_noise`` is common to every row of one ``group`` (the
    branches of one training run share its seed). ``seen`` (columns N, D, group): runs already in
    the prior fit; they inform delta and their run's noise only (their information on theta is in the
    fit's refits)."""
    _check_criterion(criterion)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise InputError(f"target: must be a finite positive number of FLOPs; got {target!r}")
    if not (isinstance(misfit, (int, float)) and math.isfinite(misfit) and misfit >= 0):
        raise InputError(f"misfit: must be a finite number >= 0 (sd of log loss); got {misfit!r}")
    if not (isinstance(misfit_length, (int, float)) and math.isfinite(misfit_length) and misfit_length > 0):
        raise InputError(f"misfit_length: must be a finite number of decades > 0; got {misfit_length!r}")
    if not (isinstance(shared_noise, (int, float)) and 0 <= shared_noise < 1):
        raise InputError(f"shared_noise: must be a fraction in [0, 1); got {shared_noise!r}")
    law = prior.law
    if law.variables:
        raise InputError(f"prior: the {law.name} form needs extra data per run; design with a law of N and D")
    thetas, boot = _samples(prior, n_draws, seed)
    cov = np.cov(boot.T) * prior_scale
    cov = cov + 1e-12 * np.trace(cov) * np.eye(len(cov))
    sigma = _sigma(prior, noise)
    n = len(candidates)
    cols = ["N", "D", "group"] if "group" in candidates.columns else ["N", "D"]
    pts = candidates[cols]
    if seen is not None and len(seen) and (misfit > 0 or shared_noise > 0):
        # runs already done join the joint vector with no law rows, are observed, then dropped
        pts = pd.concat([pts, seen[[c for c in cols if c in seen.columns]]], ignore_index=True)
    N, D = pts["N"].to_numpy(float), pts["D"].to_numpy(float)
    x = np.column_stack([np.log10(N), np.log10(D)])
    with np.errstate(all="ignore"):
        J = np.stack([_jacobian(law, t, N[:n], D[:n]) for t in thetas])
        g = np.stack([_criterion_gradient(law, t, target, criterion) for t in thetas])
    J = np.where(np.isfinite(J), J, 0.0)
    J = np.concatenate([J, np.zeros((len(thetas), len(pts) - n, J.shape[2]))], axis=1)
    gid = pd.factorize(pts["group"])[0] if "group" in pts.columns else np.full(len(pts), -1)  # -1: no known run
    same_run = ((gid[:, None] == gid[None]) & (gid[:, None] >= 0)) | np.eye(len(pts), dtype=bool)
    noise_cov = sigma**2 * ((1 - shared_noise) * np.eye(len(pts)) + shared_noise * same_run)
    K = _kernel(x, x, misfit, misfit_length) + noise_cov
    keep = np.flatnonzero(np.all(np.isfinite(g), axis=1))
    C = np.empty((len(keep), len(pts) + 1, len(pts) + 1))
    for s, t in enumerate(keep):
        G = np.vstack([g[t], J[t]])
        C[s] = G @ cov @ G.T
        C[s, 1:, 1:] += K
        if misfit > 0:
            row, var = _misfit_of_decision(law, thetas[t], target, criterion, x, misfit, misfit_length)
            C[s, 0, 1:] += row
            C[s, 1:, 0] += row
            C[s, 0, 0] += var
    C = C[np.all(np.isfinite(C), axis=(1, 2))]
    if not len(C):
        raise InputError("prior: no draw of the law gives a finite design criterion at this target")
    model = _Model(C, sigma)
    for i in range(n, len(pts)):
        model.observe(i)
    model.C = np.ascontiguousarray(model.C[:, : n + 1, : n + 1])
    return model


def _misfit_of_decision(law, theta, target, criterion, x, amp, length):
    """Covariance of the decision's misfit with the misfit at points ``x``, and its variance. For the
    loss, the decision carries delta at the optimum; for log N_opt, a misfit slope along the isoFLOP
    line moves the optimum by -slope / curvature."""
    p = law.from_theta(theta)
    opt = _optimum(law, target, p)
    xs = np.log10([opt])
    k = _kernel(xs, x, amp, length)[0]
    if criterion == "loss":
        return k, amp**2
    scale = -1.0 / (math.log(10) * _curvature(law, p, *opt))  # d(ln N_opt) per unit slope in log10 units
    return k * ((x[:, 0] - xs[0, 0]) - (x[:, 1] - xs[0, 1])) / length**2 * scale, 2 * amp**2 / length**2 * scale**2


@dataclass(frozen=True, eq=False)
class DesignResult:
    """A design: the chosen runs (one row each, in the order picked, with the cost so far and the
    expected 90% half-width of the decision after it), the expected half-width with no new runs, and
    what the criterion is."""

    runs: pd.DataFrame
    criterion: str
    target: float
    start_half_width: float
    sigma: float
    baseline: dict | None = None
    misfit: float = 0.0
    misfit_length: float = 1.0
    simulated: pd.DataFrame | None = None

    @property
    def half_width(self) -> float:
        """Expected 90% half-width of the decision (in log units: ~relative) after all chosen runs."""
        return float(self.runs["half_width_after"].iloc[-1]) if len(self.runs) else self.start_half_width

    @property
    def cost(self) -> float:
        return float(self.runs["cost_so_far"].iloc[-1]) if len(self.runs) else 0.0

    def report(self) -> str:
        what = "predicted loss" if self.criterion == "loss" else "compute-optimal N"
        pct = lambda hw: f"+{math.expm1(hw):.2%}/-{-math.expm1(-hw):.2%}"  # log half-width as relative bounds
        misfit = (f"; the form's misfit: sd {self.misfit:.3g} over {self.misfit_length:.3g} decades of N and D"
                  if self.misfit > 0 else "; the form trusted (no misfit)")
        lines = [f"Probe design for the {what} at {self.target:.3g} FLOPs (run noise {self.sigma:.3g} in log loss"
                 f"{misfit})",
                 f"  expected 90% interval: {pct(self.start_half_width)} now -> {pct(self.half_width)} after "
                 f"{len(self.runs)} run(s) costing {self.cost:.3g} FLOPs"]
        if self.baseline:
            b = self.baseline
            lines.append(f"  default isoFLOP ladder at the same cost ({b['cost']:.3g} FLOPs, {b['n_runs']} runs): "
                         f"{pct(b['half_width'])}; this design's interval is "
                         f"{b['half_width'] / max(self.half_width, 1e-12):.2f}x narrower")
        if self.simulated is not None and len(self.simulated):
            lines.append(f"  simulated fits (laws drawn from the prior, bent by an N x D term of sd {INTERACTION:g} "
                         "per decade^2, misfit and noise as above; |error| of the decision over usable fits; unusable: "
                         "the fit ended off 'converged', e.g. E on its bound):")
            for r in self.simulated.itertuples():
                lines.append(f"    {r.design:<32} {r.runs:>3} runs  median {r.median_abs_error:.2%}, "
                             f"90% {r.p90_abs_error:.2%}, unusable {r.unusable}/{r.sims}"
                             + ("  <- chosen" if r.chosen else ""))
        if len(self.runs):
            span = math.log10(self.runs["N"].max() / self.runs["N"].min())
            if span < 1.0:  # measured: such designs can leave the floor E unplaced (benchmarks/results/design_e2e.json)
                lines.append(f"  warning: the design spans {span:.2f} decades of N (< 1): its fit may not place the "
                             "floor E or the N exponent, whatever the linearised interval says; a larger probe "
                             "budget, or the default ladder, spreads sizes further")
        show = self.runs.copy()
        lines += ["", show.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        if len(self.runs):
            last = self.runs.iloc[-1]
            lines += ["", f"when to stop: the last run bought {last['gain']:.3g} of half-width for "
                          f"{last['marginal_cost']:.3g} FLOPs; stop when that is worth less than the run"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def design_variance(prior, candidates: pd.DataFrame, chosen, target: float, criterion: str = "loss",
                    noise: float | None = None, prior_scale: float = 100.0, n_draws: int = 16, seed: int = 0,
                    misfit: float = MISFIT, misfit_length: float = MISFIT_LENGTH,
                    shared_noise: float = SHARED_NOISE) -> float:
    """Expected 90% half-width (log units) of the decision after the candidate rows ``chosen``."""
    m = _build(prior, candidates.reset_index(drop=True), target, criterion, noise, prior_scale, n_draws, seed,
               misfit, misfit_length, shared_noise=shared_noise)
    return float(_Z90 * math.sqrt(m.variance_with(chosen)))


# A simulated fit that ends anywhere but "converged" gives a plan with no usable interval (a floor on its
# bound widened the bootstrap interval to +-42%: benchmarks/results/design_e2e.json); it scores as a 100% error.
UNUSABLE = 1.0


def simulate_design(prior, runs: pd.DataFrame, target: float, n_sims: int = 32, criterion: str = "loss",
                    noise: float | None = None, misfit: float = MISFIT, misfit_length: float = MISFIT_LENGTH,
                    shared_noise: float = SHARED_NOISE, seed: int = 0, progress: bool = False,
                    interaction: float = INTERACTION) -> pd.DataFrame:
    """Check a design with the fitter itself rather than its linearisation: ``n_sims`` times, draw a
    true law from the prior's bootstrap refits, the form's misfit (the Gaussian process of
    :func:`design_runs`) and each run's noise (``shared_noise`` of it common to one ``group``),
    simulate the losses of ``runs`` (columns N, D, group), fit them with :func:`fit_loss_surface`
    in the prior's form as a user would, and score the decision at ``target``.

    One row per draw: ``error`` (log units, fitted minus true: the planned loss against the true
    loss at the planned allocation, misfit included; or log N_opt against the law's own), the fit's
    ``status`` ("failed" when the fitter refuses the table) and ``usable`` (status "converged").
    The truths also carry an N x D bend the form lacks, gamma (log10 N - n*)(log10 D - d*) about the
    target's optimum, gamma ~ N(0, ``interaction``^2). The same ``seed`` draws the same laws and bends
    for every design (common random numbers), so two designs' scores differ by their runs more than by
    their luck."""
    from .fitting import fit_loss_surface

    _check_criterion(criterion)
    if not isinstance(n_sims, (int, np.integer)) or n_sims < 1:
        raise InputError(f"n_sims: must be an integer >= 1; got {n_sims!r}")
    law, sigma = prior.law, _sigma(prior, noise)
    boot = _bootstrap_thetas(prior)
    common = np.random.default_rng(seed)  # the laws and their bends: the same for every design
    pick, bends = common.integers(len(boot), size=n_sims), common.normal(0.0, interaction, size=n_sims)
    rng = np.random.default_rng([seed, len(runs)])
    N, D = runs["N"].to_numpy(float), runs["D"].to_numpy(float)
    gid = pd.factorize(runs["group"])[0] if "group" in runs.columns else np.arange(len(runs))
    it = range(n_sims)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="simulated fits", unit="fit", leave=False)
    out = []
    for s in it:
        p = law.from_theta(boot[pick[s]])
        opt = _optimum(law, target, p)
        x = np.log10(np.column_stack([np.append(N, opt[0]), np.append(D, opt[1])]))
        K = _kernel(x, x, misfit, misfit_length) + 1e-12 * np.eye(len(x))
        delta = np.linalg.cholesky(K) @ rng.standard_normal(len(x)) if misfit > 0 else np.zeros(len(x))
        eps = (sigma * math.sqrt(shared_noise) * rng.standard_normal(gid.max() + 1)[gid]
               + sigma * math.sqrt(1 - shared_noise) * rng.standard_normal(len(N)))
        bend = bends[s] * (x[:-1, 0] - x[-1, 0]) * (x[:-1, 1] - x[-1, 1])
        with np.errstate(all="ignore"):
            y = np.log(law(N, D, p)) + delta[:-1] + bend + eps
        row = {"sim": s, "error": np.nan, "status": "failed"}
        try:
            f = fit_loss_surface(pd.DataFrame({"N": N, "D": D, "L": np.exp(y)}), n="N", d="D", loss="L",
                                 form=law, group=None, trust=False, bootstrap=0)
            n_fit, d_fit = _optimum(law, target, f.params)
            if criterion == "n_opt":
                err = math.log(n_fit / opt[0])
            else:
                err = math.log(float(law(n_fit, d_fit, f.params)) / float(law(n_fit, d_fit, p))) - delta[-1]
            row.update(error=err, status=f.status)
        except (InputError, ArithmeticError, ValueError, np.linalg.LinAlgError):
            pass
        out.append(row)
    df = pd.DataFrame(out)
    df["usable"] = df["status"].eq("converged") & np.isfinite(df["error"])
    return df


def summarise_simulation(sim: pd.DataFrame) -> dict:
    """A :func:`simulate_design` table in a few numbers: the median and 90th percentile of |error| over
    the usable fits, how many were not usable, and the score designs are ranked by (mean |error|, an
    unusable fit counting as ``UNUSABLE``)."""
    err = sim.loc[sim["usable"], "error"].abs()
    return {"sims": len(sim), "median_abs_error": float(err.median()) if len(err) else math.nan,
            "p90_abs_error": float(err.quantile(0.9)) if len(err) else math.nan,
            "unusable": int((~sim["usable"]).sum()),
            "score": float(np.where(sim["usable"], sim["error"].abs(), UNUSABLE).mean())}


def design_runs(prior, candidates: pd.DataFrame, target: float, budget: float | None = None, k: int | None = None,
                criterion: str = "loss", noise: float | None = None, prior_scale: float = 100.0,
                n_draws: int = 16, seed: int = 0, existing: pd.DataFrame | None = None,
                cooldown_frac: float = 0.2, cost_power: float = 1.0, spread: int = 3,
                misfit: float = MISFIT, misfit_length: float = MISFIT_LENGTH,
                shared_noise: float = SHARED_NOISE, simulate: int = 0, progress: bool = False) -> DesignResult:
    """Pick runs from ``candidates`` (columns N, D, group, fpt; one row per (width, tokens)) that
    most shrink the variance of the decision at ``target`` FLOPs, greedily by variance removed per
    FLOP, until ``budget`` FLOPs are spent or ``k`` runs are picked.

    ``prior`` is a :class:`fits.LossSurfaceFit` with bootstrap refits: a preset's (``prior_scale``
    widens its covariance, as the user's data are not the paper's) or a fit of the runs already
    done (then give ``prior_scale=1``). ``existing`` (columns group, D, fpt, and N to inform the
    misfit) are runs already paid for: a branch of an existing width costs only its cooldown when
    shorter than its longest run.
    ``cost_power``: a run's score is the variance it removes / its cost^cost_power (1: per FLOP;
    0: the budget is only a limit).
    ``misfit``, ``misfit_length``: the form's own misfit, a smooth Gaussian process in (log10 N,
    log10 D) with this sd of log loss and correlation length in decades. With it, runs near the
    target's optimum tell more than the form alone says and clustered runs tell less: the design
    stops trusting the form to carry small runs to the target.
    ``shared_noise``: the share of the run noise variance that every row of one group (the branches
    of one run) has in common.
    ``spread``: a fresh design (a budget, no existing runs) first takes the cheapest run of this many
    widths spaced evenly in log N over those whose cheapest run costs at most budget / (2 spread).
    The linearised criterion trusts the form: left alone, it spends a small budget on the
    cheapest widths, whose fit could not place the floor E (benchmarks/results/design_e2e.json).
    ``simulate``: for a fresh design, check the greedy designs of every seeding in ``PROPOSALS``
    (seed widths, and how far up in size they reach) by this many simulated fits each
    (:func:`simulate_design`, the same laws for each) and keep the one whose fits miss the target
    least, an unusable fit (a floor on its bound) counting as a 100% miss; ``DesignResult.simulated``
    holds the comparison. The linearised criterion cannot see a fit that wanders off to a bound; the
    fitter can. 0: no check (seconds, not a minute).
    """
    if budget is None and k is None:
        raise InputError("budget/k: give a probe budget (FLOPs) or a number of runs to propose")
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise InputError(f"budget: must be a finite positive number of FLOPs; got {budget!r}")
    need = {"N", "D", "group", "fpt"}
    if not need <= set(candidates.columns):
        raise InputError(f"candidates: need columns {sorted(need)}; got {list(candidates.columns)}")
    if not isinstance(simulate, (int, np.integer)) or simulate < 0:
        raise InputError(f"simulate: must be an integer >= 0 (simulated fits per design); got {simulate!r}")
    cand = candidates.reset_index(drop=True)
    seen = existing if existing is not None and {"N", "D"} <= set(existing.columns) else None
    m = _build(prior, cand, target, criterion, noise, prior_scale, n_draws, seed, misfit, misfit_length, seen,
               shared_noise)
    groups = pd.factorize(pd.concat([cand["group"], existing["group"]]) if existing is not None and len(existing)
                          else cand["group"])[0]
    gid, fpt, D = groups[:len(cand)], cand["fpt"].to_numpy(float), cand["D"].to_numpy(float)
    longest = np.zeros(groups.max() + 1)  # each group's longest run so far (0: none)
    if existing is not None and len(existing):
        np.maximum.at(longest, groups[len(cand):], existing["D"].to_numpy(float))
    fresh = budget is not None and (existing is None or not len(existing))
    checked = simulate > 0 and fresh
    options = []
    for sp, reach in ((spread, 1 / (2 * spread)),) + (PROPOSALS if checked else ()):
        rows, start = _greedy(_Model(m.C.copy(), m.sigma), cand, gid, fpt, D, longest.copy(), budget, k,
                              sp if fresh else 0, reach, cooldown_frac, cost_power)
        if all(not r.equals(rows) for _, r in options):
            options.append(((sp, reach), rows))
    rows, simulated = options[0][1], None
    options = [o for o in options if len(o[1])]  # a seeding that buys nothing is no design
    if checked and options:
        table = []
        for (sp, reach), r in options:
            sim = simulate_design(prior, r, target, simulate, criterion, noise, misfit, misfit_length, shared_noise,
                                  seed, progress)
            table.append({"design": f"{sp} seed widths, reach {reach:.2g}", "runs": len(r),
                          "cost": r["cost_so_far"].iloc[-1], "half_width": r["half_width_after"].iloc[-1],
                          **summarise_simulation(sim)})
        simulated = pd.DataFrame(table)
        best = int(simulated["score"].idxmin())
        simulated["chosen"] = simulated.index == best
        rows = options[best][1]
    return DesignResult(runs=rows, criterion=criterion, target=float(target), start_half_width=start,
                        sigma=m.sigma, misfit=float(misfit), misfit_length=float(misfit_length), simulated=simulated)


def _greedy(m: "_Model", cand, gid, fpt, D, longest, budget, k, spread, reach, cooldown_frac, cost_power):
    """The greedy design on model ``m`` (conditioned in place): ``spread`` seed widths first (0: none),
    then the run removing the most variance per FLOP until ``budget`` or ``k``. Returns (rows, start
    half-width)."""
    var = m.variance()
    start = _Z90 * math.sqrt(var)
    chosen: list[int] = []
    rows, spent = [], 0.0

    def take(i: int, cost: float) -> None:
        nonlocal spent, var
        chosen.append(i)
        spent += cost
        longest[gid[i]] = max(longest[gid[i]], D[i])
        m.observe(i)
        v = m.variance()
        rows.append({**{c: cand.loc[i, c] for c in cand.columns}, "marginal_cost": cost, "cost_so_far": spent,
                     "half_width_after": _Z90 * math.sqrt(v), "gain": _Z90 * (math.sqrt(var) - math.sqrt(v))})
        var = v

    if budget is not None and spread > 1:
        for i in _spread_seeds(cand, gid, fpt * D, budget, spread, reach):
            if spent + fpt[i] * D[i] <= budget * (1 + 1e-9):  # wide reaches can sum past the budget
                take(i, float(fpt[i] * D[i]))
    while k is None or len(chosen) < k:
        top = longest[gid]
        # a new width pays for its run; a longer run of a width turns its old longest into a branch
        extra = np.where(top == 0, fpt * D, np.where(D > top, fpt * (D - top + cooldown_frac * top),
                                                     cooldown_frac * fpt * D))
        gain = m.gains()
        ok = np.ones(len(cand), bool)
        ok[chosen] = False
        if budget is not None:
            ok &= spent + extra <= budget * (1 + 1e-9)
        if not ok.any() or gain[ok].max() <= 1e-12 * var:
            break
        score = gain / np.maximum(extra, 1e-30) ** cost_power
        i = int(np.flatnonzero(ok)[np.argmax(score[ok])])
        take(i, float(extra[i]))
    return pd.DataFrame(rows), start


def _spread_seeds(cand: pd.DataFrame, gid: np.ndarray, cost: np.ndarray, budget: float, spread: int,
                  reach: float) -> list[int]:
    """The cheapest run of ``spread`` widths spaced evenly in log N over the widths whose cheapest run
    costs at most ``reach`` of the budget (see ``design_runs``)."""
    cheapest = {}
    for i, (g, c) in enumerate(zip(gid, cost)):
        if c <= reach * budget and (g not in cheapest or c < cost[cheapest[g]]):
            cheapest[g] = i
    if len(cheapest) < 2:
        return []
    rows = sorted(cheapest.values(), key=lambda i: cand.loc[i, "N"])
    logn = np.log([cand.loc[i, "N"] for i in rows])
    picks = {rows[int(np.argmin(np.abs(logn - t)))] for t in np.linspace(logn[0], logn[-1], spread)}
    return sorted(picks, key=lambda i: cand.loc[i, "N"])


def isoflop_baseline(candidates: pd.DataFrame, budget: float, n_levels: int = 4, ratio: float = 2.0,
                     tpp_range=(4.0, 500.0), cooldown_frac: float = 0.2) -> list[int]:
    """Candidate rows of an isoFLOP ladder (``n_levels`` compute levels ``ratio`` apart, every group
    at the token count nearest each level within ``tpp_range`` tokens per parameter) whose cost is
    ``budget``: the top level is found by bisection. The default grid to compare a design with."""
    def pick(top):
        rows = []
        for _, g in candidates.groupby("group"):
            for c in (top / ratio**i for i in range(n_levels)):
                d = c / float(g["fpt"].iloc[0])
                tpp = d / g["N"]
                ok = g[(tpp >= tpp_range[0] / 1.5) & (tpp <= tpp_range[1] * 1.5)]
                if len(ok) and tpp_range[0] <= d / float(g["N"].iloc[0]) <= tpp_range[1]:
                    rows.append(int((np.log(ok["D"]) - math.log(d)).abs().idxmin()))
        return sorted(set(rows))

    lo, hi = math.log(candidates["fpt"].min() * candidates["D"].min()), math.log(budget * 10)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        cost = run_cost(candidates.loc[pick(math.exp(mid))], cooldown_frac)
        lo, hi = (mid, hi) if cost <= budget else (lo, mid)
    return pick(math.exp(lo))
