"""`lmlab train grpo | rloo | ppo`: online RL on the shared loop.

    lmlab train grpo model=runs/q/sft data=storyworld/qa reward=storyworld:qa_exact num_generations=4 loss=dapo
    lmlab train rloo model=runs/q/sft reward=runs/rm
    lmlab train ppo  model=runs/q/sft reward=storyworld:gold kl_coef=0.05 value_lr=1e-4

Setup → rounds → evaluate, top to bottom:

1. the policy (`load_for_sft`: run folder, model folder or hub id; tuning full / freeze / lora),
   for PPO wrapped with a value head (`models/value_head.py`); the frozen reference when a KL term
   is on (`companions.load_reference`: None under LoRA, whose adapters are switched off instead);
2. prompts (`rollout.prompts_from_records`) checked against the context, rewards (`rewards.py`);
3. a `RolloutSource`: each round samples, scores and computes advantages (GRPO group-normalised,
   RLOO leave-one-out with k1 KL in the reward, PPO per-token k1 KL + GAE + whitening), then
   serves `ppo_epochs` passes of micro-batches to the step below;
4. the step: the clipped surrogate (Schulman et al. 2017 eq. 7) over completion tokens, plus β·k3
   to the reference (GRPO, Shao et al. 2024 eq. 3) or the clipped value loss (PPO eq. 9), reduced
   by the configured aggregation (`advantages.aggregate`);
5. the evaluator samples the held-out prompts (fixed seed) and reports the mean reward (the
   selection metric) and, on storyworld prompts, the gold judge's mean reward.

result.json gets the evaluator's numbers for the first and last evaluation (reward before →
after) and rollouts.jsonl holds every logged round's samples with their rewards.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.progress import log
from lmlab.runs import RunResult
from lmlab.train import advantages as adv
from lmlab.train.config import GRPOConfig, OnlineRLConfig, PPOConfig, RLOOConfig
from lmlab.train.rollout import PromptItem, RolloutSource, RoundPlan, Sampling, forward_completion, sample
from lmlab.train.steps import StepContext, StepOutput, with_weight

# -- step functions ----------------------------------------------------------------------------

def make_grpo_step(loss: str, beta: float, epsilon: float, epsilon_high: float | None, temperature: float,
                   max_new_tokens: int) -> Any:
    """GRPO / RLOO step: l_t = −min(ρ_t·Â, clip(ρ_t)·Â) + β·k3_t, aggregated by `loss` (Shao et al. 2024 eq. 3)."""

    def grpo_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
        logp, entropy, _ = forward_completion(model, batch, temperature)  # (B, C)
        cmask = batch["completion_mask"]
        a = batch["advantages"].unsqueeze(1)  # (B, 1): one advantage per completion
        old = batch["old_logp"] if "old_logp" in batch else logp.detach()  # on-policy rounds: ρ = 1, ∇ = ∇logπ
        per_token, clipped = adv.clipped_policy_loss(logp, old, a, epsilon, epsilon_high)
        metrics = {}
        if beta > 0:
            kl = adv.kl_estimate(logp, batch["ref_logp"], "k3")
            per_token = per_token + beta * kl
            metrics["kl_k3"] = float(adv.masked_mean(kl.detach(), cmask))
        value, weight = adv.aggregate(per_token, cmask, loss, max_new_tokens)
        with torch.no_grad():
            metrics.update(clip_fraction=float(adv.masked_mean(clipped, cmask)),
                           policy_entropy=float(adv.masked_mean(entropy, cmask)))
        return StepOutput(loss=value, weight=weight, tokens=int(batch["attention_mask"].sum()), metrics=metrics)

    return with_weight(grpo_step, lambda batch: adv.aggregation_weight(batch["completion_mask"], loss))


def make_ppo_step(cliprange: float, cliprange_value: float, vf_coef: float, temperature: float) -> Any:
    """PPO step: token-mean of −min(ρA, clip(ρ)A) + c1·½max((V−R)², (clip(V)−R)²) (Schulman et al. 2017 eq. 9)."""

    def ppo_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
        logp, entropy, values = forward_completion(model, batch, temperature)
        cmask = batch["completion_mask"]
        pg, clipped = adv.clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], cliprange)
        vf, vclipped = adv.clipped_value_loss(values, batch["old_values"], batch["returns"], cliprange_value)
        loss, weight = adv.aggregate(pg + vf_coef * vf, cmask, "dapo")
        with torch.no_grad():
            metrics = {"policy_loss": float(adv.masked_mean(pg, cmask)), "value_loss": float(adv.masked_mean(vf, cmask)),
                       "clip_fraction": float(adv.masked_mean(clipped, cmask)),
                       "value_clip_fraction": float(adv.masked_mean(vclipped, cmask)),
                       "policy_entropy": float(adv.masked_mean(entropy, cmask))}
        return StepOutput(loss=loss, weight=weight, tokens=int(batch["attention_mask"].sum()), metrics=metrics)

    return with_weight(ppo_step, lambda batch: float(batch["completion_mask"].sum()))


# -- advantages per algorithm (called by the source once per round) ---------------------------

def grpo_advantages(cfg: GRPOConfig) -> Any:
    def compute(buffer: dict[str, Tensor], rewards: Tensor, source: RolloutSource) -> dict[str, Tensor]:
        G = cfg.num_generations
        if cfg.advantage == "rloo":
            if cfg.beta > 0 and "ref_logp" in buffer:  # k1 at sequence level, in the reward (Ahmadian et al. 2024; TRL RLOO)
                kl = (adv.kl_estimate(buffer["old_logp"], buffer["ref_logp"], "k1") * buffer["completion_mask"]).sum(1)
                rewards = rewards - cfg.beta * kl
            return {"advantages": adv.rloo_advantages(rewards, G)}
        return {"advantages": adv.group_advantages(rewards, G, cfg.scale_rewards)}

    return compute


def ppo_advantages(cfg: PPOConfig) -> Any:
    def compute(buffer: dict[str, Tensor], scores: Tensor, source: RolloutSource) -> dict[str, Tensor]:
        cmask = buffer["completion_mask"]
        rewards, _ = adv.kl_penalised_rewards(scores, buffer["old_logp"], buffer["ref_logp"], cmask, source.kl.value, "k1")
        if cfg.whiten_rewards:
            rewards = adv.masked_whiten(rewards, cmask, shift_mean=False)
        advantages, returns = adv.gae(rewards, buffer["old_values"], cmask, cfg.gamma, cfg.lam)
        return {"advantages": adv.masked_whiten(advantages, cmask), "returns": returns}

    return compute


# -- prompts and evaluation --------------------------------------------------------------------

def _kind_of(spec: str) -> str:
    """chat, text or labelled: the registry's kind for a named set, else read off the first row."""
    from lmlab.data.formats import detect_kind
    from lmlab.data.loaders import iter_rows

    rows, _, kind = iter_rows(spec, n=1)
    if kind is None:
        for _, row in rows:
            kind = detect_kind(row)
            break
    return kind if kind in ("chat", "text", "labelled") else "chat"


def load_prompt_items(cfg: OnlineRLConfig, tokenizer: Any, context: int | None = None) -> tuple[list[PromptItem], list[PromptItem]]:
    """(training prompts, held-out prompts for the evaluator), each checked against the context."""
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val
    from lmlab.train.rollout import check_prompt_lengths, prompts_from_records

    kind = _kind_of(cfg.data)
    records = load_records(cfg.data, kind, columns=cfg.columns or None, limit=cfg.limit)
    if cfg.eval_data:
        held = load_records(cfg.eval_data, _kind_of(cfg.eval_data), columns=cfg.columns or None,
                            split=heldout_split(cfg.eval_data), limit=cfg.eval_prompts or 1)
        train = records
    elif cfg.eval_prompts:
        train, held = split_train_val(records, min(0.5, cfg.eval_prompts / max(len(records), 1)), seed=cfg.seed)
        held = held[:cfg.eval_prompts]
    else:
        train, held = records, []
    items = prompts_from_records(train, tokenizer, prompt_words=cfg.prompt_words)
    held_items = prompts_from_records(held, tokenizer, prompt_words=cfg.prompt_words)
    check_prompt_lengths(items + held_items, tokenizer, cfg.max_length, cfg.max_new_tokens, cfg.data, context)
    return items, held_items


def make_evaluator(cfg: OnlineRLConfig, items: Sequence[PromptItem], rewards: Any, tokenizer: Any) -> Any:
    """Held-out mean reward (the selection metric) and, for storyworld prompts, the gold judge's mean."""
    from lmlab.train.rewards import storyworld_gold

    gold = cfg.data.startswith("storyworld") and "storyworld:gold" not in rewards.names
    T = cfg.temperature if cfg.eval_temperature is None else cfg.eval_temperature
    sampling = Sampling(cfg.max_new_tokens, T, cfg.top_k, cfg.top_p)

    def evaluate(trainer: Any) -> dict[str, float]:
        with trainer.generation_model() as model:
            policy = getattr(model, "policy", model)
            dev = next(policy.parameters()).device
            with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
                torch.manual_seed(cfg.seed + 12345)  # the same samples' randomness at every evaluation
                texts: list[str] = []
                for s in range(0, len(items), cfg.batch_size):
                    part = items[s:s + cfg.batch_size]
                    batch = sample(policy, tokenizer, [it.text for it in part], 1, sampling)
                    cm = batch["completion_mask"].bool()
                    ids = batch["input_ids"][:, -cm.size(1):].masked_fill(~cm, tokenizer.pad_token_id)
                    texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
        columns = {k: [it.columns.get(k) for it in items] for k in {k for it in items for k in it.columns}}
        total, parts = rewards([it.prompt for it in items], texts, **columns)
        out = {"reward": float(total.mean())}
        out.update({f"reward/{k}": sum(v) / len(v) for k, v in parts.items() if len(parts) > 1})
        if gold:
            out["gold"] = sum(storyworld_gold([it.prompt for it in items], texts)) / len(texts)
        return out

    return evaluate


# -- the stage ---------------------------------------------------------------------------------

def _penalties(cfg: OnlineRLConfig) -> Any:
    from lmlab.train.rewards import shaping_penalties

    if not (cfg.missing_eos_penalty or cfg.repetition_penalty or cfg.length_penalty):
        return None
    return lambda texts, ended, lengths: shaping_penalties(
        texts, ended, lengths, missing_eos=cfg.missing_eos_penalty, repetition=cfg.repetition_penalty,
        length=cfg.length_penalty, target_length=cfg.target_length)


def _evaluate_before(trainer: Any, evaluator: Any, path: Any) -> dict[str, float]:
    """The evaluator's numbers for the starting policy (kept in the run folder, so a resumed run reports them too)."""
    import json

    if path.exists():
        return json.loads(path.read_text())
    metrics = evaluator(trainer)
    path.write_text(json.dumps(metrics))
    return metrics


def divergence_points(before: dict[str, float], rows: Sequence[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
    """(step, KL, learned reward, gold reward) at the start and at every evaluation with a gold score.

    The KL is the last training row's k1 estimate at or before the evaluation step (the
    training rollouts' KL to the reference, nats per completion); the start is at KL 0. Empty
    when the run has no gold column (no storyworld prompts, or the gold judge is the reward).
    """
    if "gold" not in before:
        return []
    train = [r for r in rows if r.get("split") == "train" and "kl" in r]
    points = [(0, 0.0, float(before["reward"]), float(before["gold"]))]
    for v in (r for r in rows if r.get("split") == "val" and "gold" in r):
        seen = [r for r in train if r["step"] <= v["step"]]
        if seen:
            points.append((int(v["step"]), float(seen[-1]["kl"]), float(v["reward"]), float(v["gold"])))
    return points


def run_online(stage: str, cfg: OnlineRLConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Set up and train one online-RL stage (see the module docstring)."""
    from lmlab.models import count_parameters
    from lmlab.train.companions import load_reference
    from lmlab.train.rewards import load_rewards
    from lmlab.train.sft import load_for_sft
    from lmlab.train.stage import open_stage
    from lmlab.train.trainer import Trainer

    cfg, rundir, finished = open_stage(stage, cfg, resume=resume, force=force)
    if finished is not None:
        return finished
    rewards = load_rewards(cfg.reward, cfg.reward_weights or None, label=cfg.reward_label, output=cfg.reward_output,
                           max_length=cfg.max_length)
    policy, tokenizer = load_for_sft(cfg)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        log("warning: pad = eos; the stop token is masked like padding and the policy may never learn to stop "
            "(Huang et al. 2024, N+ detail 1); give the tokenizer a separate pad token")
    items, held = load_prompt_items(cfg, tokenizer, getattr(getattr(policy, "config", None), "max_position_embeddings", None))
    log(f"prompts {cfg.data}: {len(items)} train / {len(held)} held out; rewards: {', '.join(rewards.names)}")
    is_ppo = isinstance(cfg, PPOConfig)
    beta = cfg.kl_coef if is_ppo else cfg.beta  # type: ignore[attr-defined]
    companions: dict[str, nn.Module] = {}
    if beta > 0:
        ref = load_reference(cfg.model, policy=policy, trust_remote_code=cfg.trust_remote_code)
        if ref is not None:
            companions["ref"] = ref
    model: nn.Module = policy
    groups = None
    if is_ppo:
        from lmlab.models.value_head import PolicyWithValue, value_parameters

        model = PolicyWithValue(policy)
        value_lr = cfg.value_lr  # type: ignore[attr-defined]
        from lmlab.models.value_head import init_head_from
        from lmlab.train.rewards import ModelReward

        for r in rewards.rewards:  # the critic starts from the RM's head when widths match (Ouyang et al. 2022)
            if isinstance(r.fn, ModelReward) and r.fn.num_labels == 1 and init_head_from(model.value_head, r.fn.model):
                log(f"ppo: value head initialised from the reward model {r.name}")
                break

        def groups(m: nn.Module) -> list[dict[str, Any]]:
            pol, val = value_parameters(m)
            return [{"params": pol, "name": "policy"}, {"params": val, "name": "value", **({"lr": value_lr} if value_lr else {})}]

    trainable, total = count_parameters(model)
    plan = RoundPlan(cfg.rollouts_per_round(), cfg.num_generations, cfg.batch_size, cfg.ppo_epochs)
    sampling = Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    if is_ppo:
        p: Any = cfg
        step = make_ppo_step(p.cliprange, p.cliprange_value, p.vf_coef, cfg.temperature)
        kl = adv.KLController(p.kl_coef, p.kl_target, p.kl_horizon)
        compute = ppo_advantages(p)
    else:
        g: Any = cfg
        step = make_grpo_step(g.loss, g.beta if g.advantage == "grpo" else 0.0, g.epsilon, g.epsilon_high,
                              cfg.temperature, cfg.max_new_tokens)
        kl = adv.KLController(g.beta)
        compute = grpo_advantages(g)
    source = RolloutSource(items, rewards, plan, sampling, tokenizer, advantages=compute, seed=cfg.seed,
                           needs_ref=beta > 0, needs_values=is_ppo, kl=kl, penalties=_penalties(cfg),
                           rollouts_path=rundir.path / "rollouts.jsonl", log_rollouts_every=cfg.log_rollouts_every,
                           on_policy=cfg.ppo_epochs == 1 and plan.rollout_batch == cfg.batch_size * cfg.grad_accum)
    if not resume and source.rollouts_path.exists():
        source.rollouts_path.unlink()
    evaluator = make_evaluator(cfg, held, rewards, tokenizer) if held else None
    log(f"{stage}: {trainable:,} trainable of {total:,} parameters; {plan.rollout_batch} rollouts per round "
        f"({plan.rollout_batch // plan.num_generations} prompts × {plan.num_generations}), {plan.micro_per_round} micro-batches per round")
    trainer = Trainer(model, step, source, cfg, rundir, tokenizer=tokenizer, companions=companions,
                      param_groups=groups, evaluator=evaluator)
    before = _evaluate_before(trainer, evaluator, rundir.path / "eval_before.json") if evaluator else {}
    result = trainer.fit(resume=resume)
    rows = rundir.metrics()
    vals = [r for r in rows if r.get("split") == "val"]
    if vals:
        for key in ("reward", "gold"):
            if key in vals[-1]:
                result[f"eval_{key}_before"], result[f"eval_{key}_after"] = before.get(key), vals[-1][key]
    points = divergence_points(before, rows)
    if len(points) > 1:
        from lmlab.plots import reward_vs_kl

        reward_vs_kl({stage: points}, rundir.path / "reward_vs_kl.png")
        result["reward_vs_kl"] = [{"step": n, "kl": k, "reward": r, "gold": g} for n, k, r, g in points]
    start, best = before.get(cfg.select_metric), result.get("best_value")
    if isinstance(start, float) and isinstance(best, float) and cfg.select_mode != "min":  # rewards: higher is better
        # the kept checkpoint is the best *trained* one; the starting policy is not a candidate, so say
        # when it would have won (RL that only lost held-out reward should not pass unnoticed)
        result["best_beats_start"] = best > start
        if best <= start:
            log(f"{stage}: no checkpoint beat the starting policy on held-out {cfg.select_metric} "
                f"({best:.4f} at best vs {start:.4f} before); final/ holds the best trained checkpoint, "
                f"but the starting model ({cfg.model}) scores higher")
    result.update({"trainable_params": trainable, "total_params": total, "prompts": len(items),
                   "rollouts_per_round": plan.rollout_batch, "rewards": rewards.names})
    rundir.finish(result)
    return RunResult(rundir.path, result)


def run_grpo(cfg: GRPOConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    return run_online("grpo", cfg, resume=resume, force=force)


def run_rloo(cfg: RLOOConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    return run_online("rloo", cfg, resume=resume, force=force)


def run_ppo(cfg: PPOConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    if cfg.num_generations != 1:
        log(f"ppo: num_generations={cfg.num_generations} completions per prompt (the critic is the baseline; 1 is usual)")
    if cfg.tuning == "lora":
        raise ConfigError("train ppo: tuning=lora is not supported yet (the value head shares the trunk); use full or freeze")
    return run_online("ppo", cfg, resume=resume, force=force)
