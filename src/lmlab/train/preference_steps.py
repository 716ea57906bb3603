"""Step functions of the preference stages: forward passes and log-probs here, the maths in objectives.py.

Each step reads a batch of `lmlab.data.alignment_batches` (2B rows: chosen then rejected, or
completions then KL rows), runs the policy once over its rows, gets the reference log-probs
(cached in the batch as `ref_logps` with `precompute_ref=true`, else from the frozen reference:
`companions.reference_logits`), and calls one pure loss. `loss` is the mean over the B pairs (or
examples); `weight` = B, known before the forward pass (`batch_units`, the loop's `weight_of`).

Logged per step (TRL's names in brackets): `reward_chosen`/`reward_rejected` = β·log-ratio
[rewards/chosen, rewards/rejected], `reward_accuracy` = mean(β·c > β·r), `reward_margin` =
mean(β·c − β·r), `logp_chosen`/`logp_rejected` = the policy's summed log-probs (a falling chosen
log-prob, "likelihood displacement", ALIGNMENT-NOTES §3.12, shows here), and `kl_chosen`, the
per-token log-ratio log π − log π_ref on the chosen responses (the k1 estimate of KL(π‖π_ref) along
them; 0 at step 0).

Token-mean terms (the `sft` part of DPO mixes, CPO's NLL, ORPO's NLL) are means over the
micro-batch's tokens, as in TRL, so for them batch 4 × accum 1 and 2 × 2 differ slightly; the
per-pair losses (sigmoid, ipo, simpo, the odds ratio ...) accumulate exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lmlab.data.alignment_batches import batch_units
from lmlab.train.companions import reference_logits, reference_model
from lmlab.train.forward import align_labels, window_kwargs
from lmlab.train.objectives import (
    causal_lm_loss,
    combine_losses,
    cpo_loss,
    dpo_loss,
    kto_loss,
    orpo_loss,
    orpo_nll_labels,
    sequence_logps,
    sft_term,
    token_logps,
)
from lmlab.train.steps import StepContext, StepOutput, with_weight

_INPUTS = ("input_ids", "attention_mask")


def _inputs(batch: dict[str, Tensor], rows: slice = slice(None)) -> dict[str, Tensor]:
    return {k: batch[k][rows] for k in _INPUTS}


def _tokens(batch: dict[str, Tensor]) -> int:
    return int(batch["attention_mask"].sum())


def policy_token_logps(model: nn.Module, batch: dict[str, Tensor], rows: slice = slice(None), window: bool = True
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """(logits (N, L, V), per-token log-probs (N, L-1), reply mask (N, L-1)) of the policy on `rows`.

    With `window` the LM head runs on the last L positions that hold every reply token
    (`forward.window_kwargs`), else on all T; the sums over the mask are the same either way.
    """
    labels = batch["labels"][rows]
    logits = model(**_inputs(batch, rows), **(window_kwargs(model, labels) if window else {})).logits  # (N, L, V)
    per_token, mask = token_logps(logits, align_labels(labels, logits))
    return logits, per_token, mask


@torch.no_grad()
def reference_logps(ctx: StepContext, batch: dict[str, Tensor]) -> Tensor:
    """log π_ref(y|x) of every row (2B,): the batch's cached values, else one reference forward pass.

    The cache (`refcache.py`) is filled by this same function over the same batches, which is
    why cached and on-the-fly values are bitwise equal.
    """
    cached = batch.get("ref_logps")
    if cached is not None:
        return cached
    labels = batch["labels"]
    logits = reference_logits(ctx, **_inputs(batch), **window_kwargs(reference_model(ctx), labels))
    return sequence_logps(logits, align_labels(labels, logits))[0]


def _pair_metrics(beta: float, logps: Tensor, ref: Tensor, lengths: Tensor) -> dict[str, float]:
    """TRL's DPO log: implicit rewards β·c, β·r, their accuracy and margin, policy log-probs, kl_chosen."""
    B = logps.size(0) // 2
    ratio = (logps - ref).detach()  # (2B,)
    c, r = beta * ratio[:B], beta * ratio[B:]
    return {
        "reward_chosen": float(c.mean()), "reward_rejected": float(r.mean()),
        "reward_accuracy": float((c > r).float().mean()), "reward_margin": float((c - r).mean()),
        "logp_chosen": float(logps[:B].detach().mean()), "logp_rejected": float(logps[B:].detach().mean()),
        "kl_chosen": float((ratio[:B] / lengths[:B].clamp(min=1)).mean()),
    }


def dpo_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """DPO and its variants: options beta, kinds (e.g. ["sigmoid", "sft"]), weights, label_smoothing."""
    opt = ctx.options
    beta = float(opt["beta"])
    _, per_token, mask = policy_token_logps(model, batch)
    logps = per_token.sum(-1)  # (2B,) the same sum as `sequence_logps`
    B = logps.size(0) // 2
    ref = reference_logps(ctx, batch).to(logps.dtype)
    lengths = batch["lengths"]
    losses: dict[str, Tensor] = {}
    for kind in opt.get("kinds", ["sigmoid"]):
        if kind == "sft":
            losses[kind] = sft_term(per_token[:B], mask[:B])
        else:
            losses[kind] = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta, kind,
                                    label_smoothing=float(opt.get("label_smoothing", 0.0)),
                                    chosen_lengths=lengths[:B], rejected_lengths=lengths[B:])[0]
    loss = combine_losses(losses, opt.get("weights") or None)
    return StepOutput(loss=loss, weight=float(B), tokens=_tokens(batch), metrics=_pair_metrics(beta, logps, ref, lengths))


def _mean_over_processes(x: Tensor) -> Tensor:
    """KTO's z0 is a mean over every process's KL rows (TRL gathers before the clamp)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x = x / torch.distributed.get_world_size()
    return x


def kto_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """KTO: options beta, desirable_weight, undesirable_weight, kind ("kto" | "apo_zero_unpaired").

    The completions go through the policy with gradients; the KL rows only under no_grad (z0 is
    detached anyway), so backward never runs through them.
    """
    opt = ctx.options
    beta, kind = float(opt["beta"]), opt.get("kind", "kto")
    desirable = batch["desirable"]
    B = desirable.numel()
    _, per_token, _ = policy_token_logps(model, batch, slice(0, B))
    logps = per_token.sum(-1)  # (B,)
    ref = reference_logps(ctx, batch).to(logps.dtype)  # (2B,)
    kl_policy = None
    if kind == "kto":
        with torch.no_grad():
            kl_policy = policy_token_logps(model, batch, slice(B, 2 * B))[1].sum(-1)  # (B,)
    losses, rewards, z0 = kto_loss(logps, ref[:B], kl_policy, ref[B:], desirable, beta,
                                   float(opt.get("desirable_weight", 1.0)), float(opt.get("undesirable_weight", 1.0)),
                                   kind=kind, z0_all_reduce=_mean_over_processes)
    metrics = {"kl": float(z0), "reward": float(rewards.mean()), "logp": float(logps.detach().mean()),
               "desirable_fraction": float(desirable.float().mean())}
    for name, sel in (("reward_desirable", desirable), ("reward_undesirable", ~desirable)):
        if bool(sel.any()):  # logged only where present (a log window's mean is over batches that had some)
            metrics[name] = float(rewards[sel].mean())
    return StepOutput(loss=losses.mean(), weight=float(B), tokens=_tokens(batch), metrics=metrics)


AVERAGED_CPO = frozenset({"simpo", "ipo"})
"""CPO-family losses that read per-token averaged log-probs (TRL's CPOTrainer); the others read sums."""


def simpo_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """SimPO / CPO (no reference): options beta, gamma, kind, label_smoothing, cpo_alpha (NLL weight)."""
    opt = ctx.options
    beta, kind = float(opt["beta"]), opt.get("kind", "simpo")
    _, per_token, mask = policy_token_logps(model, batch)
    logps, n = per_token.sum(-1), mask.sum(-1)  # (2B,), (2B,)
    B = logps.size(0) // 2
    scores = logps / n.clamp(min=1) if kind in AVERAGED_CPO else logps
    losses, rc, rr = cpo_loss(scores[:B], scores[B:], beta, kind, float(opt.get("label_smoothing", 0.0)),
                              float(opt.get("gamma", 0.5)))
    loss = losses.mean()
    alpha = float(opt.get("cpo_alpha", 0.0))
    if alpha:
        loss = loss + alpha * sft_term(per_token[:B], mask[:B]).mean()
    metrics = {"reward_chosen": float(rc.mean()), "reward_rejected": float(rr.mean()),
               "reward_accuracy": float((rc > rr).float().mean()), "reward_margin": float((rc - rr).mean()),
               "logp_chosen": float(logps[:B].detach().mean()), "logp_rejected": float(logps[B:].detach().mean())}
    return StepOutput(loss=loss, weight=float(B), tokens=_tokens(batch), metrics=metrics)


def orpo_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """ORPO: NLL of the chosen responses + β·odds-ratio term; options beta, nll_on_prompt."""
    opt = ctx.options
    beta = float(opt["beta"])
    on_prompt = bool(opt.get("nll_on_prompt", False))
    logits, per_token, mask = policy_token_logps(model, batch, window=not on_prompt)  # the prompt NLL needs every logit
    logps, n = per_token.sum(-1), mask.sum(-1)
    B = logps.size(0) // 2
    avg = logps / n.clamp(min=1)  # (2B,)
    or_losses, log_odds = orpo_loss(avg[:B], avg[B:], beta)
    labels = orpo_nll_labels(batch["input_ids"][:B], batch["labels"][:B], batch["attention_mask"][:B],
                             on_prompt)
    nll, _ = causal_lm_loss(logits[:B], align_labels(labels, logits))
    metrics = {"nll": float(nll.detach()), "or_loss": float(or_losses.detach().mean()),
               "log_odds": float(log_odds.detach().mean()), "reward_accuracy": float((log_odds > 0).float().mean()),
               "logp_chosen": float(logps[:B].detach().mean()), "logp_rejected": float(logps[B:].detach().mean())}
    return StepOutput(loss=nll + or_losses.mean(), weight=float(B), tokens=_tokens(batch), metrics=metrics)


for _step in (dpo_step, kto_step, simpo_step, orpo_step):
    with_weight(_step, batch_units)

PREFERENCE_STEPS: dict[str, Any] = {"dpo": dpo_step, "kto": kto_step, "simpo": simpo_step, "orpo": orpo_step}
"""The step of each stage (`lmlab train <name>`)."""
