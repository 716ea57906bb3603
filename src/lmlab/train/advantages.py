"""The mathematics of online RL as pure functions of tensors: no model, no generation, no config.

Everything PPO, GRPO and RLOO compute between "the rewards are in" and "backward()" lives here,
so each piece is checked by hand (tests/test_advantages.py) and against TRL's own code:

- KL estimators k1, k2, k3 (Schulman, "Approximating KL Divergence", 2020);
- masked mean / variance / whitening (PPO's advantage normalisation);
- GAE(γ, λ) (Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", eq. 16);
- the clipped surrogate policy loss and the clipped value loss (Schulman et al. 2017, PPO, eq. 7 and
  the value clipping of OpenAI baselines);
- group-relative advantages (Shao et al. 2024, DeepSeekMath, GRPO eq. 3; Dr. GRPO's "no std";
  Lite-PPO's batch std) and leave-one-out baselines (Ahmadian et al. 2024, RLOO, eq. 6);
- token-loss aggregations grpo / bnpo / dr_grpo / dapo (each a (loss, weight) pair the shared
  loop turns into Σ loss·weight / Σ weight);
- the adaptive KL coefficient (Ziegler et al. 2019, "Fine-Tuning LMs from Human Preferences", eq. 2).

Shapes: B rollouts, T completion positions; `mask` (B, T) is 1 on real completion tokens (after
the prompt, up to and including the stop token) and 0 on padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLKind = Literal["k1", "k2", "k3"]
Scale = Literal["group", "batch", "none"]
Aggregation = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
AGGREGATIONS: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
STD_EPS = 1e-4
"""Added to the reward std before dividing (TRL grpo_trainer.py, torchtune's GRPO)."""


# -- log-probabilities and KL ------------------------------------------------------------------

def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / T) at each position: (B, T, V) → (B, T)."""
    logp = F.log_softmax(logits.float() / max(temperature, 1e-7), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: KLKind = "k1") -> Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π (Schulman 2020), with d = logπ − logπ_ref:

    k1 = d (unbiased, can be negative; PPO puts it in the reward), k2 = d²/2 (low variance, biased),
    k3 = exp(−d) + d − 1 (unbiased and ≥ 0; GRPO puts it in the loss, Shao et al. 2024 eq. 4).
    """
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


# -- masked statistics -------------------------------------------------------------------------

def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is 1 (0 when nothing is unmasked)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over the unmasked positions; Bessel-corrected n/(n−1) when `unbiased`."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean) / sqrt(var + eps) over the unmasked positions; masked positions become 0.

    PPO whitens advantages every round (Huang et al. 2024, "The N+ implementation details",
    detail 8); `shift_mean=False` scales without centring (used for rewards, where the sign matters).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the unmasked tokens: 1 = the critic predicts returns exactly,
    0 = no better than a constant, < 0 = worse (PPO's standard critic diagnostic)."""
    var_r = masked_var(returns, mask)
    if float(var_r) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_r)


# -- PPO: per-token rewards, GAE, clipped losses ----------------------------------------------

def last_token_index(mask: Tensor) -> Tensor:
    """(B,) index of each row's last unmasked position (0 for an empty row)."""
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return (positions * mask.long()).amax(dim=1)


def kl_penalised_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, kl_coef: float,
                         kind: KLKind = "k1") -> tuple[Tensor, Tensor]:
    """Per-token rewards r_t = −β·KL_t, plus the sequence score at the last real token.

    Ziegler et al. 2019 eq. 2 / Ouyang et al. 2022 eq. 2: R(x, y) = r(x, y) − β log(π/π_ref), spread
    over tokens so GAE can assign credit. scores (B,), logp/ref_logp/mask (B, T).
    Returns (rewards (B, T), per-token KL (B, T)), both 0 on padding.
    """
    m = mask.to(logp.dtype)
    kl = kl_estimate(logp, ref_logp, kind) * m  # (B, T)
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards * m, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over each completion.

    δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}, with V and A zero after the last real
    token (the episode ends at the stop token). Returns (advantages, returns = A + V), (B, T),
    0 on padding.
    """
    m = mask.to(values.dtype)
    values = values * m
    T = rewards.size(1)
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                        eps_high: float | None = None) -> tuple[Tensor, Tensor]:
    """Per-token PPO surrogate l_t = −min(ρ_t·A_t, clip(ρ_t, 1−ε_low, 1+ε_high)·A_t), ρ_t = π/π_old.

    Schulman et al. 2017, eq. 7 (negated, to minimise); ε_high ≠ ε_low is DAPO's clip-higher
    (Yu et al. 2025). `advantages` is (B, T) or (B, 1) (one value per sequence, GRPO/RLOO).
    Returns (per-token loss, per-token "the clipped branch was taken" as 0/1), both (B, T).
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)
    unclipped = -ratio * advantages
    clipped = -torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    return torch.maximum(unclipped, clipped), (clipped > unclipped).to(logp.dtype)


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float = 0.2) -> tuple[Tensor, Tensor]:
    """Per-token ½·max((V − R)², (clip(V, V_old ± c) − R)²) (PPO's value clipping, as in OpenAI's
    lm-human-preferences and TRL's PPO). Returns (per-token loss, per-token clipped 0/1)."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    plain, capped = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * torch.maximum(plain, capped), (capped > plain).to(values.dtype)


# -- GRPO / RLOO: sequence-level advantages ---------------------------------------------------

def _bessel_std(x: Tensor, dim: int | None = None) -> Tensor:
    if dim is None:
        return x.std(unbiased=True) if x.numel() > 1 else torch.zeros((), dtype=x.dtype)
    return x.std(dim=dim, unbiased=True) if x.size(dim) > 1 else torch.zeros_like(x.select(dim, 0))


def group_advantages(rewards: Tensor, group_size: int, scale: Scale = "group", eps: float = STD_EPS) -> Tensor:
    """GRPO: Â_i = (R_i − mean_G R) / (std R + eps) over groups of `group_size` consecutive rollouts.

    Shao et al. 2024 eq. 3 (outcome supervision). `scale`: "group" (the paper; Bessel-corrected
    std of the group), "batch" (std of the whole batch; Lite-PPO, Liu et al. 2025), "none"
    (no division; Dr. GRPO, Liu et al. 2025, which removes the difficulty bias). rewards (N,) with
    N divisible by group_size; returns (N,).
    """
    n = rewards.numel()
    if n % group_size:
        raise ValueError(f"{n} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = _bessel_std(grouped, dim=1).repeat_interleave(group_size)
    elif scale == "batch":
        std = _bessel_std(rewards).expand_as(rewards)
    else:
        raise ValueError(f"unknown scale_rewards {scale!r}; use group, batch or none")
    return centred / (std + eps)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: A_i = R_i − (Σ_{j≠i} R_j)/(G − 1), the leave-one-out baseline (Ahmadian et al. 2024,
    eq. 6; Kool et al. 2019). Unbiased because the baseline does not depend on sample i."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 generations per prompt (num_generations >= 2)")
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).view(-1)


def tied_groups(rewards: Tensor, group_size: int, atol: float = 1e-6) -> Tensor:
    """(N/G,) bool: groups whose rewards all tie, so their advantages and gradient are zero (trl#3857)."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) <= atol


# -- token-loss aggregation --------------------------------------------------------------------

def aggregate(per_token: Tensor, mask: Tensor, kind: Aggregation = "dapo", max_completion_length: int | None = None
              ) -> tuple[Tensor, float]:
    """Reduce a per-token loss (B, T) to (loss, weight): the shared loop back-propagates
    Σ loss·weight / Σ weight over the accumulation window (and all processes), so:

    - "dapo"    weight = tokens:      Σ m·l / (all completion tokens in the window) (DAPO, Yu et al. 2025);
    - "bnpo"    weight = 1:           mean over micro-batches of each micro-batch's token mean (TRL bnpo);
    - "grpo"    weight = sequences:   mean over sequences of each sequence's token mean (Shao et al. 2024
                                      eq. 3's 1/|o_i|, which Dr. GRPO shows biases toward long wrong answers);
    - "dr_grpo" weight = sequences:   Σ m·l / (B·max_completion_length) (Liu et al. 2025, constant normaliser).
    """
    m = mask.to(per_token.dtype)
    tokens = m.sum()
    if kind == "dapo":
        return (per_token * m).sum() / tokens.clamp(min=1), float(tokens)
    if kind == "bnpo":
        return (per_token * m).sum() / tokens.clamp(min=1), 1.0
    if kind == "grpo":
        per_seq = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
        return per_seq.mean(), float(per_token.size(0))
    if kind == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo needs max_completion_length")
        return (per_token * m).sum() / (per_token.size(0) * max_completion_length), float(per_token.size(0))
    raise ValueError(f"unknown loss aggregation {kind!r}; use one of {', '.join(AGGREGATIONS)}")


def aggregation_weight(mask: Tensor, kind: Aggregation) -> float:
    """The `weight` `aggregate` will return, from the mask alone (the loop's `weight_of`)."""
    if kind == "dapo":
        return float(mask.sum())
    if kind == "bnpo":
        return 1.0
    return float(mask.size(0))


# -- the KL coefficient ------------------------------------------------------------------------

@dataclass
class KLController:
    """β for the KL penalty: fixed, or adaptive when `target` is set (Ziegler et al. 2019, eq. 2):

        e = clip(KL / target − 1, −0.2, 0.2);   β ← β·(1 + e·n / horizon)

    after each round of n rollouts, so β grows while the policy drifts past the target KL and
    shrinks while it stays inside. Its state is one float (saved with the rollout buffer).
    """

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n: int) -> float:
        if self.target is not None and self.target > 0:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon
        return self.value
