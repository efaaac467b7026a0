"""Reading and validating results tables: the boundary between user data and the fitters."""
from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["InputError", "read_table", "final_rows", "surface_data", "budget_groups", "budget_of"]


def read_table(source: pd.DataFrame | str | PathLike, name: str = "df") -> pd.DataFrame:
    """Return a DataFrame from a DataFrame, a CSV path or an MLflow experiment
    (``mlflow:<tracking uri>#<experiment>``, see ``fits.tracking``), with a clear error when unreadable."""
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, str) and source.startswith("mlflow:"):
        from .tracking import read_mlflow

        return read_mlflow(source)
    if isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name}: expected a readable CSV file; no file at {str(path)!r}")
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise InputError(f"{name}: could not read {str(path)!r} as CSV ({exc})") from None
    raise InputError(f"{name}: expected a pandas DataFrame or a CSV path; got {type(source).__name__}")


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The end-of-cooldown rows of a probe table with a ``final`` column (booleans, or their text
    from a CSV or MLflow); a table without one is returned as it is."""
    if "final" not in df.columns:
        return df
    return df[df["final"].astype(str).str.lower().isin(["true", "1", "1.0"])]


def _positive_column(df: pd.DataFrame, col: str, param: str) -> np.ndarray:
    if col not in df.columns:
        raise InputError(
            f"{param}: column {col!r} not found in the table; columns are {list(df.columns)}"
        )
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{param}: column {col!r} must hold finite positive numbers; "
            f"{int(bad.sum())} row(s) do not, first at data row {i + 1} (line {i + 2} of a CSV with a header; "
            f"value {df[col].iloc[i]}); drop or fix the row"
        )
    return values


def surface_data(
    source,
    n: str = "params",
    d: str | None = "tokens",
    loss: str = "loss",
    flops: str | None = None,
    extra: dict[str, str] | None = None,
    min_points: int = 1,
    drop_diverged: bool = True,
    check_units: bool = True,
) -> pd.DataFrame:
    """Validate a results table and return a tidy frame with columns N, D, C, loss (+ extras).

    Tokens come from ``d`` or, when ``d`` is None, from ``flops`` as D = C / (6 N). A table with a
    ``final`` column (a probe export, or an MLflow experiment read back) keeps its final rows only:
    mid-run evaluations are not points of the law. Rows flagged ``diverged`` (a boolean column of that name) are dropped when asked.

    >>> import pandas as pd
    >>> t = surface_data(pd.DataFrame({"params": [1e6, 2e6], "tokens": [1e8, 1e8], "loss": [3.0, 2.9]}))
    >>> list(t.columns)
    ['N', 'D', 'C', 'loss']
    """
    df = read_table(source)
    if len(df) == 0:
        raise InputError("df: the results table is empty")
    df = final_rows(df)  # a probe export with every evaluation: mid-run rows are not (N, D, loss) points
    if drop_diverged and "diverged" in df.columns:
        df = df[~df["diverged"].fillna(False).astype(bool)]
    out = pd.DataFrame({"N": _positive_column(df, n, "n")})
    if d is not None and d in df.columns:
        out["D"] = _positive_column(df, d, "d")
    elif flops is not None:
        c = _positive_column(df, flops, "flops")
        out["D"] = c / (6.0 * out["N"].to_numpy())
    else:
        raise InputError(
            f"d: column {d!r} not found and no flops column given; columns are {list(df.columns)}"
        )
    out["C"] = 6.0 * out["N"] * out["D"]
    if flops is None and "flops" in df.columns:  # the runs' own FLOPs label their isoFLOP budgets
        real = pd.to_numeric(df["flops"], errors="coerce").to_numpy(dtype=float)
        if np.all(np.isfinite(real) & (real > 0)):
            out["budget"] = real
    out["loss"] = _positive_column(df, loss, "loss")
    for key, col in (extra or {}).items():
        out[key] = _positive_column(df, col, key)
    if check_units:
        _check_units(out)
    if len(out) < min_points:
        raise InputError(
            f"df: need at least {min_points} usable rows (one more than the parameters fitted); "
            f"got {len(out)}"
        )
    return out.reset_index(drop=True)


#: the plausible ranges a results table is checked against (see :func:`check_units`)
TOKENS_PER_PARAM = (0.01, 1e5)
MIN_PARAMS = 1000.0
LOSS_RANGE_NATS = (0.1, math.log(262144) + 1.0)  # uniform guessing over a 256k vocabulary, plus 1


def _check_units(frame: pd.DataFrame) -> None:
    """Fail, naming the likely mistake, when N, D or the loss are not in the units the laws take:
    parameter and token counts (not millions or billions), and a loss in nats or bits (not a
    perplexity or an accuracy)."""
    n, d, loss = frame["N"].to_numpy(), frame["D"].to_numpy(), frame["loss"].to_numpy()
    if n.max() < MIN_PARAMS:
        raise InputError(f"n: the largest N is {n.max():g} parameters; N looks like it is in millions or billions "
                         f"(a 12.5M model is 12500000); give the count of parameters")
    tpp = float(np.median(d / n))
    if tpp > TOKENS_PER_PARAM[1]:
        raise InputError(f"n: the runs train a median {tpp:.3g} tokens per parameter (plausible: "
                         f"{TOKENS_PER_PARAM[0]:g}-{TOKENS_PER_PARAM[1]:.0e}); N looks like it is in thousands or millions "
                         "of parameters; give the count of parameters")
    if tpp < TOKENS_PER_PARAM[0]:
        raise InputError(f"d: the runs train a median {tpp:.3g} tokens per parameter (plausible: "
                         f"{TOKENS_PER_PARAM[0]:g}-{TOKENS_PER_PARAM[1]:.0e}); D looks like it is in millions or billions "
                         "of tokens; give the count of tokens")
    lo, hi = LOSS_RANGE_NATS
    mid = float(np.median(loss))
    if mid < lo:
        raise InputError(f"loss: the median loss is {mid:g} (plausible: {lo:g}-{hi:.3g}); it looks like an accuracy "
                         "or a normalised score, not a cross-entropy; give the loss column")
    if mid > hi:
        raise InputError(f"loss: the median loss is {mid:g}, above log(vocabulary) + 1 = {hi:.3g} for any vocabulary "
                         "up to 256k; it looks like a perplexity: give its log (the cross-entropy)")


def budget_of(frame: pd.DataFrame) -> np.ndarray:
    """The compute that labels each run's isoFLOP budget: the table's own ``flops`` column when it
    has one (a probe export counts attention and readout), else C = 6 N D. With N counted as
    non-embedding parameters, 6ND differs across widths at one real budget."""
    return (frame["budget"] if "budget" in frame.columns else frame["C"]).to_numpy()


def budget_groups(flops: np.ndarray, width_decades: float = 0.25, tol_decades: float = 0.02) -> np.ndarray:
    """Label points by compute budget, 0, 1, ... in increasing compute.

    Sweeps planned at fixed budgets are grouped exactly: runs whose log10 FLOPs lie within
    ``tol_decades`` of a neighbour share a budget. When that chains into a group wider than
    ``width_decades``, or most groups hold fewer than three runs (budgets that vary
    continuously, as in data read off a figure), log10 FLOPs are binned into bins
    ``width_decades`` wide instead.

    >>> budget_groups(np.array([1e18, 1.01e18, 1.02e18, 1e19, 1.01e19, 1.02e19])).tolist()
    [0, 0, 0, 1, 1, 1]
    """
    logc = np.log10(np.asarray(flops, dtype=float))
    order = np.argsort(logc, kind="stable")
    jumps = np.diff(logc[order]) > tol_decades
    labels_sorted = np.concatenate([[0], np.cumsum(jumps)])
    starts = np.concatenate([[0], np.flatnonzero(jumps) + 1])
    ends = np.concatenate([np.flatnonzero(jumps), [len(logc) - 1]])
    sizes = ends - starts + 1
    if np.max(logc[order][ends] - logc[order][starts]) > width_decades or np.median(sizes) < 3:
        bins = np.floor(logc / width_decades + 0.5)
        return np.unique(bins, return_inverse=True)[1].astype(int)
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels.astype(int)


# --- what a table says about its runs: seed noise, bootstrap groups, loss unit, N, shape family ---

def _run_noise(table, n: str, d: str | None, loss: str, given: float | None):
    """(sd of log loss between seeds, where it comes from), or (None, None) when unmeasured."""
    if given is not None:
        if not (isinstance(given, (int, float)) and math.isfinite(given) and given >= 0):
            raise InputError(f"run_noise: must be a non-negative number (sd of log loss); got {given!r}")
        return float(given), "given"
    if "seed" not in table.columns or d is None or d not in table.columns or table["seed"].nunique() < 2:
        return None, None
    t = table
    if "diverged" in t.columns:
        t = t[~t["diverged"].fillna(False).astype(bool)]
    t = t.assign(_logl=np.log(t[loss].astype(float)))
    cells = t.groupby([n, d])
    dev = cells["_logl"].transform(lambda v: v - v.mean())
    dof = int((cells["_logl"].transform("size") > 1).sum() - (cells.size() > 1).sum())
    if dof < 2:
        return None, None
    sd = float(np.sqrt(np.sum(dev.to_numpy() ** 2) / dof))
    return sd, f"pooled over {int((cells.size() > 1).sum())} cells repeated with other seeds"


def _group_column(table, group) -> str | None:
    if group == "auto":
        return "run_id" if "run_id" in table.columns else None
    if group is not None and group not in table.columns:
        raise InputError(f"group: column {group!r} not found; columns are {list(table.columns)}")
    return group


def _group_labels(table, group, frame) -> np.ndarray:
    """Bootstrap group of every fitted row (rows dropped as diverged are dropped here too)."""
    import pandas as pd

    col = _group_column(table, group)
    if col is None:
        return np.arange(len(frame))
    g = table[col]
    if "diverged" in table.columns:
        g = g[~table["diverged"].fillna(False).astype(bool)]
    return pd.factorize(g.to_numpy())[0][: len(frame)]


def _loss_unit(table, loss: str) -> str:
    """The loss unit a table's columns tell: bits per byte for a ``*bpb`` column, nats per token on the
    probes' corpus and tokenizer for a probe export, else unspecified."""
    low = loss.lower()
    if "bpb" in low or "bits_per_byte" in low or "bits-per-byte" in low:
        return "bits per byte"
    if "bits" in low or "bpc" in low:
        return "bits per " + ("character" if "bpc" in low or "char" in low else "token")
    one = lambda c: (c in table.columns and table[c].nunique() == 1) and str(table[c].iloc[0])
    if one("tokenizer"):
        parts = [f"{one('corpus')} corpus" if one("corpus") else None, f"{one('tokenizer')} tokenizer",
                 f"vocab {one('vocab_size')}" if one("vocab_size") else None]
        return "nats per token (" + ", ".join(p for p in parts if p) + ")"
    return "an unspecified unit"


N_KINDS = ("non_embedding", "total", "unspecified")


def _n_definition(table, n: str, n_kind: str | None) -> dict:
    """Which parameter count the fit's N is (see ``fit_loss_surface``'s ``n_kind``)."""
    if n_kind is not None and n_kind not in N_KINDS:
        raise InputError(f"n_kind: must be one of {list(N_KINDS)}; got {n_kind!r}")
    if n_kind is None:
        probe = {"params", "params_total"} <= set(table.columns)
        n_kind = ({"params": "non_embedding", "params_total": "total"}.get(n, "unspecified")
                  if probe else "unspecified")
    out = {"kind": n_kind}
    if "vocab_size" in table.columns and table["vocab_size"].nunique() == 1:
        out["vocab_size"] = int(table["vocab_size"].iloc[0])
    return out


def _n_words(nd: dict) -> str:
    kind = nd.get("kind", "unspecified")
    vocab = f" at vocabulary {nd['vocab_size']}" if "vocab_size" in nd else ""
    return {"non_embedding": "non-embedding parameters (embeddings and readout excluded)",
            "total": f"total parameters (embeddings and readout included){vocab}",
            }.get(kind, "unspecified (read as total parameters, Chinchilla's convention)")


_FAMILY_COLUMNS = ("depth", "d_head", "kv_heads", "ffn_ratio", "vocab_size", "seq_len", "base_width", "base_depth",
                   "batch_size", "lr", "warmup_steps", "weight_decay", "eval_batches", "parametrization", "corpus",
                   "tokenizer")


def _shape_family(table) -> dict | None:
    """The probes' fixed shape settings when the table is a probe export (one depth, vocabulary
    and sequence length across its rows), else None."""
    need = {"width", "depth", "vocab_size", "seq_len"}
    if not need <= set(table.columns):
        return None
    fam = {}
    for c in _FAMILY_COLUMNS:
        if c in table.columns:
            vals = table[c].dropna().unique()
            if len(vals) != 1:
                if c in ("depth", "vocab_size", "seq_len"):
                    return None
                continue
            v = vals[0]
            fam[c] = v.item() if hasattr(v, "item") else v
    if "n_heads" in table.columns and "d_head" not in fam:
        dh = (table["width"] / table["n_heads"]).unique()
        if len(dh) == 1:
            fam["d_head"] = int(dh[0])
    return fam
