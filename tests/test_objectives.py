"""Losses by hand and against references (torch, the HF model's own loss)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.train.objectives import bradley_terry_loss, causal_lm_loss, seq2seq_loss
from lmlab.train.steps import StepContext, reward_step


def test_uniform_logits_give_ln_v():
    logits = torch.zeros(2, 5, 7)  # (B, T, V)
    labels = torch.randint(0, 7, (2, 5))
    loss, n = causal_lm_loss(logits, labels)
    assert n == 2 * 4  # the shift drops one position per row
    assert float(loss) == pytest.approx(math.log(7), abs=1e-6)


def test_causal_lm_loss_worked_value_and_shift():
    # one row, T=3, V=2: position 0 predicts labels[1], position 1 predicts labels[2]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[1, 0, 1]])
    loss, n = causal_lm_loss(logits, labels)
    # -log softmax([2, 0])[0] = log(1 + e^-2); -log softmax([0, 1])[1] = log(1 + e^-1)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert n == 2 and float(loss) == pytest.approx(expected, abs=1e-6)


def test_ignore_index_and_all_masked():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, :3] = -100
    loss, n = causal_lm_loss(logits, labels)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert n == 3 * 3 and float(loss) == pytest.approx(float(ref), abs=1e-6)
    zero, n0 = causal_lm_loss(logits, torch.full((3, 6), -100))
    assert n0 == 0 and float(zero) == 0.0


def test_matches_hf_model_loss(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    ours, _ = causal_lm_loss(out.logits, labels)
    assert float(ours) == pytest.approx(float(out.loss), abs=1e-5)


def test_seq2seq_loss_has_no_shift():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, 3, -100], [0, 4, -100, -100]])
    loss, n = seq2seq_loss(logits, labels)
    ref = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    assert n == 5 and float(loss) == pytest.approx(float(ref), abs=1e-6)


def test_bradley_terry_worked_values():
    rc = torch.tensor([2.0, 0.0, -1.0])
    rr = torch.tensor([0.0, 0.0, 1.0])
    losses, acc = bradley_terry_loss(rc, rr)
    expected = [math.log(1 + math.exp(-2.0)), math.log(2.0), math.log(1 + math.exp(2.0))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert float(acc) == pytest.approx(1 / 3)  # only the first pair is ranked right (ties are not)
    with_margin, _ = bradley_terry_loss(rc, rr, margin=1.0)  # softplus(-(rc - rr - m))
    assert with_margin.tolist() == pytest.approx([math.log(1 + math.exp(-1.0)), math.log(1 + math.e), math.log(1 + math.exp(3.0))], abs=1e-6)
    per_pair, _ = bradley_terry_loss(rc, rr, margin=torch.tensor([0.0, 1.0, 0.0]))
    assert per_pair.tolist() == pytest.approx([expected[0], math.log(1 + math.e), expected[2]], abs=1e-6)
    big, _ = bradley_terry_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert float(big) == pytest.approx(200.0)  # no overflow to inf


def test_reward_step_splits_halves_and_reports_metrics():
    class Fixed(torch.nn.Module):
        """A 'model' whose reward is the first token id, to check the chosen/rejected split."""

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": input_ids[:, :1].float()})()

    ids = torch.tensor([[3, 0], [1, 0], [1, 0], [2, 0]])  # chosen rewards 3, 1; rejected 1, 2
    out = reward_step(Fixed(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                      StepContext(options={"margin": 0.5, "center_rewards": 0.1}))
    bt = (math.log(1 + math.exp(-(2 - 0.5))) + math.log(1 + math.exp(-(-1 - 0.5)))) / 2
    center = 0.1 * ((3 + 1) ** 2 + (1 + 2) ** 2) / 2
    assert float(out.loss) == pytest.approx(bt + center, abs=1e-6)
    assert out.weight == 2 and out.metrics["accuracy"] == 0.5 and out.metrics["margin"] == pytest.approx(0.5)


def test_perplexity_is_reported_only_for_token_likelihood_steps():
    """exp(loss) is a perplexity for LM losses; for preference losses it would be a made-up number."""
    from lmlab.train.steps import lm_step, reports_perplexity, reward_step, seq2seq_step

    assert reports_perplexity(lm_step) and reports_perplexity(seq2seq_step)
    assert not reports_perplexity(reward_step)

    def wrapped(model, batch, ctx):
        return lm_step(model, batch, ctx)

    assert not reports_perplexity(wrapped)
    wrapped.loss_is_token_nll = True
    assert reports_perplexity(wrapped)
