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
    "Form",
    "FORMS",
    "get_form",
    "register_form",
    "chinchilla_allocation",
    "effective_data",
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


def chinchilla_allocation(C, A, B, alpha, beta, flops_per_param_token: float = 6.0):
    """Closed-form compute-optimal (N, D) of the Chinchilla surface under C = 6 N D.

    G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^(beta/(alpha+beta)),
    D = (C/6) / N (Hoffmann et al. 2022, eq. 4).

    >>> n, d = chinchilla_allocation(5.88e23, 482.01, 2085.43, 0.3478, 0.3658)
    >>> f"{n:.3g} {d:.4g}"
    '7.3e+10 1.342e+12'
    """
    C = np.asarray(C, dtype=float)
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
    """

    name: str
    func: Callable
    citation: str
    variables: tuple[str, ...] = ()
    log_params: frozenset = frozenset()
    bounds: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    allocate: Callable | None = None

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        skip = {"N", "D", *self.variables}
        return tuple(p for p in inspect.signature(self.func).parameters if p not in skip)

    def __call__(self, N, D, params: dict, **variables):
        # a data variable left out is passed as None (the law's own default, e.g. U = D)
        return self.func(N, D, *[variables.get(v) for v in self.variables], **params)

    # theta: the vector the optimiser sees (logs of the positive parameters)
    def to_theta(self, params: dict) -> np.ndarray:
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

    def optimal(self, C, params: dict, **variables) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N, D) at budgets C (C = 6 N D), closed form when known."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if self.allocate is not None and not variables:
            return self.allocate(C, **params)
        from scipy.optimize import minimize_scalar
        Ns = np.empty_like(C)
        var = {k: np.broadcast_to(np.asarray(v, dtype=float), C.shape) for k, v in variables.items()}
        for i, c in enumerate(C):
            vi = {k: v[i] for k, v in var.items()}

            def obj(logn, c=c, vi=vi):
                n = np.exp(logn)
                return float(self(n, c / (6.0 * n), params, **vi))

            mid = 0.5 * np.log(c / 6.0)  # N = D: the optimum lies within ~5 decades of it
            res = minimize_scalar(obj, bounds=(max(0.0, mid - 12.0), min(2 * mid, mid + 12.0)),
                                  method="bounded", options={"xatol": 1e-7})
            Ns[i] = np.exp(res.x)
        return Ns, C / (6.0 * Ns)


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


def _chinchilla_allocate(C, E, A, B, alpha, beta):
    return chinchilla_allocation(C, A, B, alpha, beta)


def _kaplan_allocate(C, N_c, D_c, alpha_N, alpha_D):
    # minimise (N_c/N)^p + 6 D_c N / C over N, p = alpha_N/alpha_D:
    # N^(p+1) = p N_c^p C / (6 D_c)
    p = alpha_N / alpha_D
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
        raise InputError(f"form: must be one of {sorted(FORMS)}; got {name!r}")
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
))
