"""Fuzzing the commands with hypothesis: every input is answered with success (exit 0) or one
line naming the problem (exit 2), never a traceback, and an existing output file is never
replaced by a failed run."""
import math
import string

import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fits.cli import main as fit_main
from planner.cli import main as plan_main

OLD = "previous contents\n"
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.sampled_from(["1e21", "1e300", "-5", "0", "nan", "inf", "1e19:1e24:11", "1e24:1e19:3",
                                     "1e19:1e24:0", "abc", "", "1e21:", "2000"]))


def _text(v) -> str:
    return v if isinstance(v, str) else repr(v) if isinstance(v, float) and not math.isfinite(v) else str(v)


def _check(result, out_file):
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, result.output
        assert out_file.read_text() == OLD


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=numbers, unit=st.sampled_from(["flops", "gpu-hours", "usd", "watts"]),
       preset=st.sampled_from([None, "besiroglu2024", "kaplan2020", "muennighoff2023", "nope"]),
       gpu=st.sampled_from([None, "h100", "a100", "tpu-v5e", "gtx", ""]),
       mfu=st.sampled_from([None, "0.4", "0", "-1", "2", "nan"]),
       level=st.sampled_from([None, "0.9", "1", "0", "x"]),
       extra=st.sampled_from([[], ["--inference-tokens", "2e12"], ["--unique-tokens", "1e9"],
                              ["--inference-tokens", "-3"], ["--unique-tokens", "nan"], ["--price-per-hour", "2.5"]]))
def test_fuzz_plan(tmp_path, budget, unit, preset, gpu, mfu, level, extra):
    out = tmp_path / "plan.csv"
    out.write_text(OLD)
    args = ["--budget", _text(budget), "--unit", unit, "--out", str(out)]
    for flag, v in (("--preset", preset), ("--gpu", gpu), ("--mfu", mfu), ("--level", level)):
        if v is not None:
            args += [flag, v]
    _check(CliRunner().invoke(plan_main, args + extra), out)


def _table(kind: str, rng) -> bytes:
    N = np.repeat([1e6, 3e6, 1e7, 3e7], 4)
    D = np.tile([1e8, 3e8, 1e9, 3e9], 4)
    loss = 1.8 + 400 / N**0.34 + 2000 / D**0.36
    df = pd.DataFrame({"params": N, "tokens": D, "loss": loss})
    if kind == "empty":
        return b""
    if kind == "header":
        return b"params,tokens,loss\n"
    if kind == "nan":
        df.loc[rng.integers(len(df)), "loss"] = np.nan
    if kind == "negative":
        df.loc[rng.integers(len(df)), "tokens"] = -1
    if kind == "duplicate":
        df = pd.concat([df, df])
    if kind == "text":
        df["loss"] = df["loss"].astype(object)
        df.loc[0, "loss"] = "many"
    if kind == "huge":
        df["loss"] = df["loss"] * 1e300
    if kind == "one_size":
        df["params"] = 1e6
    if kind == "binary":
        return bytes(rng.integers(0, 256, 200, dtype=np.uint8))
    if kind == "missing_column":
        df = df.drop(columns=["tokens"])
    return df.to_csv(index=False).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["ok", "empty", "header", "nan", "negative", "duplicate", "text", "huge", "one_size",
                             "binary", "missing_column"]),
       form=st.sampled_from(["chinchilla", "auto", "kaplan", "farseer", "unknown"]),
       bootstrap=st.sampled_from(["0", "10", "-1", "x"]), seed=st.sampled_from(["0", "-5", "3"]),
       name=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8), rnd=st.integers(0, 10**6))
def test_fuzz_fit(tmp_path, kind, form, bootstrap, seed, name, rnd):
    src = tmp_path / f"{name}.csv"
    src.write_bytes(_table(kind, np.random.default_rng(rnd)))
    out = tmp_path / "fit.json"
    out.write_text(OLD)
    r = CliRunner().invoke(fit_main, [str(src), "--form", form, "--bootstrap", bootstrap, "--seed", seed,
                                      "--out", str(out)])
    _check(r, out)
    if kind == "ok" and form in ("chinchilla", "kaplan") and bootstrap in ("0", "10") and seed != "-5":
        assert r.exit_code == 0, r.output


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.sampled_from(["", "{", "[]", '{"schema": "x"}', '{"schema": "scaling-planner/loss-surface-fit"}',
                                '{"schema": "scaling-planner/loss-surface-fit", "form": "chinchilla", "params": {}}']),
       budget=st.sampled_from(["1e21", "1e19:1e22:3"]))
def test_fuzz_plan_with_corrupt_fit_files(tmp_path, content, budget):
    fit = tmp_path / "fit.json"
    fit.write_text(content)
    out = tmp_path / "plan.csv"
    out.write_text(OLD)
    r = CliRunner().invoke(plan_main, ["--budget", budget, "--fit", str(fit), "--out", str(out)])
    assert r.exit_code == 2
    _check(r, out)
