"""RL maths (lmlab.train.advantages): hand-worked values, ALIGNMENT-NOTES §1.12, and TRL parity.

The GAE, whitening, clipping and aggregation numbers below were worked out by hand (the working
is in the comments); the KL and group-advantage values are the reference values of §1.12.
"""
from __future__ import annotations

import math

import pytest
import torch

from lmlab.train.advantages import (
    KLController,
    aggregate,
    aggregation_weight,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    kl_penalised_rewards,
    masked_whiten,
    rloo_advantages,
    tied_groups,
)


def close(a, b, tol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol), (a, b)


def test_kl_estimators_reference_values():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    close(kl_estimate(logp, ref, "k1"), [0.5])
    close(kl_estimate(logp, ref, "k2"), [0.125])
    close(kl_estimate(logp, ref, "k3"), [0.106531])  # e^-0.5 + 0.5 - 1
    # k3 is never negative, k1 is when the policy is less likely than the reference
    d = torch.linspace(-3, 3, 13)
    assert (kl_estimate(d, torch.zeros_like(d), "k3") >= 0).all()
    assert kl_estimate(torch.tensor([-2.0]), torch.tensor([-1.0]), "k1").item() == -1.0
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_gae_three_steps_by_hand():
    # γ=0.9, λ=0.5; row 0: r=[0,0,1], V=[.5,.6,.7]
    #   t=2: δ=1-.7=.3                   A2=.3
    #   t=1: δ=.9·.7-.6=.03              A1=.03+.45·.3=.165
    #   t=0: δ=.9·.6-.5=.04              A0=.04+.45·.165=.11425
    # row 1 ends after 2 tokens: r=[0,1,pad], V=[.5,.6,9(pad, ignored)]
    #   t=1: δ=1-.6=.4 (V after the end is 0)  A1=.4;  t=0: δ=.04  A0=.04+.45·.4=.22
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(adv, [[0.11425, 0.165, 0.3], [0.22, 0.4, 0.0]])
    close(ret, [[0.61425, 0.765, 1.0], [0.72, 1.0, 0.0]])
    # γ=λ=1: every advantage is the final reward minus the value (Monte Carlo)
    adv1, _ = gae(rewards[:1], values[:1], mask[:1], gamma=1.0, lam=1.0)
    close(adv1, [[0.5, 0.4, 0.3]])


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, Bessel variance ((1+0+1)/3)·3/2 = 1 → [-1, 0, 1], padding 0
    close(masked_whiten(x, mask), [[-1.0, 0.0, 1.0, 0.0]])
    close(masked_whiten(x, mask, shift_mean=False), [[1.0, 2.0, 3.0, 0.0]])


def test_clipped_policy_loss_by_hand():
    # ρ=1.5: A=+1 → max(-1.5, -1.2) = -1.2 (clipped); A=-1 → max(1.5, 1.2) = 1.5
    # ρ=0.5: A=+1 → max(-0.5, -0.8) = -0.5;          A=-1 → max(0.5, 0.8) = 0.8 (clipped)
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]]))
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, clipped = clipped_policy_loss(logp, old, adv, eps_low=0.2)
    close(loss, [[-1.2, 1.5, -0.5, 0.8]])
    close(clipped, [[1.0, 0.0, 0.0, 1.0]])
    # clip-higher (DAPO): ε_high=0.28 lets ρ=1.5 reach 1.28
    loss_hi, _ = clipped_policy_loss(logp, old, adv, eps_low=0.2, eps_high=0.28)
    close(loss_hi[0, 0], -1.28)
    # on-policy (ρ=1) the loss is -A but the gradient of logp is -A
    lp = torch.zeros(1, 2, requires_grad=True)
    loss1, _ = clipped_policy_loss(lp, lp.detach(), torch.tensor([[2.0, -3.0]]))
    loss1.sum().backward()
    close(lp.grad, [[-2.0, 3.0]])


def test_clipped_value_loss_by_hand():
    # V=1, V_old=.5, R=0:  plain 1, clipped V=.7 → .49; max 1 → 0.5 (not clipped)
    # V=1, V_old=.5, R=2:  plain 1, clipped (.7-2)²=1.69 → 0.845 (clipped)
    values = torch.tensor([1.0, 1.0])
    loss, clipped = clipped_value_loss(values, torch.tensor([0.5, 0.5]), torch.tensor([0.0, 2.0]), clip=0.2)
    close(loss, [0.5, 0.845])
    close(clipped, [0.0, 1.0])


def test_group_advantages_reference_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    close(group_advantages(r, 4), [0.865875, -0.865875, -0.865875, 0.865875])
    close(rloo_advantages(r, 4), [0.666667, -0.666667, -0.666667, 0.666667])
    close(group_advantages(r, 4, scale="none"), [0.5, -0.5, -0.5, 0.5])
    # two groups: group std is per group, batch std over all 8
    r2 = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    g = group_advantages(r2, 4)
    close(g[4:], [0, 0, 0, 0])  # a tied group: zero advantage (and zero gradient)
    assert tied_groups(r2, 4).tolist() == [False, True]
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r2, 3)


def _trl_grpo_advantages(rewards: torch.Tensor, g: int, scale: str) -> torch.Tensor:
    """TRL 1.16 trl/trainer/grpo_trainer.py:2765-2787 (sum_then_normalize), with its own nanstd."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    return adv / (std + 1e-4) if scale != "none" else adv


def _trl_rloo_advantages(rewards: torch.Tensor, g: int) -> torch.Tensor:
    """TRL 1.16 trl/trainer/rloo_trainer.py:1675-1690 (leave-one-out over scorable siblings)."""
    grouped = rewards.view(-1, g)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    baselines = ((torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (counts - 1)).view(-1)
    return rewards - baselines


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_trl(scale):
    g = torch.Generator().manual_seed(3)
    rewards = torch.rand(24, generator=g, dtype=torch.float64)
    for G in (2, 4, 8):
        close(group_advantages(rewards, G, scale=scale), _trl_grpo_advantages(rewards, G, scale), tol=1e-10)
        close(rloo_advantages(rewards, G), _trl_rloo_advantages(rewards, G), tol=1e-10)


def test_aggregations_by_hand():
    # rows: [1,2,3] and [4,pad,pad]; 4 tokens, sum 10, max_completion_length 4
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    expect = {"dapo": (2.5, 4.0), "bnpo": (2.5, 1.0), "grpo": (3.0, 2.0), "dr_grpo": (1.25, 2.0)}
    for kind, (loss, weight) in expect.items():
        got, w = aggregate(per_token, mask, kind, max_completion_length=4)
        close(got, loss)
        assert w == weight == aggregation_weight(mask, kind), kind
    # the loop's Σ loss·w / Σ w over two micro-batches = dapo over the union = global token mean
    a, wa = aggregate(per_token[:1], mask[:1], "dapo")
    b, wb = aggregate(per_token[1:], mask[1:], "dapo")
    close((a * wa + b * wb) / (wa + wb), 2.5)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(per_token, mask, "mean")


def test_kl_penalised_rewards_put_the_score_on_the_last_real_token():
    # β=0.1; k1 = [0.5, 0, pad] → rewards [-0.05, 0 + score 1.0, 0]
    logp = torch.tensor([[-1.0, -1.0, -7.0]])
    ref = torch.tensor([[-1.5, -1.0, -2.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([1.0]), logp, ref, torch.tensor([[1, 1, 0]]), kl_coef=0.1)
    close(rewards, [[-0.05, 1.0, 0.0]])
    close(kl, [[0.5, 0.0, 0.0]])


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3)
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(ret, torch.ones_like(ret), mask))


def test_adaptive_kl_controller_by_hand():
    # β=0.2, target 6, horizon 10000, n=128: KL=12 → e=+0.2 (clipped) → 0.2·(1 + 0.2·128/1e4) = 0.200512
    c = KLController(0.2, target=6.0, horizon=10000)
    assert c.update(12.0, 128) == pytest.approx(0.200512)
    c = KLController(0.2, target=6.0, horizon=10000)
    assert c.update(3.0, 128) == pytest.approx(0.199488)  # e = -0.5 → -0.2
    c = KLController(0.2, target=6.0, horizon=10000)
    assert c.update(6.6, 10000) == pytest.approx(0.22)  # e = 0.1, n = horizon
    fixed = KLController(0.05)
    assert fixed.update(100.0, 128) == 0.05
