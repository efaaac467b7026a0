"""Planner rules: named functions, each citing its source and stating its assumptions.

Every rule returns a value and the source string that goes into a plan's ``sources``.
"""
from __future__ import annotations

import math

__all__ = [
    "deepseek_lr", "deepseek_batch", "step_law_lr", "step_law_batch", "warmup_steps",
    "WARMUP", "SCHEDULE", "WEIGHT_DECAY", "TAU_PRIOR", "weight_decay_for", "adamw_timescale", "round_batch",
    "lr_for_rounded_batch",
    "HPARAM_RULES",
    "kaplan_critical_batch", "batch_tradeoff",
]

DEEPSEEK = "DeepSeek LLM 2024 (arXiv:2401.02954), Sec. 3.1"
STEP_LAW = "Step Law 2025, 'Predictable Scale: Part I' (arXiv:2503.04715)"


def deepseek_lr(C: float) -> float:
    """Rule 1. Peak learning rate lr = 0.3118 C^-0.1250 (DeepSeek LLM 2024, eq. 1).

    C is compute M D with M the non-embedding FLOPs per token (72 n_layer d^2 + 12 n_layer d seq, eq. 2).
    Fitted on AdamW runs up to 3e20 FLOPs with a multi-step schedule; published prior.

    >>> round(deepseek_lr(1e21) * 1e4, 2)
    7.39
    """
    return 0.3118 * C ** -0.1250


def deepseek_batch(C: float) -> float:
    """Rule 2. Batch size in tokens B = 0.2920 C^0.3271 (DeepSeek LLM 2024, eq. 1).

    >>> round(deepseek_batch(1e21) / 1e6, 2)
    2.16
    """
    return 0.2920 * C ** 0.3271


def step_law_lr(N: float, D: float) -> float:
    """Rule 1b. lr = 1.79 N^-0.713 D^0.307 (Step Law 2025; N non-embedding, AdamW, min lr 1e-5)."""
    return 1.79 * N ** -0.713 * D ** 0.307


def step_law_batch(D: float) -> float:
    """Rule 2b. Batch in tokens B = 0.58 D^0.571 (Step Law 2025)."""
    return 0.58 * D ** 0.571


def kaplan_critical_batch(loss: float) -> float:
    """Rule 5. Critical batch in tokens B_crit(L) = B* / L^(1/alpha_B), B* = 2e8, alpha_B = 0.21
    (Kaplan et al. 2020, eq. 5.3). Loss in nats/token on WebText2: a prior, not a fit to your data.

    >>> round(kaplan_critical_batch(2.3) / 1e6, 2)
    3.79
    """
    return 2e8 / loss ** (1 / 0.21)


def batch_tradeoff(tokens: float, batch: float, b_crit: float, multiples=(0.5, 1, 2, 4)) -> list[dict]:
    """Rule 6. Steps and tokens to the same loss at other batch sizes (McCandlish et al. 2018):
    (S/S_min - 1)(E/E_min - 1) = 1 with B_crit = E_min/S_min. The plan trains ``tokens`` at
    ``batch``; each row gives the batch, the tokens E and steps S needed for the same loss."""
    e_min = tokens / (1 + batch / b_crit)
    rows = []
    for k in multiples:
        b = k * b_crit
        e = e_min * (1 + b / b_crit)
        rows.append({"batch_over_bcrit": k, "batch_tokens": b, "tokens": e, "steps": e / b})
    return rows


HPARAM_RULES = {
    "deepseek2024": ("DeepSeek LLM 2024 lr/batch laws", DEEPSEEK),
    "steplaw2025": ("Step Law 2025 lr/batch laws", STEP_LAW),
}


def round_batch(batch_tokens: float, seq_len: int) -> tuple[int, int]:
    """Rule 3. Batch in whole sequences, rounded to a multiple of the largest power of two at most
    1/16 of it (1,000 sequences -> 992 = 31 x 32; 700 -> 704 = 22 x 32), so that it splits evenly
    over data-parallel ranks and moves by at most ~3% from the rule: steps and lr then move smoothly
    with the budget. Returns (sequences, tokens).

    >>> round_batch(1000 * 2048, 2048), round_batch(700 * 2048, 2048)[0], round_batch(10, 2048)[0]
    ((992, 2031616), 704, 1)
    """
    seqs = max(batch_tokens / seq_len, 1.0)
    grain = 2 ** max(0, math.floor(math.log2(seqs / 16)))
    n = max(1, int(round(seqs / grain)) * grain)
    return n, n * seq_len


def lr_for_rounded_batch(lr: float, batch_rule: float, batch_rounded: float) -> float:
    """Rule 3b. The lr moved with the rounded batch by Adam's square-root rule, lr ∝ sqrt(B)
    (Malladi et al. 2022, arXiv:2205.10287): a few percent at most after :func:`round_batch`.

    >>> round(lr_for_rounded_batch(1e-3, 1000.0, 1024.0) * 1e3, 4)
    1.0119
    """
    return lr * math.sqrt(batch_rounded / batch_rule)


WARMUP = ("2000 warmup steps (DeepSeek LLM 2024, Sec. 2.3), at most 5% of the run: a fixed length, not a fraction "
          "of the run (on CPU probes the best warmup was the same number of steps in runs of 512 and 2048 steps, "
          "benchmarks/results/hparam_warmup.json); it trades with the lr, so tune them together")


def warmup_steps(total_steps: int) -> int:
    """Rule 4. Warmup 2000 steps (DeepSeek LLM 2024, Sec. 2.3), capped at 5% of a short run and
    at least 1 step."""
    return max(1, min(2000, int(round(0.05 * total_steps))))


SCHEDULE = ("wsd: linear warmup, constant, then linear decay to 0 over the last 20% of steps "
            "(Hägele et al. 2024, arXiv:2405.18392: matches cosine at equal compute and allows "
            "branching cooldowns)")

WEIGHT_DECAY = (0.1, "AdamW weight decay 0.1, as in DeepSeek LLM 2024 and Llama 2 (arXiv:2307.09288)")

TAU_PRIOR = 0.4
TAU_SOURCE = ("prior AdamW timescale tau = B / (lr wd D) = 0.4 of the run, held constant (Wang & Aitchison 2025, "
              "arXiv:2405.13698): the timescale the common recipe (wd 0.1 with DeepSeek's lr and batch) gives at "
              "1e22-1e23 FLOPs; it ranges 0.27-0.56 from 1e20 to 1e25. Not fitted to your runs: fit an lr x wd sweep "
              "(fit hparams) for your own")


def weight_decay_for(lr: float, batch_tokens: float, tokens: float, tau: float = TAU_PRIOR) -> float:
    """Rule 7. AdamW weight decay that sets the timescale tau = B / (lr wd D) (a fraction of the
    run; Wang & Aitchison 2025, Bergsma et al. 2025): wd = B / (lr tau D). Under torch's AdamW,
    which decays by lr x wd per step, the run then averages its updates over tau of its steps.

    >>> round(weight_decay_for(3e-4, 4e6, 1e12, tau=0.4), 4)
    0.0333
    """
    return batch_tokens / (lr * tau * tokens)


def adamw_timescale(lr: float, weight_decay: float, steps: int) -> float:
    """The AdamW EMA timescale tau = 1/(lr wd) as a fraction of the run (Wang & Aitchison 2025,
    arXiv:2405.13698); values near 0.1-1 are well behaved, far below means weights forget early data."""
    return 1.0 / (lr * weight_decay) / max(steps, 1)


#: the loss unit Kaplan et al.'s B_crit(L) is fitted in: B_crit of a loss in another unit is not estimated
KAPLAN_LOSS_UNIT = "nats per token (WebText2, GPT-2 BPE)"
