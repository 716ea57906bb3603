"""Training objectives as pure functions of tensors: no forward pass, no model, no config.

Each loss takes the tensors a step function computed (logits, rewards, log-probabilities) and
returns the loss plus what the trainer needs to weight it. Keeping them pure is what lets tests
check worked values by hand and compare with reference implementations (torch, HF, TRL).

A variant is a table entry, not a branch: `DPO_LOSSES`, `KTO_LOSSES` and `CPO_LOSSES` map a
`loss=` name to its per-example loss, and the preference steps dispatch through them.
The preference losses (DPO and its variants, KTO, CPO/SimPO, ORPO) follow TRL 1.x's formulas
exactly (tests/test_preference_objectives.py checks each against TRL's own code to 1e-5); where
TRL departs from the paper, the docstring says so.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.config import closest
from lmlab.errors import ConfigError

IGNORE_INDEX = -100


def _token_ce(logits: Tensor, labels: Tensor, ignore_index: int) -> tuple[Tensor, int]:
    """Mean cross-entropy over the non-ignored positions, and how many there were."""
    V = logits.size(-1)
    flat_labels = labels.reshape(-1)  # (N,)
    n_tokens = int((flat_labels != ignore_index).sum())
    # float32 log-softmax: bf16 logits lose ~3 digits in logsumexp over a large vocabulary.
    total = F.cross_entropy(logits.reshape(-1, V).float(), flat_labels, ignore_index=ignore_index, reduction="sum")
    return total / max(n_tokens, 1), n_tokens


def causal_lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, int]:
    """Next-token negative log-likelihood, L = -1/N Σ_t log p(x_{t+1} | x_{≤t}) (Bengio et al. 2003, eq. 1).

    logits (B, T, V) and labels (B, T) follow the Hugging Face convention: labels are aligned with
    `input_ids` and the shift happens here (position t predicts label t+1). Positions labelled
    `ignore_index` (prompt tokens, padding) do not count. Returns (mean over counted tokens, N);
    N = 0 gives a zero loss, so an all-masked micro-batch contributes nothing.
    """
    shift_logits = logits[:, :-1, :]  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    return _token_ce(shift_logits, shift_labels, ignore_index)


def seq2seq_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, int]:
    """Decoder negative log-likelihood of the target, -1/N Σ_t log p(y_t | y_<t, x) (Sutskever et al. 2014, eq. 1).

    logits (B, T, V) are the decoder's outputs for decoder inputs = labels shifted right, so they
    are already aligned with labels (B, T): no shift here. Returns (mean loss, N counted tokens).
    """
    return _token_ce(logits, labels, ignore_index)


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
    """Pairwise reward-model loss, -log σ(r_c - r_r - m).

    Bradley & Terry (1952) model P(chosen ≻ rejected) = σ(r_c - r_r); the reward-model loss is its
    negative log-likelihood (Ouyang et al. 2022, InstructGPT, eq. 1). The margin m (a float or a
    per-pair tensor) asks for a gap of at least m between the two rewards (Touvron et al. 2023,
    Llama 2, eq. 2). Computed as softplus(-(r_c - r_r - m)), which is exact and does not overflow.

    r_chosen, r_rejected: (B,). Returns per-pair losses (B,) and the accuracy (fraction of pairs
    with r_c > r_r, a 0-dim tensor).
    """
    diff = r_chosen.float() - r_rejected.float()  # (B,)
    losses = F.softplus(-(diff - margin))  # (B,)
    accuracy = (diff > 0).float().mean()
    return losses, accuracy




def perplexity(mean_nll: float) -> float:
    """exp(mean NLL per token), capped so a diverged model prints a number, not an overflow."""
    return float(torch.exp(torch.tensor(min(mean_nll, 50.0))))


# --- Log-probabilities of completions ----------------------------------------------------------


def token_logps(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """log p(label_{t+1} | ≤t) at every shifted position, in float32, and which positions count.

    logits (B, T, V) and labels (B, T) are aligned as for `causal_lm_loss` (position t predicts
    label t+1). Returns per_token (B, T-1), zero where the label is `ignore_index`, and mask
    (B, T-1) bool. float32 because a bf16 logsumexp over the vocabulary loses ~3 digits, and the
    preference losses subtract two sums of hundreds of such terms.
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != ignore_index  # (B, T-1)
    picked = shift_logits.gather(-1, shift_labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    per_token = picked - torch.logsumexp(shift_logits, dim=-1)  # (B, T-1)
    return per_token.masked_fill(~mask, 0.0), mask


def sequence_logps(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """logπ(y|x) = Σ_t log p(y_t | x, y_<t) over the counted (completion) tokens, and their number |y|.

    Returns logp_sum (B,) float32 and n_tokens (B,) int64. Divide one by the other for the
    length-averaged log-probs SimPO, CPO-IPO and ORPO use.
    """
    per_token, mask = token_logps(logits, labels, ignore_index)
    return per_token.sum(-1), mask.sum(-1)


def sft_term(chosen_token_logps: Tensor, chosen_mask: Tensor) -> Tensor:
    """Token-mean NLL of the chosen completions of the micro-batch, broadcast to every pair: (B,).

    The "sft" loss_type of RPO (Pang et al. 2024, arXiv:2404.19733, eq. 3: DPO + α·NLL of the
    chosen response) and MPO (arXiv:2411.10442), as TRL computes it: one mean over all chosen
    completion tokens of the micro-batch (not a per-pair mean), expanded so `combine_losses`
    can treat it like a per-pair loss; its batch mean is the token mean. CPO's NLL term
    (`cpo_alpha`, Xu et al. 2024 eq. 5) is the same quantity. chosen_token_logps, chosen_mask:
    (B, T-1) from `token_logps`. No counted token gives a zero (that keeps the graph).
    """
    B = chosen_token_logps.size(0)
    n = chosen_mask.sum()
    if int(n) == 0:
        return (chosen_token_logps.sum() * 0.0).expand(B)
    return (-chosen_token_logps[chosen_mask.bool()].mean()).expand(B)


def combine_losses(named_losses: Mapping[str, Tensor], weights: Sequence[float] | Mapping[str, float] | None = None) -> Tensor:
    """Σ_k w_k · mean(losses_k): TRL's `loss_type=[...]`, `loss_weights=[...]` mix (RPO, MPO).

    named_losses maps a loss name to its per-pair losses (B,); weights are in the same order (or
    by name); None weighs each 1. Returns a 0-dim tensor.
    """
    names = list(named_losses)
    if weights is None:
        w = [1.0] * len(names)
    elif isinstance(weights, Mapping):
        missing = [n for n in names if n not in weights]
        if missing:
            raise ConfigError(f"loss_weights: no weight for {', '.join(missing)}; give one weight per loss ({', '.join(names)})")
        w = [float(weights[n]) for n in names]
    else:
        w = [float(x) for x in weights]
        if len(w) != len(names):
            raise ConfigError(f"loss_weights: {len(w)} weights for {len(names)} losses ({', '.join(names)}); give one weight per loss")
    return sum(wk * named_losses[n].mean() for n, wk in zip(names, w, strict=True))


# --- DPO and its variants ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PairTerms:
    """What the DPO-family losses read, computed once per batch. Every tensor is (B,).

    chosen/rejected are the log-ratios c = logπ(yw) − logπref(yw), r = logπ(yl) − logπref(yl);
    chosen_score/rejected_score are f'(π/πref) of the f-divergence (equal to c, r for reverse KL).
    """

    beta: float
    chosen: Tensor
    rejected: Tensor
    chosen_score: Tensor
    rejected_score: Tensor
    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_lengths: Tensor | None
    rejected_lengths: Tensor | None
    label_smoothing: float
    discopop_tau: float

    @property
    def delta(self) -> Tensor:
        """δ = s_c − s_r (Δ = c − r for reverse KL)."""
        return self.chosen_score - self.rejected_score

    def per_token_delta(self) -> Tensor:
        """s_c/|yw| − s_r/|yl|: the length-normalised margin of TRL's IPO and sigmoid_norm."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            raise ConfigError("this DPO loss averages per token: pass chosen_lengths and rejected_lengths (completion token counts)")
        return self.chosen_score / self.chosen_lengths.clamp(min=1) - self.rejected_score / self.rejected_lengths.clamp(min=1)


def _smoothed_logistic(z: Tensor, eps: float) -> Tensor:
    """−(1−ε)·logσ(z) − ε·logσ(−z): the logistic loss against a label flipped with probability ε."""
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _hinge(z: Tensor) -> Tensor:
    """max(0, 1 − z): SLiC-HF (Zhao et al. 2023, arXiv:2305.10425, eq. 1 with δ = 1)."""
    return torch.relu(1 - z)


def _ipo(delta: Tensor, beta: float) -> Tensor:
    """(δ − 1/(2τ))²: IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17), β playing τ."""
    return (delta - 1 / (2 * beta)) ** 2


def _dpo_sigmoid(t: PairTerms) -> Tensor:
    """DPO, Rafailov et al. 2023 (arXiv:2305.18290), eq. 7: −logσ(β·δ)."""
    return -F.logsigmoid(t.beta * t.delta)


def _dpo_hinge(t: PairTerms) -> Tensor:
    """SLiC-HF hinge on the DPO margin (as in RSO, arXiv:2309.06657): max(0, 1 − β·δ)."""
    return _hinge(t.beta * t.delta)


def _dpo_ipo(t: PairTerms) -> Tensor:
    """IPO, eq. 17, with TRL's departure: the log-ratios are averaged per completion token.

    The paper's h is a difference of sequence log-ratios, so the squared loss grows with length;
    TRL divides each score by its completion length (s_c/|yw| − s_r/|yl|), a choice its comment
    says the IPO authors confirmed. We follow TRL, so β means the same here as there.
    """
    return _ipo(t.per_token_delta(), t.beta)


def _dpo_exo_pair(t: PairTerms) -> Tensor:
    """EXO-pref, Ji et al. 2024 (arXiv:2402.00856), eq. 16 with K = 2.

    KL(p_θ ‖ p_rh) with p_θ = softmax over {yw, yl} of β·log-ratio, p_rh = (1−ε, ε); ε > 0 (1e-3 in the paper).
    """
    z = t.beta * t.delta
    eps = torch.tensor(t.label_smoothing, dtype=z.dtype, device=z.device)
    return torch.sigmoid(z) * (F.logsigmoid(z) - torch.log1p(-eps)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - torch.log(eps))


def _dpo_nca_pair(t: PairTerms) -> Tensor:
    """NCA, Chen et al. 2024 (arXiv:2402.05369), pairwise: −logσ(βc) − ½logσ(−βc) − ½logσ(−βr)."""
    bc, br = t.beta * t.chosen, t.beta * t.rejected
    return -F.logsigmoid(bc) - 0.5 * F.logsigmoid(-bc) - 0.5 * F.logsigmoid(-br)


def _dpo_robust(t: PairTerms) -> Tensor:
    """rDPO, Chowdhury et al. 2024 (arXiv:2403.00409), eq. 8: unbiased under label flips with rate ε < ½.

    [−(1−ε)·logσ(βδ) + ε·logσ(−βδ)] / (1 − 2ε).
    """
    z, eps = t.beta * t.delta, t.label_smoothing
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def _dpo_bco_pair(t: PairTerms) -> Tensor:
    """BCO, Jung et al. 2024 (arXiv:2404.04656), pairwise: −logσ(βc) − logσ(−βr).

    Departure (TRL 1.x's): no running-mean reward shift δ, which the paper and BCOTrainer use.
    """
    return -F.logsigmoid(t.beta * t.chosen) - F.logsigmoid(-t.beta * t.rejected)


def _dpo_sppo_hard(t: PairTerms) -> Tensor:
    """SPPO, Wu et al. 2024 (arXiv:2405.00675), eq. 4.7 with hard win probabilities P = 1 and 0.

    (c − 1/(2β))² + (r + 1/(2β))²; the paper's soft P comes from a preference model (PairRM).
    """
    return (t.chosen - 0.5 / t.beta) ** 2 + (t.rejected + 0.5 / t.beta) ** 2


def _dpo_aot(t: PairTerms) -> Tensor:
    """AOT, Melnyk et al. 2024 (arXiv:2406.05882), paired: first-order dominance via sorting.

    d = sort_batch(logπ(yw) − logπ(yl)) − sort_batch(logπref(yw) − logπref(yl)); loss
    −(1−ε)logσ(βd) − ε·logσ(−βd). Depends on the whole batch, so per-pair values are of sorted
    quantiles, not of pair i; only their mean is meaningful. Batch 1 equals sigmoid.
    """
    policy = torch.sort(t.policy_chosen - t.policy_rejected, dim=0).values
    ref = torch.sort(t.ref_chosen - t.ref_rejected, dim=0).values
    return _smoothed_logistic(t.beta * (policy - ref), t.label_smoothing)


def _dpo_aot_unpaired(t: PairTerms) -> Tensor:
    """AOT unpaired (same paper): d = sort_batch(c) − sort_batch(r); same smoothed logistic loss."""
    d = torch.sort(t.chosen, dim=0).values - torch.sort(t.rejected, dim=0).values
    return _smoothed_logistic(t.beta * d, t.label_smoothing)


def _dpo_apo_zero(t: PairTerms) -> Tensor:
    """APO-zero, D'Oosterlinck et al. 2024 (arXiv:2408.06266), eq. 7: (1 − σ(βc)) + σ(βr).

    Raises the chosen likelihood and lowers the rejected one: for chosen answers better than the model's own.
    """
    return (1 - torch.sigmoid(t.beta * t.chosen)) + torch.sigmoid(t.beta * t.rejected)


def _dpo_apo_down(t: PairTerms) -> Tensor:
    """APO-down, same paper, eq. 8: σ(βc) + (1 − σ(β(c − r))). For chosen answers worse than the model's own."""
    return torch.sigmoid(t.beta * t.chosen) + (1 - torch.sigmoid(t.beta * (t.chosen - t.rejected)))


def _dpo_discopop(t: PairTerms) -> Tensor:
    """DiscoPOP (log-ratio modulated), Chris Lu et al. 2024 (arXiv:2406.08414), eq. 5.

    ρ = βδ, m = σ(ρ/τ); loss (1 − m)·(−logσ(ρ)) + m·exp(−ρ). Departure from TRL's arithmetic
    only: m·exp(−ρ) is computed as exp(logσ(ρ/τ) − ρ), which is equal but finite where TRL's
    product is inf·0 = NaN (ρ ≲ −88 in float32).
    """
    rho = t.beta * t.delta
    return -F.logsigmoid(rho) * torch.sigmoid(-rho / t.discopop_tau) + torch.exp(F.logsigmoid(rho / t.discopop_tau) - rho)


def _dpo_sigmoid_norm(t: PairTerms) -> Tensor:
    """Length-normalised DPO (the normalisation SimPO, Meng et al. 2024, arXiv:2405.14734 §2.2 argues for),
    keeping the reference: −logσ(β·(s_c/|yw| − s_r/|yl|))."""
    return -F.logsigmoid(t.beta * t.per_token_delta())


DPO_LOSSES: dict[str, Callable[[PairTerms], Tensor]] = {
    "sigmoid": _dpo_sigmoid,
    "hinge": _dpo_hinge,
    "ipo": _dpo_ipo,
    "exo_pair": _dpo_exo_pair,
    "nca_pair": _dpo_nca_pair,
    "robust": _dpo_robust,
    "bco_pair": _dpo_bco_pair,
    "sppo_hard": _dpo_sppo_hard,
    "aot": _dpo_aot,
    "aot_unpaired": _dpo_aot_unpaired,
    "apo_zero": _dpo_apo_zero,
    "apo_down": _dpo_apo_down,
    "discopop": _dpo_discopop,
    "sigmoid_norm": _dpo_sigmoid_norm,
}
"""Per-pair DPO-family losses by TRL's `loss_type` name. "sft" is not here: see `sft_term`."""

DPO_LOSS_TYPES = (*DPO_LOSSES, "sft")
"""Every name a `loss=` list may hold (combine with `combine_losses`)."""


def _alpha_score(logratio: Tensor, alpha: float) -> Tensor:
    """f'(t) = (t^(α−1) − 1)/(α − 1) at t = exp(logratio); α → 1 is reverse KL. The exponent is
    clamped as TRL does so exp stays finite in the input's dtype."""
    if abs(alpha - 1.0) < 1e-6:
        return logratio
    clamp_max = {torch.float16: 11.0}.get(logratio.dtype, 80.0)
    scaled = torch.clamp(((alpha - 1.0) * logratio).float(), max=clamp_max)
    return (torch.exp(scaled) - 1.0).to(logratio.dtype) / (alpha - 1.0)


F_DIVERGENCES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "reverse_kl": lambda x, alpha: x,  # f'(t) = log t
    "forward_kl": lambda x, alpha: 1 - torch.exp(-x),  # f'(t) = 1 − 1/t
    "js_divergence": lambda x, alpha: math.log(2) + F.logsigmoid(x),  # f'(t) = log(2t/(1+t))
    "alpha_divergence": _alpha_score,
}
"""f-DPO (Wang et al. 2023, arXiv:2309.16240, Table 1): the score f'(π/πref) replacing the log-ratio."""

F_DIVERGENCE_LOSSES = frozenset({"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"})
"""Losses that read only the score difference δ, where f-DPO's β·log Z(x) cancels; the others need reverse KL."""


def _unknown(what: str, name: str, choices: Sequence[str]) -> ConfigError:
    hint = closest(name, choices)
    return ConfigError(f"unknown {what} '{name}'" + (f"; did you mean '{hint}'?" if hint else "") + f" (choices: {', '.join(choices)})")


def check_dpo_options(kinds: Sequence[str], beta: float, label_smoothing: float = 0.0, f_divergence: str = "reverse_kl") -> None:
    """Raise ConfigError for a DPO setting no loss can run with, before any work is done."""
    if not beta > 0:
        raise ConfigError(f"beta={beta}: β must be > 0 (it scales the log-ratios; 0.1 is the usual DPO value)")
    for kind in kinds:
        if kind not in DPO_LOSS_TYPES:
            raise _unknown("DPO loss", kind, DPO_LOSS_TYPES)
    if f_divergence not in F_DIVERGENCES:
        raise _unknown("f_divergence", f_divergence, tuple(F_DIVERGENCES))
    if f_divergence != "reverse_kl" and not set(kinds) <= F_DIVERGENCE_LOSSES:
        bad = sorted(set(kinds) - F_DIVERGENCE_LOSSES)
        raise ConfigError(f"f_divergence={f_divergence} works only with {', '.join(sorted(F_DIVERGENCE_LOSSES))}; not with {', '.join(bad)} (use f_divergence=reverse_kl)")
    if "robust" in kinds and not 0.0 <= label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing={label_smoothing}: the robust loss needs a flip rate in [0, 0.5)")
    if "exo_pair" in kinds and not 0.0 < label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing={label_smoothing}: exo_pair needs 0 < label_smoothing < 1 (the EXO paper uses 1e-3)")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    kind: str = "sigmoid",
    *,
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    f_divergence: str = "reverse_kl",
    f_alpha: float = 0.5,
    discopop_tau: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """A DPO-family loss per pair, and the implicit rewards β·c, β·r (detached).

    Inputs (B,): summed completion log-probs (`sequence_logps`) under the policy and the frozen
    reference. kind is a `DPO_LOSSES` key; each entry's docstring gives its paper and equation.
    chosen_lengths/rejected_lengths (B,) are completion token counts, needed by ipo and
    sigmoid_norm. label_smoothing is ε for robust, exo_pair, aot and aot_unpaired (ignored by
    the others, as in TRL). f_divergence/f_alpha select the f-DPO score; discopop_tau is τ.
    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); the batch loss is the mean.
    """
    check_dpo_options([kind], beta, label_smoothing, f_divergence)
    if kind not in DPO_LOSSES:
        raise ConfigError(f"DPO loss '{kind}' is computed from token log-probs, not pair log-probs: use sft_term")
    c = policy_chosen_logps - ref_chosen_logps  # (B,)
    r = policy_rejected_logps - ref_rejected_logps  # (B,)
    score = F_DIVERGENCES[f_divergence]
    terms = PairTerms(
        beta=beta, chosen=c, rejected=r, chosen_score=score(c, f_alpha), rejected_score=score(r, f_alpha),
        policy_chosen=policy_chosen_logps, policy_rejected=policy_rejected_logps,
        ref_chosen=ref_chosen_logps, ref_rejected=ref_rejected_logps,
        chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
        label_smoothing=label_smoothing, discopop_tau=discopop_tau,
    )
    return DPO_LOSSES[kind](terms), beta * c.detach(), beta * r.detach()


# --- KTO ----------------------------------------------------------------------------------------


def _kto_prospect(r: Tensor, z0: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """KTO, Ethayarajh et al. 2024 (arXiv:2402.01306), eq. 7 (value 1 − v): desirable 1 − σ(β(r − z0)),
    undesirable 1 − σ(β(z0 − r))."""
    return 1 - torch.sigmoid(beta * (r - z0)), 1 - torch.sigmoid(beta * (z0 - r))


def _kto_apo_zero_unpaired(r: Tensor, z0: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """APO-zero unpaired (arXiv:2408.06266, eq. 7 split by label): 1 − σ(βr) and σ(βr); no reference point."""
    return 1 - torch.sigmoid(beta * r), torch.sigmoid(beta * r)


KTO_LOSSES: dict[str, Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]] = {
    "kto": _kto_prospect,
    "apo_zero_unpaired": _kto_apo_zero_unpaired,
}
"""KTO-family losses by TRL's KTOConfig `loss_type`: (desirable, undesirable) per-example values."""


def kl_mismatched(items: Sequence) -> list:
    """The KL completions of a KTO batch: example i gets completion i−1 (rotation by +1).

    TRL's rule (`KL_completion_ids = [c[-1]] + c[:-1]` per batch): (x_1, y_n), (x_2, y_1), …,
    (x_n, y_{n−1}), so the mismatched set equals the batch's own completions. Needs n ≥ 2.
    """
    items = list(items)
    return items[-1:] + items[:-1]


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    kl_policy_logps: Tensor | None,
    kl_ref_logps: Tensor | None,
    desirable: Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    *,
    kind: str = "kto",
    z0_all_reduce: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """KTO per example (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7), with TRL 1.x's reference point.

    r = logπ(y|x) − logπref(y|x) (B,). z0 = max(0, mean_i[logπ(y'_i|x_i) − logπref(y'_i|x_i)])
    over mismatched pairs y'_i = completion of example i−1 (`kl_mismatched`), detached; the
    paper's z0 is KL(πθ‖πref) estimated the same way. z0_all_reduce, if given, maps the local
    mean to the mean over processes before the clamp (TRL gathers then clamps). desirable (B,)
    bool. Desirable: λ_D·(1 − σ(β(r − z0))); undesirable: λ_U·(1 − σ(β(z0 − r))). The batch
    loss is the plain mean of these weighted values (weights are not renormalised, as in TRL).
    kind "apo_zero_unpaired" needs no KL inputs (z0 = 0). Returns (losses (B,), rewards β·r
    (B,) detached, z0 (0-dim)).
    """
    if not beta > 0:
        raise ConfigError(f"beta={beta}: β must be > 0 (0.1 is the usual KTO value)")
    if kind not in KTO_LOSSES:
        raise _unknown("KTO loss", kind, tuple(KTO_LOSSES))
    r = policy_logps - ref_logps  # (B,)
    if kind == "kto":
        if kl_policy_logps is None or kl_ref_logps is None:
            raise ConfigError("KTO needs the mismatched-pair log-probs (kl_policy_logps, kl_ref_logps) for its reference point z0")
        z0 = (kl_policy_logps - kl_ref_logps).mean().detach()
        if z0_all_reduce is not None:
            z0 = z0_all_reduce(z0)
        z0 = z0.clamp(min=0)
    else:
        z0 = torch.zeros((), dtype=r.dtype, device=r.device)
    good, bad = KTO_LOSSES[kind](r, z0, beta)
    losses = torch.where(desirable.bool(), desirable_weight * good, undesirable_weight * bad)  # (B,)
    return losses, beta * r.detach(), z0


# --- Reference-free: CPO, SimPO, ORPO -----------------------------------------------------------


CPO_LOSSES: dict[str, Callable[[Tensor, float, float, float], Tensor]] = {
    # (margin Δ = logπ(yw) − logπ(yl), β, ε, γ) -> per-pair loss
    "sigmoid": lambda d, beta, eps, gamma: _smoothed_logistic(beta * d, eps),  # CPO eq. 3 (+ε smoothing)
    "hinge": lambda d, beta, eps, gamma: _hinge(beta * d),
    "ipo": lambda d, beta, eps, gamma: _ipo(d, beta),
    "simpo": lambda d, beta, eps, gamma: _smoothed_logistic(beta * (d - gamma / beta), eps),  # SimPO eq. 6
}
"""CPO-family losses by TRL's CPOConfig `loss_type` (AlphaPO is the `alpha` argument of cpo_loss)."""


def cpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    beta: float,
    kind: str = "sigmoid",
    label_smoothing: float = 0.0,
    gamma: float = 0.5,
    alpha: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """CPO, Xu et al. 2024 (arXiv:2401.08417), eq. 3: DPO's loss with the reference dropped.

    chosen_logps, rejected_logps (B,): policy log-probs, summed for sigmoid/hinge and averaged
    per token for ipo/simpo (TRL's choice; pass `logp_sum / n_tokens`). Δ = l_w − l_l;
    sigmoid −(1−ε)logσ(βΔ) − ε·logσ(−βΔ); hinge max(0, 1 − βΔ); ipo (Δ − 1/(2β))²; simpo see
    `simpo_loss`. alpha ≠ 0 is AlphaPO (arXiv:2501.03884): each log-prob becomes
    (1 − p^(−α))/α. CPO's NLL term (eq. 5, weight `cpo_alpha`) is the caller's: `sft_term` on the
    chosen completion tokens. Returns (losses (B,), β·l_w (B,), β·l_l (B,)) as TRL logs them.
    """
    if not beta > 0:
        raise ConfigError(f"beta={beta}: β must be > 0")
    if kind not in CPO_LOSSES:
        raise _unknown("CPO loss", kind, tuple(CPO_LOSSES))
    if alpha != 0.0:
        chosen_logps = (1 - torch.exp(chosen_logps).pow(-alpha)) / alpha
        rejected_logps = (1 - torch.exp(rejected_logps).pow(-alpha)) / alpha
    losses = CPO_LOSSES[kind](chosen_logps - rejected_logps, beta, label_smoothing, gamma)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def simpo_loss(
    chosen_avg_logps: Tensor, rejected_avg_logps: Tensor, beta: float, gamma: float, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO, Meng et al. 2024 (arXiv:2405.14734), eq. 6: −logσ(β·(l_w − l_l) − γ).

    l = logπ(y|x)/|y|, the per-token average log-prob (length normalised), γ the target reward
    margin; no reference model. TRL computes β·((l_w − l_l) − γ/β), the same number. label_smoothing ε
    gives the conservative form −(1−ε)logσ(z) − ε·logσ(−z). Real SimPO has no NLL term (TRL:
    `cpo_alpha=0`). Returns (losses (B,), β·l_w, β·l_l).
    """
    return cpo_loss(chosen_avg_logps, rejected_avg_logps, beta, "simpo", label_smoothing, gamma)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0 without cancellation (Mächler 2012): log(−expm1 x) above −ln 2, log1p(−eˣ) below."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


ORPO_NLL_ON_PROMPT = False
"""lmlab's ORPO NLL counts response tokens only (TRL's counts prompt + response); see `orpo_loss`."""


def orpo_loss(chosen_avg_logps: Tensor, rejected_avg_logps: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """ORPO's odds-ratio term, Hong et al. 2024 (arXiv:2403.07691), eqs. 4–7.

    l_w, l_l (B,): per-token average log-probs of the chosen and rejected completions (as in
    TRL). odds(y) = p/(1 − p) with p = e^l, so log_odds = (l_w − l_l) − (log(1 − e^{l_w}) −
    log(1 − e^{l_l})) via the stable `log1mexp`. L_OR = −β·logσ(log_odds), β the paper's λ.
    Returns (or_losses (B,), log_odds (B,)); the full loss is NLL(chosen) + mean(or_losses).

    The NLL part (the caller's; labels from `orpo_nll_labels`): TRL's ORPOTrainer counts the
    prompt tokens too (labels = input_ids wherever attention_mask is 1). lmlab's default
    (`ORPO_NLL_ON_PROMPT = False`) counts the chosen **response tokens only**, token-averaged
    like `causal_lm_loss`: the paper's L_SFT is the NLL of the chosen response given the prompt
    (eq. 2), and SFT, DPO's sft term and CPO all mask the prompt, so ORPO's SFT half trains the
    same thing as `lmlab train sft`. `nll_on_prompt=True` reproduces TRL.
    """
    if not beta > 0:
        raise ConfigError(f"beta={beta}: ORPO's λ (beta) must be > 0 (0.1 is the paper's value)")
    lw, ll = chosen_avg_logps.float(), rejected_avg_logps.float()
    log_odds = (lw - ll) - (log1mexp(lw) - log1mexp(ll))  # (B,)
    return -beta * F.logsigmoid(log_odds), log_odds


def orpo_nll_labels(input_ids: Tensor, labels: Tensor, attention_mask: Tensor, nll_on_prompt: bool = ORPO_NLL_ON_PROMPT) -> Tensor:
    """Labels (B, T) for ORPO's NLL term: the prompt-masked `labels` (lmlab's default), or with
    nll_on_prompt every attended token of `input_ids` (TRL's ORPO). Feed to `causal_lm_loss`."""
    if nll_on_prompt:
        return input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return labels

