"""Rollouts: sample completions from the policy, score them, and serve them to the loop as batches.

One *round* (`RolloutSource.get` when its index enters a new round) does, with the current policy:

1. pick `rollout_batch / num_generations` prompts and sample `num_generations` completions each
   (KV cache, batched, left padding, temperature / top-k / top-p): `lmlab.train.sampler`'s decode loop
   for Llama-family models, HF `generate` for the rest;
2. cut every completion after its first stop token (eos or the chat end-of-turn; eos ≠ pad, so the
   stop token itself is trained on and the model learns to stop: Huang et al. 2024, N+ detail 1);
3. one forward pass for the old log-probs, from the *temperature-scaled* logits the tokens were
   sampled from (values too for PPO; the reference's log-probs when a KL term is on);
4. score the completion texts (`rewards.py`), add the shaping penalties, turn rewards into
   advantages (`advantages.py`: group, leave-one-out or GAE);
5. serve `ppo_epochs` shuffled passes over the buffer in micro-batches of `batch_size`.

The round's buffer, the KL coefficient and the pending metrics are the source's `state_dict`, so
a run killed mid-round resumes on the same rollouts with the same losses. Sampling is seeded by
(seed, round), inside `torch.random.fork_rng`, so it never disturbs the loop's own RNG.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError, DataError
from lmlab.progress import log
from lmlab.train import advantages as adv

# -- prompts -----------------------------------------------------------------------------------

@dataclass
class PromptItem:
    text: str
    """what the policy reads (chat prompts rendered through the template, generation header included)"""
    prompt: Any
    """what a reward function sees: the user text, or the message list"""
    columns: dict[str, Any] = field(default_factory=dict)
    """extra dataset columns passed to reward functions (e.g. `answer`)"""


def prompts_from_records(records: Sequence[Any], tokenizer: Any, *, prompt_words: int = 8) -> list[PromptItem]:
    """Chat records → the conversation up to its last assistant turn (the reference reply becomes
    the `answer` column); text or labelled records → the first `prompt_words` words (review
    prefixes for sentiment PPO), used raw."""
    from lmlab.data.chat import render_prompt
    from lmlab.data.formats import ChatRecord, LabelledRecord, TextRecord

    items = []
    for rec in records:
        if isinstance(rec, ChatRecord):
            msgs = list(rec.messages)
            answer = None
            if msgs and msgs[-1].role == "assistant":
                answer = msgs.pop().content
            if not msgs:
                continue
            prompt = msgs[-1].content if len(msgs) == 1 else [{"role": m.role, "content": m.content} for m in msgs]
            items.append(PromptItem(render_prompt(tokenizer, msgs), prompt, {"answer": answer} if answer is not None else {}))
        elif isinstance(rec, (TextRecord, LabelledRecord)):
            words = rec.text.replace("<br />", " ").split()
            prefix = " ".join(words[:prompt_words])
            items.append(PromptItem(prefix, prefix, {"label": rec.label} if isinstance(rec, LabelledRecord) else {}))
        else:
            raise DataError(f"records of type {type(rec).__name__} are not prompts; use a chat, text or labelled dataset")
    return items


def check_prompt_lengths(items: Sequence[PromptItem], tokenizer: Any, max_length: int, max_new_tokens: int, source: str,
                         context: int | None = None) -> None:
    """Prompt + completion must fit `max_length` and the model's own context (its position
    embeddings); say which prompt does not, and what to change."""
    limit = min(max_length, context) if context else max_length
    what = f"max_length={max_length}" if limit == max_length else f"the model's context of {context} positions"
    budget = limit - max_new_tokens
    if budget < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {what}; lower max_new_tokens"
                          + (" or raise max_length" if limit == max_length else ""))
    for i, item in enumerate(items):
        n = len(tokenizer(item.text, add_special_tokens=False)["input_ids"])
        if n > budget:
            fix = f"max_length >= {n + max_new_tokens} (now {max_length})" if limit == max_length else f"more than {what}"
            raise DataError(f"{source}: prompt {i} has {n} tokens; with max_new_tokens={max_new_tokens} it needs {fix}; "
                            + ("raise max_length, " if limit == max_length else "")
                            + "lower max_new_tokens, or use shorter prompts (limit=, prompt_words=)")


# -- sampling ----------------------------------------------------------------------------------

def completion_mask(tokens: Tensor, stop_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(mask (N, C) bool: positions up to and including the first stop token, ended (N,) bool).

    Everything after the first stop token (more text, or generate's padding) is not part of the
    completion; a row without a stop token was truncated at max_new_tokens.
    """
    is_stop = torch.zeros_like(tokens, dtype=torch.bool)
    for s in stop_ids:
        is_stop |= tokens == s
    ended = is_stop.any(dim=1)
    first = torch.where(ended, is_stop.int().argmax(dim=1), torch.full_like(ended, tokens.size(1), dtype=torch.long))
    positions = torch.arange(tokens.size(1), device=tokens.device).expand_as(tokens)
    return positions <= first.unsqueeze(1), ended


def forward_completion(model: nn.Module, batch: dict[str, Tensor], temperature: float
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """(log-probs (N, C) of the completion tokens under softmax(logits / T), entropy (N, C), values (N, C) or None).

    `batch` holds input_ids / attention_mask (N, P + C), left-padded prompts then completions, and
    completion_mask (N, C). Position ids count real tokens only, as generate did, so a left-padded
    row is scored exactly as it was sampled.
    """
    from lmlab.models.value_head import PolicyValueOutput
    from lmlab.train.forward import accepts
    from lmlab.train.objectives import IGNORE_INDEX, token_logps

    ids, mask, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    P = ids.size(1) - cmask.size(1)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if accepts(model, "position_ids"):
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    if accepts(model, "logits_to_keep"):  # the LM head on the completion window only (train/forward.py)
        inputs["logits_to_keep"] = cmask.size(1) + 1
    out = model(**inputs)
    logits = out.logits[:, -(cmask.size(1) + 1):].float() / max(temperature, 1e-7)  # (N, C+1, V): t predicts t+1
    labels = torch.cat([ids[:, P - 1:P], ids[:, P:].masked_fill(~cmask.bool(), IGNORE_INDEX)], dim=1)  # (N, C+1)
    logp, _ = token_logps(logits, labels)  # (N, C)
    entropy = adv.token_entropy(logits[:, :-1].detach())
    values = out.values[:, P - 1:-1] if isinstance(out, PolicyValueOutput) else None  # V(s_t) before each token
    return logp, entropy, values


@dataclass
class Sampling:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@torch.no_grad()
def sample(model: nn.Module, tokenizer: Any, texts: Sequence[str], n: int, sampling: Sampling) -> dict[str, Tensor]:
    """`n` completions of each prompt (rows grouped by prompt): input_ids / attention_mask (N, P + C),
    completion_mask (N, C), ended (N,). Completion tokens after the first stop are replaced by pad."""
    from lmlab.decoding import DecodingConfig
    from lmlab.generate import _encode, generation_kwargs
    from lmlab.train.sampler import generate_tokens

    dev = next(model.parameters()).device
    enc = _encode(tokenizer, list(texts), dev, left=True)
    cfg = DecodingConfig(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                         top_k=sampling.top_k, top_p=sampling.top_p, n=n)
    kwargs = generation_kwargs(model, tokenizer, cfg)
    out = generate_tokens(model, enc, kwargs, n)  # (N, P + C'): lmlab's decode loop, or HF generate
    P = enc["input_ids"].size(1)
    completion = out[:, P:]
    if completion.size(1) == 0:
        completion = torch.full((out.size(0), 1), kwargs["pad_token_id"], dtype=out.dtype, device=dev)
    cmask, ended = completion_mask(completion, kwargs["eos_token_id"] or [])
    completion = completion.masked_fill(~cmask, kwargs["pad_token_id"])
    prompt_mask = enc["attention_mask"].repeat_interleave(n, dim=0)
    return {"input_ids": torch.cat([enc["input_ids"].repeat_interleave(n, dim=0), completion], dim=1),
            "attention_mask": torch.cat([prompt_mask, cmask.long()], dim=1),
            "completion_mask": cmask.long(), "ended": ended}


# -- the source the loop reads -----------------------------------------------------------------

@dataclass
class RoundPlan:
    """How rollouts map to micro-batches; `RolloutSource` and the stage configs share it."""

    rollout_batch: int
    """rollouts per round (prompts_per_round × num_generations)"""
    num_generations: int
    batch_size: int
    """rollouts per micro-batch"""
    epochs: int
    """passes over each round's rollouts (PPO epochs; GRPO's μ)"""

    @property
    def micro_per_epoch(self) -> int:
        return self.rollout_batch // self.batch_size

    @property
    def micro_per_round(self) -> int:
        return self.micro_per_epoch * self.epochs


Advantages = Callable[[dict[str, Tensor], Tensor, "RolloutSource"], dict[str, Tensor]]
"""(buffer, rewards (N,), source) → tensors to add to the buffer (advantages, returns …)."""


class RolloutSource:
    """A refillable `BatchSource` (the loop contract): `get(i)` generates a new round when i enters one."""

    def __init__(self, prompts: Sequence[PromptItem], rewards: Any, plan: RoundPlan, sampling: Sampling, tokenizer: Any, *,
                 advantages: Advantages, seed: int = 0, needs_ref: bool = False, needs_values: bool = False,
                 kl: adv.KLController | None = None, penalties: Callable[..., list[float]] | None = None,
                 rollouts_path: Any = None, log_rollouts_every: int = 1, on_policy: bool = False):
        self.prompts, self.rewards, self.plan, self.sampling = list(prompts), rewards, plan, sampling
        self.tokenizer, self.compute_advantages, self.seed = tokenizer, advantages, seed
        self.needs_ref, self.needs_values = needs_ref, needs_values
        self.on_policy = on_policy
        """one optimizer update per round: the old log-probs are the step's own (TRL skips that pass too)"""
        self.kl = kl or adv.KLController(0.0)
        self.penalties = penalties
        self.rollouts_path, self.log_rollouts_every = rollouts_path, log_rollouts_every
        self.round = -1
        self.buffer: dict[str, Tensor] = {}
        self.pending: dict[str, float] = {}
        self.trainer: Any = None
        self.model: nn.Module | None = None  # used when no trainer is bound (tests, bench)
        self.ref: nn.Module | None = None
        self.warned: set[str] = set()

    # loop contract ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Micro-batches of one pass over the prompt set (what `epochs` counts); rounds are fixed
        by the plan, not by this number."""
        per_round = self.plan.rollout_batch // self.plan.num_generations
        return self.plan.micro_per_round * max(1, -(-len(self.prompts) // per_round))

    def bind(self, trainer: Any) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "buffer": {k: v.cpu() for k, v in self.buffer.items()},
                "kl_coef": self.kl.value, "pending": dict(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self.buffer = state["round"], dict(state["buffer"])
        self.kl.value, self.pending = state["kl_coef"], dict(state["pending"])
        if self.rollouts_path is not None and self.rollouts_path.exists():  # later rounds will be made again
            lines = self.rollouts_path.read_text(encoding="utf-8").split("\n")
            kept = [x for x in lines if x and json.loads(x)["round"] <= self.round]
            self.rollouts_path.write_text("".join(x + "\n" for x in kept), encoding="utf-8")

    def log_metrics(self) -> dict[str, float]:
        out, self.pending = self.pending, {}
        return out

    def get(self, index: int) -> dict[str, Tensor]:
        rnd, within = divmod(index, self.plan.micro_per_round)
        if rnd != self.round:
            self.make_round(rnd)
        epoch, mb = divmod(within, self.plan.micro_per_epoch)
        order = torch.randperm(self.plan.rollout_batch, generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + rnd * 997 + epoch))
        idx = order[mb * self.plan.batch_size:(mb + 1) * self.plan.batch_size]
        return {k: v[idx] for k, v in self.buffer.items()}

    # a round ----------------------------------------------------------------------------------
    def _round_prompts(self, rnd: int) -> list[PromptItem]:
        """Prompts in a seeded order, a fresh shuffle every pass over the set."""
        per_round = self.plan.rollout_batch // self.plan.num_generations
        out: list[PromptItem] = []
        start = rnd * per_round
        while len(out) < per_round:
            p, offset = divmod(start + len(out), len(self.prompts))
            order = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.seed * 7919 + p))
            out.append(self.prompts[int(order[offset])])
        return out

    def _models(self) -> tuple[Any, Any, nn.Module | None]:
        """(context yielding the unwrapped model in eval mode, its ctx, the reference or None)."""
        import contextlib

        t = self.trainer
        if t is not None and hasattr(t, "generation_model"):
            ctx = t.ctx
            companions = getattr(ctx, "companions", None) or {}
            return t.generation_model(), ctx, companions.get("ref", getattr(ctx, "ref_model", None) or self.ref)
        model = t.raw if t is not None else self.model
        assert model is not None, "RolloutSource needs bind(trainer) or .model"

        @contextlib.contextmanager
        def eval_mode():  # the loop has no generation_model yet: the same contract by hand
            was = model.training
            model.eval()
            try:
                yield model
            finally:
                model.train(was)

        return eval_mode(), getattr(t, "ctx", None), self.ref

    def make_round(self, rnd: int) -> None:
        """Generate, score and compute advantages for round `rnd` with the current policy."""
        import time

        items = self._round_prompts(rnd)
        G = self.plan.num_generations
        gen_ctx, _, ref = self._models()
        t0 = time.perf_counter()
        with gen_ctx as model:
            policy = getattr(model, "policy", model)
            dev = next(model.parameters()).device
            devices = [dev.index or 0] if dev.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed * 1_000_003 + rnd)
                batch = sample(policy, self.tokenizer, [it.text for it in items], G, self.sampling)
            t_gen = time.perf_counter() - t0
            with torch.no_grad():
                if self.on_policy and not (self.needs_ref or self.needs_values):
                    logp = entropy = values = None  # the step's own log-probs are the old ones (ρ = 1)
                else:
                    logp, entropy, values = forward_completion(model, batch, self.sampling.temperature)
                ref_logp = self._ref_logps(ref, policy, batch) if self.needs_ref else None
        cmask = batch["completion_mask"]
        completions = self.tokenizer.batch_decode(batch["input_ids"][:, -cmask.size(1):].masked_fill(
            ~cmask.bool(), self.tokenizer.pad_token_id), skip_special_tokens=True)
        prompts = [it.prompt for it in items for _ in range(G)]
        columns: dict[str, list[Any]] = {}
        for key in {k for it in items for k in it.columns}:
            columns[key] = [it.columns.get(key) for it in items for _ in range(G)]
        total, parts = self.rewards(prompts, completions, **columns)
        lengths = cmask.sum(1)
        ended = batch.pop("ended")
        if self.penalties is not None:
            total = total + torch.tensor(self.penalties(completions, ended.tolist(), lengths.tolist()), dtype=total.dtype)
        buffer = {**{k: v.cpu() for k, v in batch.items()}, "scores": total.float()}
        if logp is not None:
            buffer["old_logp"] = logp.cpu()
        if ref_logp is not None:
            buffer["ref_logp"] = ref_logp.cpu()
        if values is not None:
            buffer["old_values"] = values.float().cpu()
        buffer.update(self.compute_advantages(buffer, total.float(), self))
        self.buffer, self.round = buffer, rnd
        self._record(rnd, items, completions, parts, total, buffer, entropy, lengths.cpu(), ended.cpu(),
                     t_gen, time.perf_counter() - t0)

    def _ref_logps(self, ref: nn.Module | None, policy: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        if ref is not None:
            return forward_completion(ref, batch, self.sampling.temperature)[0]
        if hasattr(policy, "disable_adapter"):
            with policy.disable_adapter():
                return forward_completion(policy, batch, self.sampling.temperature)[0]
        raise ConfigError("a KL term needs a reference model: none was loaded (beta > 0 / kl_coef > 0)")

    def _record(self, rnd: int, items: Sequence[PromptItem], completions: Sequence[str], parts: dict[str, list[float]],
                total: Tensor, buffer: dict[str, Tensor], entropy: Tensor | None, lengths: Tensor, ended: Tensor,
                t_gen: float, t_round: float) -> None:
        """Round metrics for the next log row, warnings, and every N rounds a rollouts.jsonl table."""
        cmask = buffer["completion_mask"]
        seq_kl = (adv.kl_estimate(buffer["old_logp"], buffer["ref_logp"], "k1") * cmask).sum(1) if self.needs_ref else None
        G = self.plan.num_generations
        truncated = float((~ended).float().mean())
        tied = float(adv.tied_groups(total, G).float().mean()) if G > 1 else 0.0
        m = {"reward": float(total.mean()), "reward_std": float(total.std()) if total.numel() > 1 else 0.0,
             **({"kl": float(seq_kl.mean()), "kl_coef": self.kl.value} if seq_kl is not None else {}),
             **({"entropy": float(adv.masked_mean(entropy.cpu(), cmask))} if entropy is not None else {}),
             "response_length": float(lengths.float().mean()), "truncated": truncated, "tied_groups": tied,
             "generate_s": t_gen, "round_s": t_round}
        for name, values in parts.items():
            v = torch.tensor(values)
            m[f"reward/{name}"] = float(v.mean())
            m[f"reward_std/{name}"] = float(v.std()) if v.numel() > 1 else 0.0
        if "returns" in buffer and "old_values" in buffer:
            m["explained_variance"] = adv.explained_variance(buffer["old_values"], buffer["returns"], cmask)
        self.pending = m
        if truncated > 0.5 and "truncated" not in self.warned:
            self.warned.add("truncated")
            log(f"round {rnd}: {truncated:.0%} of completions hit max_new_tokens={self.sampling.max_new_tokens} without "
                "a stop token (their reward may be meaningless); raise max_new_tokens or add missing_eos_penalty (warned once; the truncated column tracks it)")
        if tied > 0.5 and "tied" not in self.warned:
            self.warned.add("tied")
            log(f"round {rnd}: in {tied:.0%} of the prompt groups all {G} rewards tie, so their advantage and gradient "
                "are zero; use more num_generations, a higher temperature, or a finer-grained reward (warned once; "
                "the tied_groups column tracks it)")
        if seq_kl is not None:
            self.kl.update(float(seq_kl.mean()), len(completions))
        if self.rollouts_path is not None and rnd % max(self.log_rollouts_every, 1) == 0:
            with open(self.rollouts_path, "a", encoding="utf-8") as f:
                for i, c in enumerate(completions):
                    row = {"round": rnd, "prompt": items[i // G].text, "completion": c, "reward": float(total[i]),
                           **{name: values[i] for name, values in parts.items()}, "ended": bool(ended[i]),
                           "length": int(lengths[i])}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
