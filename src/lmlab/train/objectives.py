"""Training objectives as pure functions of tensors: no forward pass, no model, no config.

Each loss takes the tensors a step function computed (logits, rewards, log-probabilities) and
returns the loss plus what the trainer needs to weight it. Keeping them pure is what lets tests
check worked values by hand and compare with reference implementations (torch, HF, TRL).

`OBJECTIVES` is the table later stages join (DPO, IPO, KTO, SimPO, ORPO): a variant is an entry,
not a branch in the trainer.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

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


OBJECTIVES: dict[str, Callable[..., tuple[Tensor, object]]] = {
    "causal_lm": causal_lm_loss,
    "seq2seq": seq2seq_loss,
    "bradley_terry": bradley_terry_loss,
}
"""Every loss by name; stages and configs refer to these keys."""


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL per token), capped so a diverged model prints a number, not an overflow."""
    return float(torch.exp(torch.tensor(min(mean_nll, 50.0))))
