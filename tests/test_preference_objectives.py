"""Preference losses (train/objectives.py): hand-worked values, TRL 1.x parity, invariants.

Three kinds of evidence:
- hand-worked: ALIGNMENT-NOTES §1.12's inputs, logπ(yw)=−10, logπ(yl)=−12, logπref(yw)=−11,
  logπref(yl)=−11.5, |yw|=5, |yl|=8, β=0.1, so c = 1, r = −0.5, Δ = 1.5; every value of the table.
- TRL parity: TRL's own loss code run on the same tiny Qwen2 pair and batch as lmlab's (see
  `trl_dpo`, `trl_kto`, `trl_pairwise`): DPOTrainer._compute_loss and KTOTrainer._compute_loss run
  their own forward through TRL's fused LM head (`add_fused_lm_head`) on an instance made with
  `object.__new__` and the attributes those methods read; CPOTrainer/ORPOTrainer.get_batch_loss_metrics
  likewise. lmlab computes logits → `token_logps`/`sequence_logps` → its loss. Loss, logged
  rewards and gradients must agree to 1e-5.
- invariants: reference == policy, extreme inputs, bad options.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lmlab.errors import ConfigError
from lmlab.train.objectives import (
    DPO_LOSS_TYPES,
    DPO_LOSSES,
    causal_lm_loss,
    combine_losses,
    cpo_loss,
    dpo_loss,
    kl_mismatched,
    kto_loss,
    log1mexp,
    orpo_loss,
    orpo_nll_labels,
    sequence_logps,
    sft_term,
    simpo_loss,
    token_logps,
)

BETA = 0.1


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def ref_case(kind: str, **kw) -> float:
    """The §1.12 pair through dpo_loss."""
    losses, _, _ = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.5), BETA, kind, chosen_lengths=t(5.0), rejected_lengths=t(8.0), **kw)
    return float(losses[0])


# --- hand-worked values (§1.12) -----------------------------------------------------------------


def test_dpo_sigmoid_hand_worked():
    """c = −10 − (−11) = 1, r = −12 − (−11.5) = −0.5, Δ = 1.5, βΔ = 0.15.
    −logσ(0.15) = log(1 + e^−0.15) = log(1.860708) = 0.620957. Rewards β·c = 0.1, β·r = −0.05."""
    losses, rc, rr = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.5), BETA)
    assert float(losses[0]) == pytest.approx(0.620957, abs=1e-5)
    assert float(rc[0]) == pytest.approx(0.1, abs=1e-12) and float(rr[0]) == pytest.approx(-0.05, abs=1e-12)


def test_dpo_ipo_hand_worked_uses_per_token_average():
    """TRL's IPO: h = c/|yw| − r/|yl| = 1/5 + 0.5/8 = 0.2 + 0.0625 = 0.2625; 1/(2β) = 5;
    (0.2625 − 5)² = (−4.7375)² = 22.443906. The paper's sequence-level form would give (1.5 − 5)² = 12.25."""
    assert ref_case("ipo") == pytest.approx(22.443906, abs=1e-5)
    assert ref_case("ipo") != pytest.approx(12.25, abs=1e-3)


@pytest.mark.parametrize(
    ("kind", "expected", "kw"),
    [
        ("sigmoid", 0.620957, {}),
        ("hinge", 0.850000, {}),  # max(0, 1 − 0.15)
        ("ipo", 22.443906, {}),
        ("exo_pair", 2.505517, {"label_smoothing": 1e-3}),
        ("nca_pair", 1.350825, {}),
        ("robust", 0.602207, {"label_smoothing": 0.1}),
        ("bco_pair", 1.312856, {}),
        ("sppo_hard", 36.250000, {}),  # (1 − 5)² + (−0.5 + 5)² = 16 + 20.25
        ("aot", 0.620957, {}),  # batch of 1, ε = 0: equals sigmoid
        ("aot_unpaired", 0.620957, {}),
        ("apo_zero", 0.962523, {}),  # (1 − σ(0.1)) + σ(−0.05) = 0.475021 + 0.487503
        ("apo_down", 0.987549, {}),  # σ(0.1) + 1 − σ(0.15) = 0.524979 + 0.462570
        ("discopop", 0.849338, {"discopop_tau": 0.05}),
        ("sigmoid_norm", 0.680108, {}),  # −logσ(0.1 · 0.2625)
    ],
)
def test_every_dpo_loss_matches_the_reference_table(kind, expected, kw):
    assert ref_case(kind, **kw) == pytest.approx(expected, abs=1e-5)


def test_reference_table_covers_every_dpo_loss():
    assert set(DPO_LOSS_TYPES) == set(DPO_LOSSES) | {"sft"}
    assert len(DPO_LOSSES) == 14


def test_kto_hand_worked():
    """Desirable, r_θ = c = 1, z0 = 0.2: 1 − σ(0.1·(1 − 0.2)) = 1 − σ(0.08) = 1 − 0.519989 = 0.480011.
    Undesirable, r_θ = r = −0.5: 1 − σ(0.1·(0.2 − (−0.5))) = 1 − σ(0.07) = 1 − 0.517493 = 0.482507.
    z0 comes from mismatched pairs: here their log-ratios are 0.2 and 0.2, mean 0.2 (> 0, kept)."""
    losses, rewards, z0 = kto_loss(
        t(-10.0, -12.0), t(-11.0, -11.5), t(-5.0, -6.0), t(-5.2, -6.2), torch.tensor([True, False]), BETA
    )
    assert float(z0) == pytest.approx(0.2, abs=1e-12)
    assert losses.tolist() == pytest.approx([0.480011, 0.482507], abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.1, -0.05], abs=1e-12)


def test_kto_weights_and_z0_clamp():
    """A negative KL estimate is clamped to z0 = 0 (KL ≥ 0); λ_U = 2 doubles the undesirable value:
    2·(1 − σ(0.1·0.5)) = 2·(1 − 0.512497) = 0.975005."""
    losses, _, z0 = kto_loss(t(-12.0, -12.0), t(-11.5, -11.5), t(-7.0, -7.0), t(-6.0, -6.0), torch.tensor([False, False]), BETA, 1.0, 2.0)
    assert float(z0) == 0.0
    assert losses.tolist() == pytest.approx([0.975005, 0.975005], abs=1e-6)


def test_kto_z0_all_reduce_hook_averages_before_the_clamp():
    """Local mean −0.4; a hook standing for the mean over two processes whose other mean is +1.0
    gives 0.3 (TRL gathers, averages, then clamps): the clamp must not be applied locally first."""
    _, _, z0 = kto_loss(t(-1.0, -1.0), t(-1.0, -1.0), t(-1.4, -1.4), t(-1.0, -1.0), torch.tensor([True, False]), BETA,
                        z0_all_reduce=lambda local: (local + 1.0) / 2)
    assert float(z0) == pytest.approx(0.3, abs=1e-12)


def test_kl_mismatched_rotates_by_one_like_trl():
    """TRL: (x_1, y_n), (x_2, y_1), …, (x_n, y_{n−1}) — the same completions, each with another prompt."""
    assert kl_mismatched(["y1", "y2", "y3"]) == ["y3", "y1", "y2"]


def test_cpo_sigmoid_hand_worked():
    """No reference: Δ = −10 − (−12) = 2, β = 0.1: −logσ(0.2) = log(1 + e^−0.2) = 0.598139."""
    losses, rc, rr = cpo_loss(t(-10.0), t(-12.0), BETA)
    assert float(losses[0]) == pytest.approx(0.598139, abs=1e-6)
    assert float(rc[0]) == pytest.approx(-1.0) and float(rr[0]) == pytest.approx(-1.2)


def test_simpo_hand_worked():
    """Averaged: l_w = −10/5 = −2, l_l = −12/8 = −1.5; β = 2, γ = 1:
    −logσ(2·(−2 + 1.5) − 1) = −logσ(−2) = log(1 + e²) = 2.126928."""
    losses, _, _ = simpo_loss(t(-2.0), t(-1.5), beta=2.0, gamma=1.0)
    assert float(losses[0]) == pytest.approx(2.126928, abs=1e-6)


def test_orpo_hand_worked():
    """l_w = −10/5 = −2, l_l = −12/8 = −1.5. log(1 − e^−2) = log(0.864665) = −0.145413;
    log(1 − e^−1.5) = log(0.776870) = −0.252482. log_odds = (−2 + 1.5) − (−0.145413 + 0.252482)
    = −0.5 − 0.107069 = −0.607069; L_OR = −0.1·logσ(−0.607069) = 0.1·log(1 + e^0.607069) = 0.1·1.042058 = 0.104206."""
    or_losses, log_odds = orpo_loss(t(-2.0), t(-1.5), BETA)
    assert float(log_odds[0]) == pytest.approx(-0.607069, abs=1e-5)
    assert orpo_loss(t(-2.0).bfloat16(), t(-1.5).bfloat16(), BETA)[1].dtype == torch.float32  # TRL upcasts too
    assert float(or_losses[0]) == pytest.approx(0.104206, abs=1e-5)


def test_log1mexp_is_accurate_on_both_branches():
    """Near 0, log(−expm1 x) is exact; far below, log(1 − eˣ) = −eˣ − e²ˣ/2 − …, where the naive log(1 − eˣ) gives 0."""
    x = torch.tensor([-1e-8, -1e-3, -0.5, -0.7, -5.0], dtype=torch.float64)
    assert torch.allclose(log1mexp(x), torch.log(-torch.expm1(x)), rtol=1e-12, atol=0)
    far = torch.tensor([-50.0], dtype=torch.float64)
    assert float(log1mexp(far)) == pytest.approx(-math.exp(-50.0), rel=1e-12)
    x32 = torch.tensor([-1e-6, -40.0])
    assert torch.isfinite(log1mexp(x32)).all() and float(log1mexp(x32)[1]) == pytest.approx(-math.exp(-40.0), rel=1e-3)


# --- invariants --------------------------------------------------------------------------------


def test_reference_equal_to_policy_gives_ln2_ipo_and_zero_rewards():
    """All log-ratios 0: sigmoid −logσ(0) = ln 2; IPO (0 − 1/(2β))² = 1/(4β²) = 25; rewards and margin 0."""
    logps = torch.tensor([-3.0, -7.0, -20.0])
    lengths = torch.tensor([3.0, 5.0, 9.0])
    losses, rc, rr = dpo_loss(logps, logps - 1, logps, logps - 1, BETA)
    assert torch.allclose(losses, torch.full((3,), math.log(2)))
    assert rc.abs().max() == 0 and rr.abs().max() == 0
    ipo, _, _ = dpo_loss(logps, logps - 1, logps, logps - 1, BETA, "ipo", chosen_lengths=lengths, rejected_lengths=lengths)
    assert torch.allclose(ipo, torch.full((3,), 1 / (4 * BETA**2)))


@pytest.mark.parametrize(("weight", "desirable"), [(1.0, True), (1.7, True), (0.6, False)])
def test_kto_at_reference_with_zero_z0_is_half_the_weight(weight, desirable):
    """r = 0, z0 = 0: 1 − σ(0) = 0.5 for either label, times its weight."""
    lp = torch.tensor([-4.0, -9.0])
    labels = torch.tensor([desirable, desirable])
    losses, _, z0 = kto_loss(lp, lp, lp, lp, labels, BETA, desirable_weight=weight, undesirable_weight=weight)
    assert float(z0) == 0.0 and losses.tolist() == pytest.approx([0.5 * weight] * 2)


def _extreme_pairs():
    g = torch.Generator().manual_seed(0)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])
    pc = (signs * 1e4).requires_grad_(True)
    pr = (-signs * 1e4 + torch.randn(4, generator=g)).requires_grad_(True)
    return pc, pr


@pytest.mark.parametrize("kind", sorted(DPO_LOSSES))
def test_dpo_gradients_are_finite_for_extreme_log_ratios(kind):
    """Log-ratios of ±1e4 (β·δ = ±2e3): every loss and gradient finite, no NaN (e.g. discopop's m·exp(−ρ))."""
    pc, pr = _extreme_pairs()
    zeros = torch.zeros(4)
    eps = {"exo_pair": 1e-3, "robust": 0.1}.get(kind, 0.0)
    losses, _, _ = dpo_loss(pc, pr, zeros, zeros, BETA, kind, label_smoothing=eps,
                            chosen_lengths=torch.full((4,), 3.0), rejected_lengths=torch.full((4,), 7.0))
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


def test_reference_free_and_kto_gradients_are_finite_for_extreme_inputs():
    pc, pr = _extreme_pairs()
    labels = torch.tensor([True, False, True, False])
    total = kto_loss(pc, torch.zeros(4), pr.detach(), torch.zeros(4), labels, BETA)[0].sum()
    for kind in ("sigmoid", "hinge", "ipo", "simpo"):
        total = total + cpo_loss(pc, pr, BETA, kind)[0].sum()
    avg_w = (-pc.abs() / 1e4 * 5e3).clone()  # per-token averages must be < 0: here −5e3
    avg_l = -pr.abs() / 1e4 * 1e-4  # and ≈ −1e-4, near the log1mexp singularity at 0
    total = total + orpo_loss(avg_w, avg_l, BETA)[0].sum()
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


def test_sft_term_is_the_token_mean_over_the_micro_batch_broadcast():
    """Rows with 1 and 3 counted tokens of log-prob −1, −2, −3, −6: mean over the 4 tokens = 3.0
    (a mean of per-row means would give (1 + 11/3)/2 = 2.333)."""
    per_token = torch.tensor([[-1.0, 0.0, 0.0], [-2.0, -3.0, -6.0]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    assert sft_term(per_token, mask).tolist() == [3.0, 3.0]
    assert sft_term(per_token, torch.zeros_like(mask)).tolist() == [0.0, 0.0]


def test_combine_losses_weights_means():
    losses = {"sigmoid": torch.tensor([1.0, 3.0]), "sft": torch.tensor([4.0, 4.0])}
    assert float(combine_losses(losses, [1.0, 0.25])) == pytest.approx(2.0 + 1.0)
    assert float(combine_losses(losses, {"sft": 0.5, "sigmoid": 2.0})) == pytest.approx(4.0 + 2.0)
    assert float(combine_losses(losses)) == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="2 losses"):
        combine_losses(losses, [1.0])


def test_bad_options_are_clear_errors():
    one = torch.tensor([-1.0])
    with pytest.raises(ConfigError, match="did you mean 'sigmoid'"):
        dpo_loss(one, one, one, one, BETA, "sigmod")
    with pytest.raises(ConfigError, match="β must be > 0"):
        dpo_loss(one, one, one, one, 0.0)
    with pytest.raises(ConfigError, match="exo_pair needs"):
        dpo_loss(one, one, one, one, BETA, "exo_pair")
    with pytest.raises(ConfigError, match="robust loss"):
        dpo_loss(one, one, one, one, BETA, "robust", label_smoothing=0.5)
    with pytest.raises(ConfigError, match="chosen_lengths"):
        dpo_loss(one, one, one, one, BETA, "ipo")
    with pytest.raises(ConfigError, match="reverse_kl"):
        dpo_loss(one, one, one, one, BETA, "bco_pair", f_divergence="js_divergence")
    with pytest.raises(ConfigError, match="sft_term"):
        dpo_loss(one, one, one, one, BETA, "sft")
    with pytest.raises(ConfigError, match="did you mean 'simpo'"):
        cpo_loss(one, one, BETA, "simpoo")
    with pytest.raises(ConfigError, match="mismatched"):
        kto_loss(one, one, None, None, torch.tensor([True]), BETA)
    with pytest.raises(ConfigError, match="must be > 0"):
        orpo_loss(one, one, -1.0)


# --- token and sequence log-probs ---------------------------------------------------------------


def test_sequence_logps_equals_a_brute_force_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, 11, generator=g) * 3  # (B, T, V)
    labels = torch.randint(0, 11, (3, 6), generator=g)
    labels[0, :2] = -100
    labels[1, 4:] = -100
    labels[2, :] = -100
    total, n = sequence_logps(logits, labels)
    for b in range(3):
        want, count = 0.0, 0
        for pos in range(5):
            target = int(labels[b, pos + 1])
            if target == -100:
                continue
            row = [float(v) for v in logits[b, pos]]
            want += row[target] - math.log(sum(math.exp(v) for v in row))
            count += 1
        assert float(total[b]) == pytest.approx(want, abs=1e-5) and int(n[b]) == count
    per_token, mask = token_logps(logits, labels)
    assert per_token.shape == mask.shape == (3, 5) and per_token[~mask].abs().max() == 0


def test_token_logps_of_bf16_logits_are_float32():
    logits = torch.randn(2, 4, 50).bfloat16()
    per_token, _ = token_logps(logits, torch.randint(0, 50, (2, 4)))
    assert per_token.dtype == torch.float32


def test_orpo_nll_labels_choice():
    """lmlab default: response tokens only (the prompt-masked labels); nll_on_prompt=True: TRL's
    prompt + response (every attended token)."""
    ids = torch.tensor([[5, 6, 7, 8, 0]])
    att = torch.tensor([[1, 1, 1, 1, 0]])
    labels = torch.tensor([[-100, -100, 7, 8, -100]])
    assert orpo_nll_labels(ids, labels, att).tolist() == labels.tolist()
    assert orpo_nll_labels(ids, labels, att, nll_on_prompt=True).tolist() == [[5, 6, 7, 8, -100]]


# --- TRL parity ---------------------------------------------------------------------------------

B, T = 8, 14  # pairs per batch, padded length


@pytest.fixture(scope="module")
def trl():
    """TRL's trainers and fused LM head (imported once: ~7 s of CPU)."""
    from trl import DPOTrainer, KTOTrainer
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    return SimpleNamespace(DPO=DPOTrainer, KTO=KTOTrainer, CPO=CPOTrainer, ORPO=ORPOTrainer, add_fused_lm_head=add_fused_lm_head)


def _perturbed(path, seed: int):
    """The conftest tiny Qwen2 with seeded noise (std 0.1) on every weight, so policy and reference
    differ by log-ratios of order 1 (random init alone is near-uniform: ratios ~1e-3)."""
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def models(trl, tiny_qwen2_dir):
    policy, ref = _perturbed(tiny_qwen2_dir, 1), _perturbed(tiny_qwen2_dir, 2)
    ref.eval()
    policy.eval()  # no dropout in Qwen2 anyway; `training` only picks TRL's metric bucket
    trl.add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    trl.add_fused_lm_head(ref)
    return SimpleNamespace(policy=policy, ref=ref, vocab=policy.config.vocab_size)


def _rows(n: int, seed: int, vocab: int):
    """n (prompt, completion) token lists of random lengths (prompt 2-5, completion 1-7)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        p, c = (int(x) for x in (torch.randint(2, 6, (1,), generator=g), torch.randint(1, 8, (1,), generator=g)))
        rows.append((torch.randint(3, vocab, (p,), generator=g).tolist(), torch.randint(3, vocab, (c,), generator=g).tolist()))
    return rows


def _pad(rows, width: int = T):
    """Right-padded input_ids, attention_mask, completion_mask (N, width) for (prompt, completion) rows."""
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    att, comp = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq)
        att[i, : len(seq)] = 1
        comp[i, len(p): len(seq)] = 1
    return ids, att, comp


@pytest.fixture(scope="module")
def pairs(models):
    """B pairs sharing their prompt, TRL's DPO layout: rows [chosen..., rejected...]."""
    chosen, rejected = _rows(B, 10, models.vocab), _rows(B, 11, models.vocab)
    rejected = [(c[0], r[1]) for c, r in zip(chosen, rejected, strict=True)]
    ids, att, comp = _pad(chosen + rejected)
    return SimpleNamespace(input_ids=ids, attention_mask=att, completion_mask=comp, labels=ids.masked_fill(comp == 0, -100))


class _Accelerator:
    """What TRL's loss methods ask of accelerate on one CPU process."""

    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics

    @staticmethod
    def unwrap_model(m):
        return m

    @staticmethod
    def autocast():
        return nullcontext()


def _stub(cls, **attrs):
    """A TRL trainer instance without __init__ (no datasets, no accelerate state): only what its loss reads."""
    trainer = object.__new__(cls)
    defaults = dict(accelerator=_Accelerator(), aux_loss_enabled=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                    _total_train_tokens=0, _tp_size=1)
    for k, v in {**defaults, **attrs}.items():
        object.__setattr__(trainer, k, v)
    return trainer


def trl_dpo(trl, models, batch, loss_types, weights=None, beta=BETA, label_smoothing=0.0, f_div="reverse_kl", f_alpha=0.5, tau=0.05):
    """DPOTrainer._compute_loss (TRL's forward through its fused head, reference in memory)."""
    trainer = _stub(trl.DPO, model=models.policy, ref_model=models.ref, precompute_ref_logps=False, ld_alpha=None,
                    f_divergence_type=f_div, f_alpha_divergence_coef=f_alpha, loss_types=list(loss_types),
                    loss_weights=weights or [1.0] * len(loss_types), beta=beta, label_smoothing=label_smoothing,
                    use_weighting=False, args=SimpleNamespace(discopop_tau=tau, gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "completion_mask": batch.completion_mask}
    loss = trainer._compute_loss(models.policy, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}


def lmlab_dpo(models, batch, loss_types, weights=None, beta=BETA, label_smoothing=0.0, f_div="reverse_kl", f_alpha=0.5, tau=0.05):
    """The same loss the lmlab way: logits → token_logps → dpo_loss/sft_term → combine_losses."""
    per_token, mask = token_logps(models.policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
    with torch.no_grad():
        ref_logps, _ = sequence_logps(models.ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
    pc, pr = per_token.sum(-1).chunk(2)
    rc, rr = ref_logps.chunk(2)
    nc, nr = mask.sum(-1).chunk(2)
    named = {}
    for kind in loss_types:
        if kind == "sft":
            named[kind] = sft_term(per_token[:B], mask[:B])
        else:
            named[kind], rew_c, rew_r = dpo_loss(pc, pr, rc, rr, beta, kind, label_smoothing=label_smoothing, chosen_lengths=nc,
                                                 rejected_lengths=nr, f_divergence=f_div, f_alpha=f_alpha, discopop_tau=tau)
    return combine_losses(named, weights), {"rewards/chosen": rew_c.mean().item(), "rewards/rejected": rew_r.mean().item(),
                                           "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return grads


def _assert_parity(models, trl_out, ours):
    (trl_loss, trl_metrics), (our_loss, our_metrics) = trl_out, ours
    assert float(our_loss.detach()) == pytest.approx(float(trl_loss.detach()), abs=1e-5, rel=1e-6)
    for key, value in our_metrics.items():
        assert value == pytest.approx(trl_metrics[key], abs=1e-5), key
    for g_trl, g_ours in zip(_grads(models.policy, trl_loss), _grads(models.policy, our_loss), strict=True):
        torch.testing.assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-5)


DPO_CASES = [
    (["sigmoid"], None, {}),
    (["hinge"], None, {}),
    (["ipo"], None, {}),
    (["exo_pair"], None, {"label_smoothing": 1e-3}),
    (["nca_pair"], None, {}),
    (["robust"], None, {"label_smoothing": 0.1}),
    (["bco_pair"], None, {}),
    (["sppo_hard"], None, {}),
    (["aot"], None, {"label_smoothing": 0.1}),
    (["aot_unpaired"], None, {"label_smoothing": 0.1}),
    (["apo_zero"], None, {}),
    (["apo_down"], None, {}),
    (["discopop"], None, {"tau": 0.05}),
    (["sigmoid_norm"], None, {}),
    (["sigmoid", "sft"], [1.0, 0.2], {}),  # RPO
    (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], {}),  # MPO
    (["sigmoid"], None, {"f_div": "forward_kl"}),
    (["sigmoid"], None, {"f_div": "js_divergence"}),
    (["ipo"], None, {"f_div": "alpha_divergence", "f_alpha": 0.3}),
    # per-token averaging keeps the score's constant (js: log 2, forward KL: 1) from cancelling
    (["sigmoid_norm"], None, {"f_div": "js_divergence"}),
    (["ipo"], None, {"f_div": "forward_kl"}),
    (["hinge"], None, {"beta": 0.5}),
]


@pytest.mark.parametrize(("loss_types", "weights", "kw"), DPO_CASES, ids=["+".join(c[0]) + "-" + "-".join(map(str, c[2].values())) for c in DPO_CASES])
def test_dpo_losses_equal_trl(trl, models, pairs, loss_types, weights, kw):
    """Loss, logged rewards/log-probs and every policy gradient equal TRL's DPOTrainer on 8 pairs."""
    _assert_parity(models, trl_dpo(trl, models, pairs, loss_types, weights, **kw), lmlab_dpo(models, pairs, loss_types, weights, **kw))


def test_every_trl_dpo_loss_type_is_in_the_table(trl, models, pairs):
    """TRL's unknown-loss error lists its loss types; lmlab must have each (so the parity cases cover TRL)."""
    with pytest.raises(ValueError, match="Unknown loss type") as info:
        trl_dpo(trl, models, pairs, ["no_such_loss"])
    trl_names = set(re.findall(r"'(\w+)'", str(info.value).split("Should be one of")[1]))
    assert trl_names == set(DPO_LOSS_TYPES)
    assert trl_names == {kind for case in DPO_CASES for kind in case[0]}


@pytest.fixture(scope="module")
def unpaired(models):
    """8 KTO examples with mixed labels and their mismatched KL rows (completion i−1 after prompt i)."""
    rows = _rows(B, 20, models.vocab)
    kl_rows = [(p, c) for (p, _), c in zip(rows, kl_mismatched([c for _, c in rows]), strict=True)]
    ids, att, comp = _pad(rows)
    kl_ids, kl_att, kl_comp = _pad(kl_rows)
    label = torch.tensor([True, False, True, True, False, False, True, False])
    return SimpleNamespace(input_ids=ids, attention_mask=att, completion_mask=comp, kl_ids=kl_ids, kl_att=kl_att, kl_comp=kl_comp, label=label)


@pytest.mark.parametrize(("kind", "w_d", "w_u"), [("kto", 1.0, 1.0), ("kto", 1.0, 1.5), ("apo_zero_unpaired", 1.0, 1.0)])
def test_kto_equals_trl(trl, models, unpaired, kind, w_d, w_u):
    """KTOTrainer._compute_loss (its own forward, reference and KL forward) vs kto_loss: loss, z0, rewards, gradients."""
    u = unpaired
    trainer = _stub(trl.KTO, model=models.policy, ref_model=models.ref, calculate_KL=kind == "kto", precompute_ref_logps=False,
                    loss_type=kind, beta=BETA, desirable_weight=w_d, undesirable_weight=w_u,
                    args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": u.input_ids, "attention_mask": u.attention_mask, "completion_mask": u.completion_mask,
              "KL_input_ids": u.kl_ids, "KL_attention_mask": u.kl_att, "KL_completion_mask": u.kl_comp, "label": u.label}
    trl_loss = trainer._compute_loss(models.policy, inputs, return_outputs=False)
    metrics = trainer._metrics["eval"]

    def logps(model, ids, att, comp, grad=True):
        with nullcontext() if grad else torch.no_grad():
            return sequence_logps(model(input_ids=ids, attention_mask=att).logits, ids.masked_fill(comp == 0, -100))[0]

    with torch.no_grad():
        kl_policy = logps(models.policy, u.kl_ids, u.kl_att, u.kl_comp)
        kl_ref = logps(models.ref, u.kl_ids, u.kl_att, u.kl_comp)
    policy = logps(models.policy, u.input_ids, u.attention_mask, u.completion_mask)
    ref = logps(models.ref, u.input_ids, u.attention_mask, u.completion_mask, grad=False)
    losses, rewards, z0 = kto_loss(policy, ref, kl_policy, kl_ref, u.label, BETA, w_d, w_u, kind=kind)
    assert float(z0) == pytest.approx(metrics["kl"][-1], abs=1e-6)
    if kind == "kto":
        assert float(z0) > 0  # the reference point is exercised, not clamped away
    assert rewards[u.label].mean().item() == pytest.approx(metrics["rewards/chosen"][-1], abs=1e-5)
    assert rewards[~u.label].mean().item() == pytest.approx(metrics["rewards/rejected"][-1], abs=1e-5)
    our_loss = losses.mean()
    assert float(our_loss.detach()) == pytest.approx(float(trl_loss.detach()), abs=1e-5, rel=1e-6)
    for g_trl, g_ours in zip(_grads(models.policy, trl_loss), _grads(models.policy, our_loss), strict=True):
        torch.testing.assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-5)


def _pairwise_batch(pairs):
    """TRL's CPO/ORPO batch: chosen_* and rejected_* tensors, labels prompt-masked."""
    batch = {}
    for half, rows in (("chosen", slice(0, B)), ("rejected", slice(B, 2 * B))):
        batch[f"{half}_input_ids"] = pairs.input_ids[rows]
        batch[f"{half}_attention_mask"] = pairs.attention_mask[rows]
        batch[f"{half}_labels"] = pairs.labels[rows]
    return batch


def _policy_logits(models, pairs):
    return models.policy(input_ids=pairs.input_ids, attention_mask=pairs.attention_mask).logits  # (2B, T, V)


@pytest.mark.parametrize(("kind", "cpo_alpha", "eps"), [("sigmoid", 1.0, 0.0), ("sigmoid", 0.5, 0.1), ("hinge", 1.0, 0.0),
                                                        ("ipo", 1.0, 0.0), ("simpo", 0.0, 0.0), ("simpo", 1.0, 0.1)])
def test_cpo_and_simpo_equal_trl(trl, models, pairs, kind, cpo_alpha, eps):
    """CPOTrainer.get_batch_loss_metrics (its forward, get_batch_logps, cpo_loss, NLL) vs sequence_logps,
    cpo_loss/simpo_loss and sft_term as CPO's NLL: loss, rewards, gradients."""
    trainer = _stub(trl.CPO, is_encoder_decoder=False, pad_token_id=0, cpo_alpha=cpo_alpha, loss_type=kind, beta=BETA,
                    label_smoothing=eps, simpo_gamma=0.5, alpha=0.0)
    trl_loss, metrics = trainer.get_batch_loss_metrics(models.policy, _pairwise_batch(pairs))
    per_token, mask = token_logps(_policy_logits(models, pairs), pairs.labels)
    logp, n = per_token.sum(-1), mask.sum(-1)
    if kind in ("ipo", "simpo"):
        logp = logp / n
    lw, ll = logp.chunk(2)
    if kind == "simpo":
        losses, rw, rl = simpo_loss(lw, ll, BETA, gamma=0.5, label_smoothing=eps)
    else:
        losses, rw, rl = cpo_loss(lw, ll, BETA, kind, label_smoothing=eps)
    our_loss = losses.mean() + cpo_alpha * sft_term(per_token[:B], mask[:B]).mean()
    assert float(our_loss.detach()) == pytest.approx(float(trl_loss.detach()), abs=1e-5, rel=1e-6)
    assert rw.mean().item() == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
    assert rl.mean().item() == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    for g_trl, g_ours in zip(_grads(models.policy, trl_loss), _grads(models.policy, our_loss), strict=True):
        torch.testing.assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-5)


def test_orpo_equals_trl_with_nll_on_prompt_and_departs_by_design_without(trl, models, pairs):
    """ORPOTrainer.get_batch_loss_metrics vs orpo_loss + causal_lm_loss on orpo_nll_labels.

    With nll_on_prompt=True (TRL's choice) the totals, log-odds and gradients match; lmlab's default
    (response-only NLL) differs from TRL by exactly NLL(prompt+response) − NLL(response)."""
    beta = 0.25
    trainer = _stub(trl.ORPO, is_encoder_decoder=False, padding_value=0, beta=beta)
    trl_loss, metrics = trainer.get_batch_loss_metrics(models.policy, _pairwise_batch(pairs))
    logits = _policy_logits(models, pairs)
    logp, n = sequence_logps(logits, pairs.labels)
    or_losses, log_odds = orpo_loss(*(logp / n).chunk(2), beta)
    assert log_odds.mean().item() == pytest.approx(metrics["log_odds_chosen"], abs=1e-5)
    assert (or_losses / -beta).mean().item() == pytest.approx(metrics["log_odds_ratio"], abs=1e-5)
    nll = {}
    for on_prompt in (True, False):
        labels = orpo_nll_labels(pairs.input_ids, pairs.labels, pairs.attention_mask, nll_on_prompt=on_prompt)
        nll[on_prompt] = causal_lm_loss(logits[:B], labels[:B])[0]
    trl_style = nll[True] + or_losses.mean()
    assert float(trl_style.detach()) == pytest.approx(float(trl_loss.detach()), abs=1e-5, rel=1e-6)
    assert metrics["nll_loss"] == pytest.approx(float(nll[True].detach()), abs=1e-5)
    lmlab_default = nll[False] + or_losses.mean()
    assert abs(float(lmlab_default.detach()) - float(trl_loss.detach())) > 1e-2  # the prompt really is excluded
    for g_trl, g_ours in zip(_grads(models.policy, trl_loss), _grads(models.policy, trl_style), strict=True):
        torch.testing.assert_close(g_ours, g_trl, rtol=1e-4, atol=1e-5)


def test_sequence_logps_equal_trl_get_batch_logps(trl, models, pairs):
    """TRL's get_batch_logps (selective_log_softmax), summed and averaged, on the same logits and labels."""
    logits = _policy_logits(models, pairs).detach()
    total, n = sequence_logps(logits, pairs.labels)
    torch.testing.assert_close(total, trl.CPO.get_batch_logps(logits, pairs.labels), rtol=0, atol=1e-5)
    torch.testing.assert_close(total / n, trl.ORPO.get_batch_logps(logits, pairs.labels, average_log_prob=True), rtol=0, atol=1e-6)
    assert F.cross_entropy(logits[:, :-1].reshape(-1, models.vocab), pairs.labels[:, 1:].reshape(-1)).item() == pytest.approx(
        -(total.sum() / n.sum()).item(), abs=1e-6)
