"""Probe results in MLflow: every evaluation row of every probe run logged to an experiment, and
read back as the same table `probe export` writes.

One MLflow run per probe run (run name and tag ``probe_key``: the config key). Every numeric field
of a row is a metric whose step is the row's index in the run's ``metrics.jsonl`` (``phase`` as
``phase_index`` into ``PHASES``); text fields are one JSON tag, and the main settings are params
for the UI. Logging is a sync from the run
store, which stays the source of truth: it appends only the rows an MLflow run does not have yet
(tag ``rows_logged``), so it can be repeated after every sweep, or after a crash, without
duplicating a row. Reading back needs no file from the store.

Sources are written ``mlflow:<tracking uri>#<experiment>``, e.g.
``mlflow:sqlite:///runs/mlflow.db#probes`` (the embedded SQLite store) or
``mlflow:http://mlflow.internal:5000#probes``.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from .errors import InputError

__all__ = ["PHASES", "log_rows", "read_mlflow", "parse_source", "default_uri"]

PHASES = ("stable", "cooldown", "end", "target")
_PARAMS = ("width", "depth", "lr", "batch_tokens", "seed", "weight_decay", "parametrization", "base_width",
           "seq_len", "schedule", "corpus")


def _mlflow():
    import logging

    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("mlflow: not installed; install the 'tracking' extra: pip install -e \".[tracking]\"") from None
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):  # no INFO lines on the terminal
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow, MlflowClient


def default_uri(out) -> str:
    """The embedded SQLite tracking store of a run directory."""
    from pathlib import Path

    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def parse_source(source: str) -> tuple[str, str]:
    """(tracking uri, experiment) of ``mlflow:<uri>#<experiment>``."""
    body = source[len("mlflow:"):]
    uri, sep, experiment = body.rpartition("#")
    if not sep or not uri or not experiment:
        raise InputError(f"results: an MLflow source is mlflow:<tracking uri>#<experiment>, e.g. "
                         f"mlflow:sqlite:///runs/mlflow.db#probes; got {source!r}")
    return uri, experiment


def _numeric(v) -> bool:
    return v is None or isinstance(v, (int, float, bool))


def log_rows(key: str, rows: list[dict], uri: str, experiment: str) -> int:
    """Log the rows of probe run ``key`` that its MLflow run does not have yet; returns how many.
    Numeric and boolean fields are metrics (step: the row's index), text fields one JSON tag (the
    first row's: a run resumed on another machine keeps its first device name), ``phase`` a metric
    ``phase_index``."""
    if not rows:
        return 0
    _, MlflowClient = _mlflow()
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.probe_key = '{key}'", max_results=1)
    if found:
        run_id, done = found[0].info.run_id, int(found[0].data.tags.get("rows_logged", "0"))
        ints = set(json.loads(found[0].data.tags.get("probe_int_fields", "[]")))
    else:
        first = rows[0]
        text = {k: v for k, v in first.items() if not _numeric(v) and k != "phase"}
        run_id = client.create_run(exp_id, run_name=key, tags={"probe_key": key}).info.run_id
        client.log_batch(run_id, params=[Param(k, str(first[k])) for k in _PARAMS if k in first],
                         tags=[RunTag("probe_text", json.dumps(text))])
        done, ints = 0, set()
    metrics = []
    for i, r in enumerate(rows[done:], start=done):
        for k, v in r.items():
            if k == "phase":
                metrics.append(Metric("phase_index", float(PHASES.index(v) if v in PHASES else -1), 0, i))
            elif _numeric(v):
                metrics.append(Metric(k, float("nan") if v is None else float(v), 0, i))
                if isinstance(v, int) and not isinstance(v, bool):
                    ints.add(k)
                elif isinstance(v, bool):
                    ints.add(f"bool:{k}")
    for j in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[j:j + 900])
    client.set_tag(run_id, "probe_int_fields", json.dumps(sorted(ints)))
    client.set_tag(run_id, "rows_logged", str(len(rows)))
    return len(rows) - done


def read_mlflow(source: str) -> pd.DataFrame:
    """The results table of every probe run logged to ``mlflow:<uri>#<experiment>``."""
    uri, experiment = parse_source(source)
    _, MlflowClient = _mlflow()
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:  # noqa: BLE001 - an unreachable server or a bad URI: one line, not a traceback
        raise InputError(f"results: cannot read MLflow at {uri!r} ({type(exc).__name__}: {exc})") from None
    if exp is None:
        raise InputError(f"results: no MLflow experiment {experiment!r} at {uri!r}")
    frames = []
    for run in client.search_runs([exp.experiment_id], filter_string="tags.probe_key != ''", max_results=50000):
        tags = run.data.tags
        n = int(tags.get("rows_logged", "0"))
        if not n:
            continue
        text = json.loads(tags.get("probe_text", "{}"))
        kinds = set(json.loads(tags.get("probe_int_fields", "[]")))
        cols = {}
        for name in run.data.metrics:  # search_runs carries each run's metric names
            vals = [math.nan] * n
            for m in client.get_metric_history(run.info.run_id, name):
                if 0 <= m.step < n:
                    vals[m.step] = m.value
            if name == "phase_index":
                cols["phase"] = [PHASES[int(v)] if v == v and 0 <= int(v) < len(PHASES) else None for v in vals]
            elif f"bool:{name}" in kinds:
                cols[name] = [bool(v) if v == v else None for v in vals]
            elif name in kinds and all(v == v for v in vals):
                cols[name] = [int(v) for v in vals]
            else:
                cols[name] = vals
        frame = pd.DataFrame(cols)
        for k, v in text.items():
            frame[k] = [v] * n
        frames.append(frame)
    if not frames:
        raise InputError(f"results: MLflow experiment {experiment!r} at {uri!r} holds no probe rows")
    return pd.concat(frames, ignore_index=True)
