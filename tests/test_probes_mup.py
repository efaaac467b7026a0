"""muP correctness: parameter groups, init, equivalence with SP at the base width, coordinate check."""
import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from probes.config import ModelConfig  # noqa: E402
from probes.coord_check import coord_check, coord_slopes  # noqa: E402
from probes.model import build_model, count_params_meta, param_kind  # noqa: E402
from probes.mup import make_optimizer, param_groups  # noqa: E402

BASE = ModelConfig(width=64, depth=2, d_head=16, base_width=64, vocab_size=257, seq_len=32,
                   readout_zero_init=False, query_zero_init=False)


def test_every_parameter_in_exactly_one_group():
    model = build_model(dataclasses.replace(BASE, width=256))
    groups = param_groups(model, lr=1e-2, weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {g["name"] for g in groups} == {"embedding", "hidden", "vector", "readout"}
    # the only Linear from the (growing) width to a fixed size is the readout
    fixed_out = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == 257]
    assert fixed_out == ["lm_head"]


def test_hidden_lr_and_decay_scale_with_width_also_after_scheduler_steps():
    model = build_model(dataclasses.replace(BASE, width=256))  # m = 4
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    opt.step()  # no gradients yet: changes nothing, keeps the scheduler's call order
    sched.step()
    g = {x["name"]: x for x in opt.param_groups}
    assert g["hidden"]["lr"] == pytest.approx(1e-2 / 4 * 0.5)
    assert g["embedding"]["lr"] == pytest.approx(1e-2 * 0.5)
    assert g["hidden"]["weight_decay"] == pytest.approx(0.1 * 4)  # lr x wd constant across widths
    assert g["vector"]["weight_decay"] == 0.0
    assert all(param_kind(n, p) != "vector" or p.ndim == 1 for n, p in model.named_parameters())


def test_adam_eps_follows_every_groups_gradient_scale():
    model = build_model(dataclasses.replace(BASE, width=256, depth=8, base_depth=2))  # m = 4, m_L = 4
    g = {x["name"]: x["eps"] for x in param_groups(model, lr=1e-2, eps=1e-8)}
    assert g == pytest.approx({"embedding": 1e-8 / 4, "readout": 1e-8 / 4, "hidden": 1e-8 / 16, "vector": 1e-8 / 16})
    # with logits x 1/m the gradients of every group shrink with width: measured, embedding and readout too
    grads = {}
    for width in (64, 256):
        torch.manual_seed(0)
        mdl = build_model(dataclasses.replace(BASE, width=width, readout_zero_init=False), seed=0)
        x = torch.randint(0, 257, (4, 32))
        mdl(input_ids=x, labels=x).loss.backward()
        grads[width] = {k: torch.cat([p.grad.abs().flatten() for n, p in mdl.named_parameters()
                                      if param_kind(n, p) == k]).mean().item() for k in ("embedding", "readout")}
    for k in ("embedding", "readout"):
        assert grads[256][k] < grads[64][k] / 2, (k, grads)


def test_hidden_init_std_scales_as_one_over_sqrt_width():
    def std(width):
        m = build_model(dataclasses.replace(BASE, width=width), seed=1)
        return m.model.layers[0].mlp.up_proj.weight.std().item()

    assert std(128) / std(512) == pytest.approx(2.0, rel=0.02)  # ratio 0.50 +- 0.01 for 4x width
    assert std(64) == pytest.approx(BASE.init_std, rel=0.03)


def test_mup_equals_sp_at_base_width():
    x = torch.randint(0, 257, (4, 32), generator=torch.Generator().manual_seed(0))
    losses = {}
    for par in ("mup", "sp"):
        cfg = dataclasses.replace(BASE, parametrization=par)
        model = build_model(cfg, seed=3)
        opt = make_optimizer(model, 3e-3, 0.1)
        for _ in range(5):
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[par] = (loss.item(), [p.detach().clone() for p in model.parameters()], model(input_ids=x).logits)
    assert losses["mup"][0] == losses["sp"][0]
    assert all(torch.equal(a, b) for a, b in zip(losses["mup"][1], losses["sp"][1]))
    assert torch.equal(losses["mup"][2], losses["sp"][2])


def test_logits_are_readout_over_width_multiplier():
    cfg = dataclasses.replace(BASE, width=256, output_multiplier=2.0)
    model = build_model(cfg, seed=0)
    torch.nn.init.normal_(model.lm_head.weight, std=0.02)
    x = torch.randint(0, 257, (2, 16))
    h = model.model(input_ids=x).last_hidden_state
    by_hand = (2.0 / 4.0) * (h @ model.lm_head.weight.T)
    torch.testing.assert_close(model(input_ids=x).logits, by_hand)


def test_completep_residual_multiplier_and_meta_counts():
    cfg = dataclasses.replace(BASE, depth=8, base_depth=2)
    model = build_model(cfg)
    assert model.config.residual_multiplier == pytest.approx(0.25)
    counts = count_params_meta(cfg)
    assert counts["params_total"] == cfg.params_total
    assert counts["params"] == cfg.non_embedding_params
    assert sum(p.numel() for p in model.parameters()) == cfg.params_total


def test_param_groups_need_a_probe_model():
    from transformers import GraniteConfig, GraniteForCausalLM

    bare = GraniteForCausalLM(GraniteConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(RuntimeError, match="did you forget"):
        param_groups(bare, lr=1e-3)


def test_width_not_divisible_into_heads():
    from fits import InputError

    with pytest.raises(InputError, match="model.width: must be divisible by d_head=16"):
        ModelConfig(width=100, d_head=16)


# --- coordinate check (shared/reference/mup.md, test 2) -------------------------------------------

def _check(variant, widths=(64, 128, 256, 512, 1024)):
    s = coord_slopes(coord_check(widths=widths, variant=variant, steps=5, seeds=3, lr=3e-3))
    return s["slope"].abs().max(), s["slope"].abs().median()


def test_coord_check_flat_under_mup_and_growing_under_sp():
    mx, med = _check("mup")
    assert mx <= 0.25 and med <= 0.05, (mx, med)  # measured 0.14 / 0.02
    mx, med = _check("sp")
    assert mx > 1.0 and med > 0.3, (mx, med)      # measured 2.41 / 1.29


def test_depth_coord_check_flat_under_completep_and_growing_without():
    from probes.coord_check import coord_check_depth

    def worst(scaling):
        s = coord_slopes(coord_check_depth(depths=(2, 4, 8, 16), scaling=scaling, seeds=2, lr=1e-3), axis="depth")
        return s[s["step"] >= 2]["slope"].abs().max()

    assert worst("completep") <= 0.3  # measured 0.15 at depths 2..32 (benchmarks/results/coord_check.json)
    assert worst("none") >= 0.8       # measured 1.24: the residual stream's update grows with depth
    with pytest.raises(ValueError, match="scaling"):
        coord_check_depth(scaling="muP")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["no_hidden_lr", "no_logit_mult", "no_init_scale"])
def test_coord_check_catches_each_single_rule_mutant(variant):
    mx, med = _check(variant)
    assert mx > 0.5 or med > 0.1, (variant, mx, med)  # measured 3.30/1.22, 0.96/0.08, 1.54/0.89
