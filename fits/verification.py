"""Scoring a fit against runs it has not seen: the predicted loss and its interval against the
realised loss, run by run."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._data import final_rows, read_table, surface_data
from .errors import InputError

__all__ = ["verify"]


def verify(fit, realised, n: str | None = None, d: str | None = None, loss: str | None = None,
           level: float = 0.9) -> pd.DataFrame:
    """One row per realised run: N, D, the predicted loss with its ``level`` prediction interval,
    the realised loss, whether it lies inside, the relative error, and the error in units of the
    interval's half-width on that side (|z| <= 1 is inside).

    Column names default to those the fit was made with (``fit.options["columns"]``). A probe
    export contributes its end-of-cooldown rows only (``final``).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from fits import fit_loss_surface
    >>> law = lambda n, d: 1.5 + 30 / n ** 0.3 + 300 / d ** 0.3
    >>> N, D = (a.ravel() for a in np.meshgrid(np.logspace(6, 7, 4), np.logspace(8, 9, 4)))
    >>> fit = fit_loss_surface(pd.DataFrame({"params": N, "tokens": D, "loss": law(N, D)}), bootstrap=50)
    >>> v = verify(fit, pd.DataFrame({"params": [2e7], "tokens": [2e9], "loss": [law(2e7, 2e9)]}))
    >>> bool(abs(v["rel_error"][0]) < 0.001)
    True
    """
    cols = (fit.options.get("columns") or {})
    n = n or cols.get("n") or "params"
    d = d or cols.get("d") or "tokens"
    loss = loss or cols.get("loss") or "loss"
    table = read_table(realised, "realised")
    table = final_rows(table)
    if len(table) == 0:
        raise InputError("realised: no final rows to verify")
    frame = surface_data(table, n=n, d=d, loss=loss)
    if not fit.n_bootstrap:
        raise InputError("fit: verify needs a fit with bootstrap samples (for its interval)")
    pred, lo, hi = fit.interval(frame["N"].to_numpy(), frame["D"].to_numpy(), level=level)
    obs = frame["loss"].to_numpy()
    half = np.where(obs >= pred, hi - pred, pred - lo)
    out = pd.DataFrame({"N": frame["N"], "D": frame["D"], "C": frame["C"], "predicted": pred,
                        "low": lo, "high": hi, "realised": obs,
                        "inside": (obs >= lo) & (obs <= hi), "rel_error": (pred - obs) / obs,
                        "z": (obs - pred) / np.where(half > 0, half, np.nan),
                        "decades_beyond_fit": fit.decades_beyond_fit(frame["C"].to_numpy())})
    for extra in ("run_id", "width", "seed"):
        if extra in table.columns:
            out.insert(0, extra, table[extra].to_numpy()[: len(out)])
    out.attrs["level"] = level
    return out
