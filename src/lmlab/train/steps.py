"""Step functions: one forward pass (or several) per stage, then one loss from objectives.py.

A step function is `step(model, batch, ctx) -> StepOutput`. It runs the model on one
micro-batch and returns the mean loss over its `weight` units (tokens for language-model losses,
pairs for preference losses) plus metrics. The trainer knows nothing else about the stage: it
back-propagates `loss * weight` and divides gradients by the window's total weight, which is what
makes gradient accumulation exact.

Also here: the small types the loop and the steps share (`BatchSource`, `StepContext`,
`StepOutput`), so a step module never imports the loop.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lmlab.train.objectives import bradley_terry_loss, causal_lm_loss, seq2seq_loss


class BatchSource(Protocol):
    """Micro-batches by index: `get(i)` is a pure function of i, so resume needs only i."""

    def __len__(self) -> int: ...  # micro-batches per epoch

    def get(self, index: int) -> dict[str, Tensor]: ...  # micro-batch `index` (0-based, across epochs)


@dataclass
class StepContext:
    """What a step may need besides the model and the batch; the trainer keeps `step`/`training` current."""

    step: int = 0
    """optimizer updates done so far"""
    training: bool = True
    """False during evaluation"""
    ref_model: nn.Module | None = None
    """frozen reference policy (DPO, KTO, PPO); the loop sets it to `companions["ref"]` when there is one"""
    options: dict[str, Any] = field(default_factory=dict)
    """stage knobs the loss needs: margin, center_rewards, beta ..."""
    companions: dict[str, nn.Module] = field(default_factory=dict)
    """frozen models the loop placed beside the policy ("ref", "reward", ...): never optimised or saved"""
    policy: nn.Module | None = None
    """the unwrapped trainable model (a PeftModel under LoRA), so a step can switch its adapters off;
    the `model` argument of a step may be a DDP / compiled wrapper of it"""


@dataclass
class StepOutput:
    loss: Tensor
    """0-dim mean loss over the micro-batch's `weight` units"""
    weight: float
    """units the mean is over (tokens or pairs); the window's gradient is Σ loss·weight / Σ weight"""
    tokens: int
    """input tokens processed (for tokens/s)"""
    metrics: dict[str, float] = field(default_factory=dict)
    """extra numbers to log (token-weighted means over a log window)"""


StepFn = Callable[[nn.Module, dict[str, Tensor], StepContext], StepOutput]
WeightFn = Callable[[dict[str, Tensor]], float]


def with_weight(fn: StepFn, weight_of: WeightFn) -> StepFn:
    """Attach `weight_of(batch)`: the step's `weight` computed from the batch alone, before the forward pass.

    Why: under data parallelism, FSDP and DeepSpeed the gradient must be scaled while it is made
    (gradients are partitioned, so dividing `p.grad` afterwards is wrong). The loop sums the
    window's weights over micro-batches and processes first, then back-propagates
    `loss · weight · world / global_weight`; that needs the weight up front.
    """
    fn.weight_of = weight_of  # type: ignore[attr-defined]
    return fn


def weight_of(step_fn: StepFn, batch: dict[str, Tensor]) -> float | None:
    """The step's declared weight of `batch`, or None when the step declares none."""
    fn = getattr(step_fn, "weight_of", None)
    return float(fn(batch)) if fn is not None else None

_LM_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _n_input_tokens(batch: dict[str, Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def lm_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """Causal LM: batch {"input_ids", "labels"?, "attention_mask"?, "position_ids"?} (B, T).

    Labels default to input_ids (plain pretraining). The loss is computed here from logits, not
    by the model, so every architecture is scored by the same function.
    """
    inputs = {k: batch[k] for k in _LM_INPUTS if k in batch}
    labels = batch.get("labels", batch["input_ids"])  # (B, T)
    logits = model(**inputs).logits  # (B, T, V)
    loss, n = causal_lm_loss(logits, labels)
    return StepOutput(loss=loss, weight=float(n), tokens=_n_input_tokens(batch))


def seq2seq_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """Encoder-decoder: batch {"input_ids", "attention_mask", "labels", "decoder_input_ids"?}.

    Without decoder_input_ids the model builds them from labels (HF convention: shift right,
    -100 → pad); the loss is recomputed from logits by `seq2seq_loss`.
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask") if k in batch}
    if "decoder_input_ids" not in inputs:
        inputs["labels"] = batch["labels"]
    logits = model(**inputs).logits  # (B, T_dec, V)
    loss, n = seq2seq_loss(logits, batch["labels"])
    return StepOutput(loss=loss, weight=float(n), tokens=_n_input_tokens(batch) + int((batch["labels"] != -100).sum()))


def reward_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """Reward model: batch {"input_ids", "attention_mask"} (2B, T), chosen rows first, rejected after.

    One forward pass over both halves (one padding length, one kernel launch). The model is a
    sequence-classification model with one label; `logits` (2B, 1) are the rewards. Options:
    `margin` (float, or per-pair `batch["margin"]` (B,)), `center_rewards` η adds
    η·mean((r_c + r_r)²) to keep rewards near zero (Eisenstein et al. 2023, "Helping or Herding").
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
    rewards = model(**inputs).logits.squeeze(-1).float()  # (2B,)
    B = rewards.size(0) // 2
    r_chosen, r_rejected = rewards[:B], rewards[B:]  # (B,), (B,)
    margin = batch.get("margin", ctx.options.get("margin", 0.0))
    losses, accuracy = bradley_terry_loss(r_chosen, r_rejected, margin)
    loss = losses.mean()
    center = float(ctx.options.get("center_rewards", 0.0))
    if center:
        loss = loss + center * ((r_chosen + r_rejected) ** 2).mean()
    with torch.no_grad():
        metrics = {
            "accuracy": float(accuracy),
            "margin": float((r_chosen - r_rejected).mean()),
            "reward_chosen": float(r_chosen.mean()),
            "reward_rejected": float(r_rejected.mean()),
        }
    return StepOutput(loss=loss, weight=float(B), tokens=_n_input_tokens(batch), metrics=metrics)


def _lm_weight(batch: dict[str, Tensor]) -> float:
    labels = batch.get("labels", batch["input_ids"])  # (B, T); position t predicts label t+1
    return float((labels[:, 1:] != -100).sum())


with_weight(lm_step, _lm_weight)
with_weight(seq2seq_step, lambda batch: float((batch["labels"] != -100).sum()))
with_weight(reward_step, lambda batch: float(batch["input_ids"].size(0) // 2))

STEPS: dict[str, StepFn] = {"lm": lm_step, "seq2seq": seq2seq_step, "reward": reward_step}

# Perplexity = exp(mean token NLL) means something only for these; preference losses (reward now,
# DPO & co. next) are not token likelihoods, so the trainer logs no ppl for them.
TOKEN_NLL_STEPS: frozenset[StepFn] = frozenset({lm_step, seq2seq_step})


def reports_perplexity(step_fn: StepFn) -> bool:
    """Whether exp(loss) of `step_fn` is a perplexity (a stage's own wrapper may set
    `loss_is_token_nll = True` on itself)."""
    return step_fn in TOKEN_NLL_STEPS or bool(getattr(step_fn, "loss_is_token_nll", False))
