"""plan --emit-config: the files a training team launches from, checked by the libraries that read them."""
import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fits import load_fit
from planner import make_plan
from planner.cli import main as plan_cli
from planner.export import EXPORT_FILES, recipe, torchtitan_ffn, write_config_dir

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REF_FIT = Path(__file__).resolve().parents[1] / "data" / "reference" / "probes_default_cpu_fit.json"


def _emit(tmp_path, *args):
    out = tmp_path / "cfg"
    res = CliRunner().invoke(plan_cli, ["--emit-config", str(out), "-q", *map(str, args)])
    assert res.exit_code == 0, res.output
    return out


def _meta_build(path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return cfg, model


def test_emit_config_round_trips_and_builds_at_the_planned_size(tmp_path):
    out = _emit(tmp_path, "--budget", "1e21")
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    rec = json.loads((out / "recipe.json").read_text())
    cfg, model = _meta_build(out)
    assert type(cfg).__name__ == "LlamaConfig" and cfg.num_key_value_heads == 8
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(rec["model"]["params"], rel=1e-3)
    # FLOPs per token: 6 x every matrix a token passes through (embedding lookup aside) + attention
    torch = pytest.importorskip("torch")
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    s = rec["model"]
    attention = 6 * s["n_layers"] * s["seq_len"] * s["n_heads"] * s["d_head"]
    assert 6 * matmul + attention == pytest.approx(s["flops_per_token"], rel=1e-12)
    # the YAML says what the JSON says; the schedule adds up; the tokens cover the plan
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == rec
    sched = rec["schedule"]
    assert sched["warmup_steps"] + sched["stable_steps"] + sched["decay_steps"] == sched["total_steps"]
    assert rec["tokens"] >= rec["planned_tokens"] and rec["batch"]["tokens"] == rec["batch"]["sequences"] * s["seq_len"]
    assert rec["prediction"]["low"] < rec["prediction"]["loss"] < rec["prediction"]["high"]


def test_emit_config_of_a_serving_plan_is_the_inference_aware_model(tmp_path):
    out = _emit(tmp_path, "--budget", "1e21", "--inference-tokens", "1e12")
    chosen = make_plan(budget=1e21, inference_tokens=1e12)
    assert json.loads((out / "recipe.json").read_text())["model"]["params"] == chosen.shape.params


def test_torchtitan_files(tmp_path):
    out = _emit(tmp_path, "--budget", "3e22")
    job = tomllib.loads((out / "torchtitan.toml").read_text())
    rec = json.loads((out / "recipe.json").read_text())
    assert job["model"] == {"name": "llama3", "flavor": "planned"}
    assert job["training"]["steps"] == rec["schedule"]["total_steps"]
    assert job["training"]["global_batch_size"] == rec["batch"]["sequences"]
    assert job["lr_scheduler"]["warmup_steps"] == rec["schedule"]["warmup_steps"]
    assert job["optimizer"]["lr"] == pytest.approx(rec["optimizer"]["lr"])
    flavor = (out / "torchtitan_flavor.py").read_text()
    compile(flavor, "torchtitan_flavor.py", "exec")  # valid Python
    assert f"n_kv_heads={rec['model']['n_kv_heads']}" in flavor


@pytest.mark.parametrize("dim, d_ff", [(3072, 8064), (4096, 14336), (512, 1408), (8192, 28672), (1536, 4608)])
def test_torchtitan_ffn_width_is_exact(dim, d_ff):
    """torchtitan's Llama feed-forward width rule, with the emitted multiple_of and multiplier."""
    multiple_of, mult = torchtitan_ffn(dim, d_ff)
    hidden = int(2 * (4 * dim) / 3)
    hidden = int(mult * hidden)
    assert multiple_of * ((hidden + multiple_of - 1) // multiple_of) == d_ff


def test_probe_plan_exports_the_mup_granite_model(tmp_path):
    fit = load_fit(REF_FIT)
    plan = make_plan(fit, 1e14, level=None)
    files = write_config_dir(plan, tmp_path / "cfg")
    assert [p.name for p in files] == ["config.json", "recipe.json", "recipe.yaml"]  # no torchtitan for Granite
    cfg, model = _meta_build(tmp_path / "cfg")
    assert type(cfg).__name__ == "GraniteConfig"
    assert sum(p.numel() for p in model.parameters()) == plan.shape.params
    m = plan.extra["width_multiplier"]
    assert cfg.logits_scaling == pytest.approx(m)  # muP's readout: logits / m
    assert not any("key/value" in r for r in plan.risks)
    gqa = make_plan(fit, 1e14, level=None, kv_heads=2)  # an attention the probes did not train: said
    assert gqa.shape.kv_heads == 2 and any("the law was fitted on another attention" in r for r in gqa.risks)
    groups = {g["group"]: g for g in recipe(plan)["optimizer"]["param_groups"]}
    assert groups["hidden"]["lr"] == pytest.approx(plan.lr / m) and groups["embedding"]["lr"] == plan.lr


def test_a_tiny_exported_config_trains_two_steps_on_cpu(tmp_path):
    """Build the exported model for real, set the optimizer from the recipe's groups and schedule,
    and take two steps: the files are enough to train from."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = _emit(tmp_path, "--budget", "3e13", "--vocab", "512", "--seq-len", "64")
    rec = json.loads((out / "recipe.json").read_text())
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(out))
    assert sum(p.numel() for p in model.parameters()) == rec["model"]["params"]
    opt = rec["optimizer"]
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    g = {x["group"]: x for x in opt["param_groups"]}
    optim = torch.optim.AdamW([{"params": matrices, "lr": g["matrices"]["lr"], "weight_decay": g["matrices"]["weight_decay"]},
                               {"params": vectors, "lr": g["vector"]["lr"], "weight_decay": 0.0}],
                              betas=tuple(opt["betas"]), eps=opt["eps"])
    warm = rec["schedule"]["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: min(1.0, (step + 1) / warm))
    x = torch.randint(0, rec["model"]["vocab_size"], (2, rec["batch"]["seq_len"]))
    losses = []
    for _ in range(2):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt["grad_clip"])
        optim.step()
        sched.step()
        optim.zero_grad()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(math.log(rec["model"]["vocab_size"]), rel=0.1)  # an untrained model guesses


def test_emit_config_refuses_a_sweep_and_a_file(tmp_path):
    res = CliRunner().invoke(plan_cli, ["--budget", "1e20:1e21:3", "--emit-config", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--emit-config: needs a single budget" in res.output
    f = tmp_path / "file"
    f.write_text("keep")
    res = CliRunner().invoke(plan_cli, ["--budget", "1e21", "--emit-config", str(f)])
    assert res.exit_code == 2 and f.read_text() == "keep"


@pytest.mark.parametrize("kv_heads", [0, 1, 2])
def test_probes_train_the_family_with_grouped_query_attention(kv_heads):
    """The probe config's kv_heads: the production family's attention, scaled down; counts exact."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fits import InputError
    from probes.config import ModelConfig
    from probes.model import build_model, count_params_meta

    cfg = ModelConfig(width=64, depth=2, d_head=16, kv_heads=kv_heads)
    counts = count_params_meta(cfg)
    assert counts == {"params_total": cfg.params_total, "params": cfg.non_embedding_params}
    model = build_model(cfg)
    assert model.config.num_key_value_heads == (kv_heads or cfg.n_heads)
    with pytest.raises(InputError, match="model.kv_heads: must be 0"):
        ModelConfig(width=64, d_head=16, kv_heads=3)


@pytest.mark.parametrize("log_budget", [18, 20, 22, 24, 26])
def test_preset_plan_counts_are_exact_on_a_meta_build(log_budget):
    """From 1e18 to 1e26 FLOPs: the Llama model built from the plan's config holds exactly the
    parameters the plan counts, and 6 x its matrices + attention is the plan's FLOPs per token."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from planner.export import hf_config

    plan = make_plan(budget=10.0 ** log_budget, level=None)
    cfg = {k: v for k, v in hf_config(plan).items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    assert sum(p.numel() for p in model.parameters()) == plan.shape.params
    s = plan.shape
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert 6 * matmul + 6 * s.n_layers * s.seq_len * s.d_model == s.flops_per_token
