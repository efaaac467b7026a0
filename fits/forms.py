"""Functional forms of the loss surface, as plain numpy functions plus a small registry.

A law is a plain function ``f(N, D, [data variables], **params) -> loss``; its parameter
names come from its signature. :class:`Form` adds what fitting needs: which parameters are
positive (fitted in log space), bounds, start points and, where one exists, the closed-form
compute-optimal allocation. New forms plug in with :func:`register_form`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

__all__ = [
    "chinchilla",
    "kaplan",
    "data_constrained",
    "farseer",
    "interaction",
    "beta_n",
    "numeric_allocation",
    "Form",
    "FORMS",
    "get_form",
    "register_form",
    "chinchilla_allocation",
    "effective_data",
    "law_floor",
    "STATUSES",
]

#: The closed set of fit statuses.
STATUSES = {
    "converged": "first-order optimality check passed",
    "max_iterations": "stopped before the first-order check passed",
    "at_bound": "converged with a parameter on its bound (the data do not pin it)",
    "not_identified": "converged, but a direction of the parameters is flat (a term the data cannot see)",
}



# --- the laws -------------------------------------------------------------------------------

def chinchilla(N, D, E, A, B, alpha, beta):
    """Chinchilla loss surface L = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

    >>> round(float(chinchilla(70e9, 1.4e12, 1.69, 406.4, 410.7, 0.34, 0.28)), 3)
    1.937
    """
    return E + A / np.power(N, alpha) + B / np.power(D, beta)


def kaplan(N, D, N_c, D_c, alpha_N, alpha_D):
    """Kaplan et al. 2020 (eq. 1.5): L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D.

    >>> round(float(kaplan(1e9, 1e10, 8.8e13, 5.4e13, 0.076, 0.095)), 3)
    2.484
    """
    return np.power(np.power(N_c / N, alpha_N / alpha_D) + D_c / D, alpha_D)


FARSEER_N_REF = 1e9  # the size at which the Farseer coefficients are read (N in units of 1e9)


def box_cox(x, q):
    """(x^q - 1) / q, continuous through q = 0 where it is log x (arrays broadcast)."""
    lx = np.log(x)
    q = np.asarray(q, dtype=float)
    small = np.abs(q * lx) < 1e-8
    with np.errstate(all="ignore"):
        out = np.expm1(q * lx) / np.where(small, 1.0, q)
    return np.where(small, lx * (1.0 + 0.5 * q * lx), out)


def farseer(N, D, f0, f1, f2, g0, g1, g2, h0, h1, h2):
    """Farseer law (Li et al. 2025, arXiv:2506.10972): L = exp(F(N)) + exp(G(N)) D^-exp(H(N)), where
    each of Chinchilla's constants (the floor the loss reaches at infinite data, the data term's
    coefficient and its exponent) becomes a function of N, so the compute-optimal D/N can rise with
    compute. The paper writes F = a N^q + c; here F = f0 + f1 (n^f2 - 1)/f2 with n = N / 1e9 (same
    family: a = f1 / (f2 1e9^f2), c = f0 - f1/f2), which reads f0 as the log floor at N = 1e9, f1 as
    its log-log slope there, and stays finite at f2 = 0 (a pure power law in N), where fits of
    real data often end. Likewise G (g0, g1, g2) and H (h0, h1, h2).

    With f2 = -alpha and G, H constant it is close to Chinchilla:

    >>> import math
    >>> E, A, al = 1.8, 480.0, 0.35; u = A / 1e9**al
    >>> p = dict(f0=math.log(E + u), f1=-al * u / (E + u), f2=-al, g0=math.log(2000), g1=0, g2=0,
    ...          h0=math.log(0.37), h1=0, h2=0)
    >>> round(float(farseer(1e9, 2e10, **p)), 4) == round(float(chinchilla(1e9, 2e10, E, A, 2000, al, .37)), 4)
    True
    """
    n = np.asarray(N, dtype=float) / FARSEER_N_REF
    with np.errstate(all="ignore"):
        H = np.exp(h0 + h1 * box_cox(n, h2))
        return np.exp(f0 + f1 * box_cox(n, f2)) + np.exp(g0 + g1 * box_cox(n, g2) - H * np.log(D))


def interaction(N, D, E, A, B, alpha, beta):
    """Chinchilla's terms with their product as an interaction: L = (E + A/N^alpha)(E + B/D^beta) / E
    = E + A/N^alpha + B/D^beta + A B / (E N^alpha D^beta). Same five parameters and the same floor E;
    the data term is scaled by (1 + A / (E N^alpha)), so a small model pays more for missing data.

    >>> round(float(interaction(1e9, 2e10, 1.8, 480, 2000, .35, .37)), 4)
    2.5069
    """
    return (E + A / np.power(N, alpha)) * (E + B / np.power(D, beta)) / E


BETA_N_REF = 1e9  # the size at which beta_n's data exponent is beta (its kappa moves it per decade of N)


def beta_n(N, D, E, A, B, alpha, beta, kappa):
    """Chinchilla with a data exponent that moves with model size:
    L = E + A / N^alpha + B / D^(beta + kappa log10(N / 1e9)).

    Farseer's size-dependent data exponent exp(H(N)) (Li et al. 2025) with one parameter, for tables
    too small for Farseer's nine: it gives the Chinchilla form the N x D term its residuals show on
    Chinchilla's table, on Farseer's and on small probe sweeps (``fits.residual_interaction``;
    benchmarks/results/interaction.json). Fitted, kappa is -0.006 on Chinchilla's table, -0.010 on
    Farseer's and -0.026 on the CPU probes: the data term of a larger model decays more slowly in D.
    The floor E still bounds the loss. kappa = 0 is Chinchilla:

    >>> round(float(beta_n(70e9, 1.4e12, 1.69, 406.4, 410.7, 0.34, 0.28, 0.0)), 3)
    1.937
    """
    x = np.log10(np.asarray(N, dtype=float) / BETA_N_REF)
    return E + A / np.power(N, alpha) + B / np.power(D, beta + kappa * x)


def numeric_allocation(loss, C, n_grid: int = 97, iters: int = 50, with_edge: bool = False):
    """Compute-optimal (N, D) under C = 6 N D for any law, vectorised: ``loss(N, D)`` broadcasts,
    C may be any shape (e.g. (B, k) budgets by bootstrap samples broadcast inside ``loss``).

    A grid over log N spanning 8 e-folds either side of N = D (tokens per parameter 1e-7..9e6)
    locates the basin, golden-section search inside the bracket of the best node refines it to
    ~1e-10 in log N. With ``with_edge`` it also returns a boolean array: True where the best node
    is an end of the grid, i.e. the law has no interior optimum there (the loss keeps falling
    along the isoFLOP line): the returned N is then the grid's edge, not an optimum.

    >>> n, d = numeric_allocation(lambda N, D: chinchilla(N, D, 1.8, 482.01, 2085.43, .3478, .3658), 5.88e23)
    >>> f"{float(n):.3g} {float(d):.4g}"
    '7.3e+10 1.342e+12'
    >>> numeric_allocation(lambda N, D: 2.0 + 100 / N**0.3, 1e21, with_edge=True)[2]
    array(True)
    """
    C = np.asarray(C, dtype=float)
    mid = 0.5 * np.log(C / 6.0)
    grid = np.linspace(-8.0, 8.0, n_grid)
    x = mid[..., None] + grid  # (..., G)
    with np.errstate(all="ignore"):
        vals = loss(np.exp(x), C[..., None] / 6.0 / np.exp(x))
    vals = np.where(np.isfinite(vals), vals, np.inf)
    shape = np.broadcast_shapes(vals.shape, x.shape)
    vals, x = np.broadcast_to(vals, shape), np.broadcast_to(x, shape)
    i0 = np.argmin(vals, axis=-1)
    edge = (i0 == 0) | (i0 == n_grid - 1) | ~np.isfinite(np.min(vals, axis=-1))
    i = np.clip(i0, 1, n_grid - 2)
    a = np.take_along_axis(x, (i - 1)[..., None], -1)[..., 0]
    b = np.take_along_axis(x, (i + 1)[..., None], -1)[..., 0]
    Cb = np.broadcast_to(C, a.shape)
    phi = 0.5 * (np.sqrt(5.0) - 1.0)

    def f(z):  # on a grid axis of length 1, as the loss broadcasts its parameters against one
        with np.errstate(all="ignore"):
            v = np.broadcast_to(loss(np.exp(z)[..., None], (Cb / 6.0 / np.exp(z))[..., None]), z.shape + (1,))
        return np.where(np.isfinite(v[..., 0]), v[..., 0], np.inf)

    for _ in range(iters):  # keep the sub-bracket of the lower of two inner points: shrinks by phi
        c, d = b - phi * (b - a), a + phi * (b - a)
        left = f(c) < f(d)
        a, b = np.where(left, a, c), np.where(left, d, b)
    N = np.exp(0.5 * (a + b))
    if with_edge:
        return N, Cb / 6.0 / N, np.broadcast_to(edge, N.shape)
    return N, Cb / 6.0 / N


def chinchilla_allocation(C, A, B, alpha, beta, flops_per_param_token: float = 6.0):
    """Closed-form compute-optimal (N, D) of the Chinchilla surface under C = 6 N D.

    G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^(beta/(alpha+beta)),
    D = (C/6) / N (Hoffmann et al. 2022, eq. 4).

    >>> n, d = chinchilla_allocation(5.88e23, 482.01, 2085.43, 0.3478, 0.3658)
    >>> f"{n:.3g} {d:.4g}"
    '7.3e+10 1.342e+12'
    """
    C = np.asarray(C, dtype=float)
    A, B, alpha, beta = (np.asarray(v, dtype=float) for v in (A, B, alpha, beta))  # floats would raise on 0/0
    s = alpha + beta
    with np.errstate(all="ignore"):  # a degenerate bootstrap refit (alpha or beta 0) gives 0 or inf
        G = np.power(alpha * A / (beta * B), 1.0 / s)
        N = G * np.power(C / flops_per_param_token, beta / s)
        return N, C / flops_per_param_token / N


def _unique_params(U, E, A, B, alpha, beta):
    """Compute-optimal parameter count for U tokens (Muennighoff et al. 2023, U_N)."""
    alpha, A, beta, B = (np.asarray(v, dtype=float) for v in (alpha, A, beta, B))
    G = np.power(alpha * A / (beta * B), 1.0 / (alpha + beta))
    # D_opt = (C/6)/N_opt and N_opt = G (C/6)^(b/(a+b))  =>  N_opt = G^(1 + b/a) D^(b/a)
    return np.power(G, 1.0 + beta / alpha) * np.power(U, beta / alpha)


def effective_data(D, U, R_D_star):
    """Effective data D' = U + U R_D* (1 - exp(-R_D / R_D*)), R_D = D/U - 1 (Muennighoff 2023, eq. 5)."""
    D = np.asarray(D, dtype=float)
    U = np.minimum(np.asarray(U, dtype=float), D)
    R = D / U - 1.0
    return U + U * R_D_star * (1.0 - np.exp(-R / R_D_star))


def data_constrained(N, D, U, E, A, B, alpha, beta, R_D_star, R_N_star):
    """Data-constrained surface of Muennighoff et al. 2023 (eq. 7): the Chinchilla form in
    effective parameters N' and effective data D' given U unique tokens (U = None: all of D
    is unique, and the law is Chinchilla's).

    >>> p = dict(E=np.exp(0.6254804), A=np.exp(6.255414), B=np.exp(7.3049974),
    ...          alpha=0.3526596, beta=0.3526596, R_D_star=15.387756, R_N_star=5.309743)
    >>> bool(data_constrained(1e9, 4e10, 1e10, **p) > data_constrained(1e9, 4e10, 4e10, **p))
    True
    """
    N = np.asarray(N, dtype=float)
    U = np.minimum(np.asarray(D if U is None else U, dtype=float), np.asarray(D, dtype=float))
    D_eff = effective_data(D, U, R_D_star)
    U_N = np.minimum(N, _unique_params(U, E, A, B, alpha, beta))
    R_N = N / U_N - 1.0
    N_eff = U_N + U_N * R_N_star * (1.0 - np.exp(-R_N / R_N_star))
    return chinchilla(N_eff, D_eff, E, A, B, alpha, beta)


def _floor_E(N, params):
    """The Chinchilla-type floor: E, at every N (the infimum over N and D too)."""
    E = np.asarray(params["E"], float)
    return np.broadcast_to(E, np.broadcast(np.asarray(N, float), E).shape)


def _floor_farseer(N, params):
    """Farseer's floor at N: exp(F(N)), the loss with unlimited data."""
    with np.errstate(all="ignore"):
        return np.exp(params["f0"] + params["f1"] * box_cox(np.asarray(N, float) / FARSEER_N_REF, params["f2"]))


#: smallest data exponent beta_n may reach at an allocated N: below it the data term barely decays, and an
#: isoFLOP line has no interior optimum
MIN_DATA_EXPONENT = 0.02


def _beta_n_optimum_ok(N, params):
    """beta_n's data exponent beta + kappa log10(N / 1e9) at least :data:`MIN_DATA_EXPONENT` at N."""
    with np.errstate(all="ignore"):
        e = np.asarray(params["beta"]) + np.asarray(params["kappa"]) * np.log10(np.asarray(N, float) / BETA_N_REF)
    return e >= MIN_DATA_EXPONENT


def law_floor(form, N, params):
    """The loss a law reaches at model size N with unlimited data (its floor): E for the Chinchilla
    type forms, exp(F(N)) for Farseer, 0 for forms without one (Kaplan). Parameters may be bootstrap
    columns broadcasting against N.

    >>> float(law_floor("chinchilla", 1e9, dict(E=1.8, A=1, B=1, alpha=.3, beta=.3)))
    1.8
    """
    law = get_form(form)
    if law.floor is None:
        return np.zeros(np.shape(N))
    return law.floor(N, params)


# --- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Form:
    """A loss law plus what fitting it needs.

    Parameters
    ----------
    name : registry key.
    func : the law, ``func(N, D, *variables, **params)``.
    variables : data variables beyond N and D that the law reads (e.g. ``("U",)``).
    log_params : parameters fitted as their logarithm (they must stay positive).
    bounds : (low, high) per parameter in natural units; missing means unbounded.
    defaults : values used when a parameter is held fixed by default (e.g. published R*).
    citation : where the law comes from.
    allocate : closed-form ``allocate(C, **params) -> (N, D)`` when one exists.
    floor : ``floor(N, params)``, the loss with unlimited data at N (None: 0); intervals never reach below it.
    optimum_ok : ``optimum_ok(N, params) -> bool array``, False where an allocated N is no optimum although
        the search found one (beta_n with its data exponent near 0); :meth:`optimal` counts it as an edge.
    """

    name: str
    func: Callable
    citation: str
    variables: tuple[str, ...] = ()
    log_params: frozenset = frozenset()
    bounds: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    allocate: Callable | None = None
    floor: Callable | None = None
    optimum_ok: Callable | None = None

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        skip = {"N", "D", *self.variables}
        return tuple(p for p in inspect.signature(self.func).parameters if p not in skip)

    def __call__(self, N, D, params: dict, **variables):
        # a data variable left out is passed as None (the law's own default, e.g. U = D)
        return self.func(N, D, *[variables.get(v) for v in self.variables], **params)

    # theta: the vector the optimiser sees (logs of the positive parameters)
    def to_theta(self, params: dict) -> np.ndarray:
        with np.errstate(divide="ignore"):  # a parameter at 0 (a degenerate refit) maps to -inf
            return self._to_theta(params)

    def _to_theta(self, params: dict) -> np.ndarray:
        return np.array(
            [np.log(params[p]) if p in self.log_params else params[p] for p in self.param_names],
            dtype=float,
        )

    def from_theta(self, theta) -> dict:
        return {
            p: float(np.exp(t)) if p in self.log_params else float(t)
            for p, t in zip(self.param_names, theta)
        }

    def theta_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = [], []
        for p in self.param_names:
            a, b = self.bounds.get(p, (-np.inf, np.inf))
            if p in self.log_params:
                a = np.log(a) if a > 0 else -np.inf
                b = np.log(b) if np.isfinite(b) else np.inf
            lo.append(a)
            hi.append(b)
        return np.array(lo), np.array(hi)

    def log_predict(self, theta, data: dict) -> np.ndarray:
        """log L at the data points for optimiser vector ``theta`` (data holds N, D, ...)."""
        with np.errstate(all="ignore"):
            return np.log(self(data["N"], data["D"], self.from_theta(theta),
                               **{v: data[v] for v in self.variables}))

    def optimal(self, C, params: dict, with_edge: bool = False, **variables):
        """Compute-optimal (N, D) at budgets C (C = 6 N D): the closed form when the law has one,
        else :func:`numeric_allocation`. Parameters may be arrays that broadcast against C
        (bootstrap samples as (B, 1) columns against C as (1, k)); so may the variables.
        With ``with_edge``, also a boolean array: True where the law has no interior optimum
        (the search ran to its edge, the closed form is not finite, or ``optimum_ok`` refuses it)."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if self.allocate is not None and not variables:
            N, D = self.allocate(C, **params)
            edge = ~(np.isfinite(N) & np.isfinite(D) & (N > 0) & (D > 0))
        else:
            grid_axis = lambda v: np.asarray(v, dtype=float)[..., None] if np.ndim(v) else v
            p = {k: grid_axis(v) for k, v in params.items()}
            var = {k: grid_axis(v) for k, v in variables.items()}
            N, D, edge = numeric_allocation(lambda N, D: self(N, D, p, **var), C, with_edge=True)
        if not with_edge:
            return N, D
        if self.optimum_ok is not None:
            edge = edge | ~np.broadcast_to(self.optimum_ok(N, params), np.shape(N))
        return N, D, edge


class _ChinchillaForm(Form):
    """Chinchilla with a stable log-sum-exp prediction and an analytic Jacobian."""

    @staticmethod
    def _terms(theta, data):
        e, a, b, alpha, beta = theta
        t = np.empty((3, len(data["logN"])))
        t[0] = a - alpha * data["logN"]
        t[1] = b - beta * data["logD"]
        t[2] = e
        m = t.max(axis=0)
        s = np.exp(t - m).sum(axis=0)
        return t, m + np.log(s)  # log(A N^-alpha + B D^-beta + E), stably

    def log_predict(self, theta, data):
        return self._terms(theta, data)[1]

    def log_jacobian(self, theta, data):
        t, lse = self._terms(theta, data)
        w = np.exp(t - lse)  # share of each term in the loss, (3, n)
        return np.column_stack([w[2], w[0], w[1], -w[0] * data["logN"], -w[1] * data["logD"]])

    def log_curvature(self, theta, data, c):
        """sum_i c_i Hess(log L_i) over theta = (log E, log A, log B, alpha, beta).

        log L is a log-sum-exp of three terms linear in theta (directions v_k), so
        Hess(log L_i) = sum_k w_ik v_k v_k^T - J_i J_i^T with w_ik the terms' shares.
        """
        t, lse = self._terms(theta, data)
        w = np.exp(t - lse)
        J = np.column_stack([w[2], w[0], w[1], -w[0] * data["logN"], -w[1] * data["logD"]])
        H = -(J * c[:, None]).T @ J
        lN, lD = data["logN"], data["logD"]
        cw0, cw1 = c * w[0], c * w[1]
        H[0, 0] += np.sum(c * w[2])
        H[1, 1] += cw0.sum()
        H[1, 3] -= (cw0 * lN).sum()
        H[3, 1] -= (cw0 * lN).sum()
        H[3, 3] += (cw0 * lN * lN).sum()
        H[2, 2] += cw1.sum()
        H[2, 4] -= (cw1 * lD).sum()
        H[4, 2] -= (cw1 * lD).sum()
        H[4, 4] += (cw1 * lD * lD).sum()
        return H


class _InteractionForm(Form):
    """The interaction form, with an analytic Jacobian of log L over (log E, log A, log B, alpha, beta):
    log L = log(E + u) + log(E + v) - log E with u = A N^-alpha, v = B D^-beta.

    Like Farseer's, its ``log_predict`` and ``log_jacobian`` also take a batch: theta of shape
    (p, B, 1) against data arrays of shape (B, n) give (B, n) and (B, n, p) (bootstrap refits)."""

    def log_predict(self, theta, data):
        e, a, b, alpha, beta = theta
        return (np.logaddexp(e, a - alpha * data["logN"]) + np.logaddexp(e, b - beta * data["logD"]) - e)

    def log_jacobian(self, theta, data):
        e, a, b, alpha, beta = theta
        with np.errstate(over="ignore"):  # exp -> inf gives a share of 0, as it should
            su = 1.0 / (1.0 + np.exp(e - a + alpha * data["logN"]))  # u / (E + u)
            sv = 1.0 / (1.0 + np.exp(e - b + beta * data["logD"]))   # v / (E + v)
        return np.stack([1.0 - su - sv, su, sv, -su * data["logN"], -sv * data["logD"]], axis=-1)


class _BetaNForm(Form):
    """beta_n with a stable log-sum-exp prediction and an analytic Jacobian over
    (log E, log A, log B, alpha, beta, kappa); like the interaction form's, its ``log_predict`` and
    ``log_jacobian`` also take a batch (theta (p, B, 1) against data (B, n)) for bootstrap refits."""

    @staticmethod
    def _terms(theta, data):
        e, a, b, alpha, beta, kappa = theta
        x = (data["logN"] - np.log(BETA_N_REF)) / np.log(10.0)
        t0 = a - alpha * data["logN"]
        t1 = b - (beta + kappa * x) * data["logD"]
        t2 = np.broadcast_to(e, np.shape(t0))
        m = np.maximum(np.maximum(t0, t1), t2)
        with np.errstate(all="ignore"):
            lse = m + np.log(np.exp(t0 - m) + np.exp(t1 - m) + np.exp(t2 - m))
        return t0, t1, t2, lse, x

    def log_predict(self, theta, data):
        return self._terms(theta, data)[3]

    def log_jacobian(self, theta, data):
        t0, t1, t2, lse, x = self._terms(theta, data)
        with np.errstate(all="ignore"):
            w0, w1, w2 = np.exp(t0 - lse), np.exp(t1 - lse), np.exp(t2 - lse)
        dl = -w1 * data["logD"]
        J = np.stack(np.broadcast_arrays(w2, w0, w1, -w0 * data["logN"], dl, dl * x), axis=-1)
        return np.where(np.isfinite(J), J, 0.0)


def _box_cox_dq(lx, q):
    """d/dq of (x^q - 1)/q at log x = lx, with its series near q = 0."""
    ql = q * lx
    small = np.abs(ql) < 1e-4
    with np.errstate(all="ignore"):
        exact = (ql * np.exp(ql) - np.expm1(ql)) / np.where(small, 1.0, q * q)
    return np.where(small, lx * lx * (0.5 + ql / 3.0), exact)


class _FarseerForm(Form):
    """Farseer with a stable log-sum-exp prediction and an analytic Jacobian."""

    @staticmethod
    def _parts(theta, data):
        f0, f1, f2, g0, g1, g2, h0, h1, h2 = theta
        ln = data["logN"] - np.log(FARSEER_N_REF)
        n = np.exp(ln)
        with np.errstate(all="ignore"):
            bf, bg, bh = box_cox(n, f2), box_cox(n, g2), box_cox(n, h2)
            H = np.exp(h0 + h1 * bh)
            t_floor = f0 + f1 * bf
            t_data = g0 + g1 * bg - H * data["logD"]
            lse = np.logaddexp(t_floor, t_data)
        return ln, bf, bg, bh, H, t_floor, t_data, lse

    def log_predict(self, theta, data):
        return self._parts(theta, data)[-1]

    def log_jacobian(self, theta, data):
        f0, f1, f2, g0, g1, g2, h0, h1, h2 = theta
        ln, bf, bg, bh, H, t_floor, t_data, lse = self._parts(theta, data)
        with np.errstate(all="ignore"):
            wf, wd = np.exp(t_floor - lse), np.exp(t_data - lse)  # shares of the two terms
            dh = -wd * data["logD"] * H                           # d log L / d log H
            J = np.stack(np.broadcast_arrays(wf, wf * bf, wf * f1 * _box_cox_dq(ln, f2),
                                             wd, wd * bg, wd * g1 * _box_cox_dq(ln, g2),
                                             dh, dh * bh, dh * h1 * _box_cox_dq(ln, h2)), axis=-1)
        return np.where(np.isfinite(J), J, 0.0)


def _chinchilla_allocate(C, E, A, B, alpha, beta):
    return chinchilla_allocation(C, A, B, alpha, beta)


def _kaplan_allocate(C, N_c, D_c, alpha_N, alpha_D):
    # minimise (N_c/N)^p + 6 D_c N / C over N, p = alpha_N/alpha_D:
    # N^(p+1) = p N_c^p C / (6 D_c)
    p = alpha_N / alpha_D
    with np.errstate(all="ignore"):  # a degenerate refit (a constant at 0) allocates 0 or inf
        N = np.power(p * np.power(N_c, p) * np.asarray(C, dtype=float) / (6.0 * D_c), 1.0 / (p + 1.0))
        return N, np.asarray(C, dtype=float) / (6.0 * N)


FORMS: dict[str, Form] = {}


def register_form(form: Form) -> Form:
    """Add a form to the registry (its name must be new) and return it."""
    if form.name in FORMS:
        raise ValueError(f"form: {form.name!r} is already registered")
    FORMS[form.name] = form
    return form


def get_form(name: str | Form) -> Form:
    """Look up a registered form by name.

    >>> get_form("chinchilla").param_names
    ('E', 'A', 'B', 'alpha', 'beta')
    """
    if isinstance(name, Form):
        return name
    if name not in FORMS:
        from .errors import InputError
        raise InputError(f"form: must be one of {sorted(FORMS)}, or 'auto' (chosen by backtests); got {name!r}")
    return FORMS[name]


EXPONENT_BOUNDS = (0.0, 3.0)
# floors on the positive parameters keep the optimiser from drifting to log 0 on data that do
# not see a term: a fit that ends on a floor says so (status "at_bound")
TERM_BOUNDS = {"E": (1e-6, np.inf), "A": (1e-10, np.inf), "B": (1e-10, np.inf)}

register_form(_ChinchillaForm(
    name="chinchilla",
    func=chinchilla,
    citation="Hoffmann et al. 2022, arXiv:2203.15556, eq. 2",
    log_params=frozenset({"E", "A", "B"}),
    bounds={"alpha": EXPONENT_BOUNDS, "beta": EXPONENT_BOUNDS, **TERM_BOUNDS},
    allocate=_chinchilla_allocate,
    floor=_floor_E,
))
register_form(Form(
    name="kaplan",
    func=kaplan,
    citation="Kaplan et al. 2020, arXiv:2001.08361, eq. 1.5",
    log_params=frozenset({"N_c", "D_c", "alpha_N", "alpha_D"}),
    bounds={"alpha_N": (1e-4, 3.0), "alpha_D": (1e-4, 3.0)},
    allocate=_kaplan_allocate,
))
register_form(Form(
    name="data_constrained",
    func=data_constrained,
    citation="Muennighoff et al. 2023, arXiv:2305.16264, eq. 7",
    variables=("U",),
    log_params=frozenset({"E", "A", "B", "R_D_star", "R_N_star"}),
    bounds={"alpha": EXPONENT_BOUNDS, "beta": EXPONENT_BOUNDS,
            "R_D_star": (0.1, 1e3), "R_N_star": (0.1, 1e3)},
    defaults={"R_D_star": 15.387756, "R_N_star": 5.309743},
    floor=_floor_E,
))

register_form(_BetaNForm(
    name="beta_n",
    func=beta_n,
    citation="Chinchilla with a data exponent beta + kappa log10(N / 1e9): Farseer's size-dependent data "
             "exponent (Li et al. 2025, arXiv:2506.10972) with one parameter (this toolkit)",
    log_params=frozenset({"E", "A", "B"}),
    # kappa within +-0.3 per decade: beyond it the data exponent leaves [0, 3] within a few decades
    bounds={"alpha": EXPONENT_BOUNDS, "beta": EXPONENT_BOUNDS, "kappa": (-0.3, 0.3), **TERM_BOUNDS},
    floor=_floor_E,
    optimum_ok=_beta_n_optimum_ok,
))

FARSEER_EXPONENT_BOUNDS = (-1.5, 1.5)
register_form(_FarseerForm(
    name="farseer",
    func=farseer,
    citation="Li et al. 2025 (Farseer), arXiv:2506.10972",
    # the floor's curvature f2 <= 0: a floor that falls faster than a power law in N (f2 > 0) fits
    # a sweep as well but sends the compute-optimal N to infinity beyond it
    # likewise g2, h2 <= 0: with g2 > 0 (h2 > 0) the data coefficient (exponent) can fall without
    # limit in N, so the loss along an isoFLOP line keeps falling as N grows and the compute-optimal
    # N runs to infinity (fitted on Farseer's runs below 3e19 FLOPs, g2 = 0.18 and h2 = 0.27 did)
    bounds={"f2": (FARSEER_EXPONENT_BOUNDS[0], 0.0), "g2": (FARSEER_EXPONENT_BOUNDS[0], 0.0),
            "h2": (FARSEER_EXPONENT_BOUNDS[0], 0.0)},
    floor=_floor_farseer,
))
register_form(_InteractionForm(
    name="interaction",
    func=interaction,
    citation="Chinchilla's terms multiplied, (E + A/N^alpha)(E + B/D^beta)/E: an N-D interaction term "
             "with no new parameter (this toolkit)",
    log_params=frozenset({"E", "A", "B"}),
    bounds={"alpha": EXPONENT_BOUNDS, "beta": EXPONENT_BOUNDS, **TERM_BOUNDS},
    floor=_floor_E,
))
