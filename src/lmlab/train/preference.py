"""`lmlab train dpo | kto | simpo | orpo`: align an SFT model with preferences, judged at the end.

    lmlab train dpo   model=runs/q/sft data=storyworld/prefs loss=sigmoid beta=0.1
    lmlab train dpo   model=runs/q/sft loss=sigmoid+sft loss_weights=1,0.2 precompute_ref=true
    lmlab train kto   model=runs/q/sft data=storyworld/kto desirable_weight=1 undesirable_weight=1
    lmlab train simpo model=runs/q/sft beta=2 gamma=1
    lmlab train orpo  model=runs/q/sft beta=0.1

Setup → reference → train → judge, top to bottom:

1. policy: the starting model (run folder, model folder, hub id). An SFT run trained with LoRA
   is an adapter folder: it is merged first, so the policy starts as *the SFT model*, then
   `tuning` decides what trains (a fresh LoRA, freeze, full).
2. data: pairs (dpo, simpo, orpo) or unpaired feedback (kto), rendered through the chat template
   as in SFT (`data/alignment_batches.py`); identical pairs and pairs truncated away are counted.
3. reference (dpo, kto): `companions.load_reference`: with tuning=lora on a full model it is the
   policy with adapters off (no copy); when the starting model is a LoRA adapter it is that SFT
   model merged, not its base (LLaMA-Factory#8459); else a frozen copy. With `precompute_ref=true`
   one no-grad pass stores its log-probs in the run folder (`refcache.py`) and it is then dropped.
4. the shared `Trainer` with the stage's step (`preference_steps.py`); each step logs the loss,
   implicit rewards, reward accuracy and margin, policy log-probs and the KL estimate.
5. judge: greedy answers to `judge_prompts` held-out prompts, scored by the storyworld gold judge
   (mean reward, constraint rate, words) with the KL(π‖π_ref) on those answers (SimPO/ORPO:
   to the starting model); samples
   for `samples` prompts; result.json last.
"""
from __future__ import annotations

import gc
import json
from typing import Any

import torch

from lmlab.data.alignment_batches import (
    AlignStats,
    EncodeOptions,
    FeedbackBatches,
    PolicyPairBatches,
    encode_feedback,
    encode_policy_pairs,
    encode_reply,
)
from lmlab.data.collate import pad_collate
from lmlab.errors import ConfigError
from lmlab.progress import log
from lmlab.runs import RunDir, RunResult, atomic_write_text
from lmlab.train.config import DPOConfig, KTOConfig, ORPOConfig, PreferenceConfig, SimPOConfig
from lmlab.train.stage import open_stage

STAGE_OF: dict[type, str] = {DPOConfig: "dpo", KTOConfig: "kto", SimPOConfig: "simpo", ORPOConfig: "orpo"}


def step_options(cfg: PreferenceConfig) -> dict[str, Any]:
    """The knobs the stage's step reads from `ctx.options`."""
    opts: dict[str, Any] = {"beta": cfg.beta}
    if isinstance(cfg, DPOConfig):
        opts.update(kinds=cfg.loss.split("+"), weights=list(cfg.loss_weights), label_smoothing=cfg.label_smoothing)
    elif isinstance(cfg, KTOConfig):
        opts.update(kind=cfg.loss, desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
    elif isinstance(cfg, SimPOConfig):
        opts.update(kind=cfg.loss, gamma=cfg.gamma, cpo_alpha=cfg.cpo_alpha, label_smoothing=cfg.label_smoothing)
    elif isinstance(cfg, ORPOConfig):
        opts.update(nll_on_prompt=cfg.nll_on_prompt)
    return opts


# -- model ---------------------------------------------------------------------------------------

def load_policy(cfg: PreferenceConfig) -> tuple[Any, Any]:
    """(policy with `cfg.tuning` applied, tokenizer); a LoRA-adapter starting model is merged first."""
    from lmlab.models import is_architecture
    from lmlab.models.load import apply_tuning, load_model
    from lmlab.train.sft import load_tokenizer

    if is_architecture(cfg.model):
        raise ConfigError(f"model={cfg.model}: preference optimisation starts from a trained (SFT) model: a run folder "
                          "such as runs/quickstart/sft, a model folder or a hub id, not an untrained architecture")
    model, tokenizer = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, device=cfg.device)
    if hasattr(model, "merge_and_unload"):  # an SFT LoRA adapter: the policy starts as that SFT model
        model = model.merge_and_unload()
    if cfg.tokenizer:
        tokenizer = load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return apply_tuning(model, cfg.tuning, cfg.lora, cfg.freeze), tokenizer


def load_ref(cfg: PreferenceConfig, policy: Any) -> Any:
    """The frozen reference, or None when it is the policy with its adapters off."""
    from lmlab.train.companions import load_reference

    spec = cfg.ref_model or cfg.model
    # An explicit ref_model other than the starting model is always its own (frozen) model.
    return load_reference(spec, policy=policy if spec == cfg.model else None, trust_remote_code=cfg.trust_remote_code)


# -- data ----------------------------------------------------------------------------------------

def _records(cfg: PreferenceConfig, kind: str) -> tuple[list[Any], list[Any]]:
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val

    records = load_records(cfg.data, kind, columns=cfg.columns or None, limit=cfg.limit)
    if cfg.eval_data:
        val = load_records(cfg.eval_data, kind, columns=cfg.columns or None, split=heldout_split(cfg.eval_data),
                           limit=max(cfg.eval_batches, 1) * cfg.batch_size if cfg.eval_batches > 0 else None)
        return records, val
    return split_train_val(records, cfg.val_fraction, seed=cfg.seed)


def load_sources(cfg: PreferenceConfig, tokenizer: Any) -> tuple[Any, Any, AlignStats]:
    """(train source, held-out source or None, rendering stats of the training set)."""
    opts = EncodeOptions(template=cfg.template, max_length=cfg.max_length, system=cfg.system)
    pad = tokenizer.pad_token_id
    if isinstance(cfg, KTOConfig):
        train, val = _records(cfg, "feedback")
        units, stats = encode_feedback(tokenizer, train, opts, cfg.batch_size, cfg.data)
        val_units = encode_feedback(tokenizer, val, opts, cfg.batch_size, cfg.eval_data or cfg.data)[0] if len(val) > 1 else []
        klass: type = FeedbackBatches
    else:
        train, val = _records(cfg, "preference")
        units, stats = encode_policy_pairs(tokenizer, train, opts, cfg.data)
        val_units = encode_policy_pairs(tokenizer, val, opts, cfg.eval_data or cfg.data)[0] if val else []
        klass = PolicyPairBatches
    src = klass(units, cfg.batch_size, pad, seed=cfg.seed, group_by_length=cfg.group_by_length)
    ev = klass(val_units, cfg.batch_size, pad, seed=cfg.seed) if val_units else None
    return src, ev, stats


def precompute_reference(cfg: PreferenceConfig, rundir: RunDir, ctx: Any, sources: dict[str, Any], device: torch.device) -> None:
    """Fill each source's `ref` with cached reference log-probs (see refcache.py)."""
    from lmlab.train.preference_steps import reference_logps
    from lmlab.train.refcache import precompute

    def to_device(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    from accelerate import PartialState

    name = cfg.ref_model or cfg.model
    # micro-batches the run will read: a run shorter than an epoch needs only its first batches
    needed = {"ref_logps.pt": cfg.max_steps * cfg.grad_accum * PartialState().num_processes if cfg.max_steps else None,
              "ref_logps_eval.pt": cfg.eval_batches if cfg.eval_batches > 0 else None}
    for file, src in sources.items():
        if src is not None:
            src.ref = precompute(src, lambda b: reference_logps(ctx, b), rundir.file(file), name, upto=needed[file],
                                 to_device=to_device)


# -- judge ---------------------------------------------------------------------------------------

def heldout_prompts(cfg: PreferenceConfig) -> list[Any]:
    """Prompts of the data's held-out split (storyworld: a fresh draw the judge understands)."""
    from lmlab.data.loaders import heldout_split, load_records

    kind = "feedback" if isinstance(cfg, KTOConfig) else "preference"
    spec = cfg.eval_data or cfg.data
    return [r.prompt for r in load_records(spec, kind, split=heldout_split(spec), limit=cfg.judge_prompts)]


@torch.no_grad()
def reference_kl(policy: Any, ctx: Any, tokenizer: Any, prompts: list[Any], answers: list[str],
                 cfg: PreferenceConfig, batch_size: int = 8) -> list[float]:
    """Σ_t KL(π(·|x, y_<t) ‖ π_ref(·|x, y_<t)) over each answer's tokens (its reply and end of turn):
    the exact per-position KL, summed along the policy's own greedy answer."""
    from lmlab.train.companions import reference_logits

    opts = EncodeOptions(template=cfg.template, max_length=cfg.max_length, system=cfg.system)
    dev = next(policy.parameters()).device
    out: list[float] = []
    for s in range(0, len(prompts), batch_size):
        rows = [encode_reply(tokenizer, p, a, opts, "held-out answer") for p, a in zip(prompts[s:s + batch_size], answers[s:s + batch_size], strict=True)]
        batch = {k: v.to(dev) for k, v in pad_collate(rows, tokenizer.pad_token_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logp = torch.log_softmax(policy(**inputs).logits[:, :-1].float(), -1)  # (N, T-1, V)
        logq = torch.log_softmax(reference_logits(ctx, **inputs)[:, :-1].float(), -1)  # (N, T-1, V)
        kl = (logp.exp() * (logp - logq)).sum(-1)  # (N, T-1)
        mask = batch["labels"][:, 1:] != -100
        out += (kl * mask).sum(-1).tolist()
    return out


def judge_heldout(trainer: Any, tokenizer: Any, cfg: PreferenceConfig, ctx: Any, rundir: RunDir) -> dict[str, Any]:
    """Greedy answers to held-out prompts: gold reward, constraint rate, words, KL to the reference."""
    import numpy as np

    from lmlab.data.chat import render_prompt
    from lmlab.data.storyworld import judge
    from lmlab.eval.reward_analysis import prompt_text, word_count
    from lmlab.generate import DecodingConfig, generate

    prompts = heldout_prompts(cfg)
    texts = [render_prompt(tokenizer, p, template=cfg.template, system=cfg.system) for p in prompts]
    with trainer.generation_model() as policy:
        answers = [o[0] for o in generate(policy, tokenizer, texts, DecodingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0))]
        kl = reference_kl(policy, ctx, tokenizer, prompts, answers, cfg)
    gold = [judge(prompt_text(p), a) for p, a in zip(prompts, answers, strict=True)]
    rows = [{"prompt": prompt_text(p), "answer": a, "gold": g.reward, "kl_ref": k}
            for p, a, g, k in zip(prompts, answers, gold, kl, strict=True)]
    atomic_write_text(rundir.file("heldout.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    rates = [g.constraint_rate for g in gold if g.constraint_rate is not None]
    out = {"heldout_prompts": len(prompts), "gold_mean": float(np.mean([g.reward for g in gold])),
           "constraint_rate": float(np.mean(rates)) if rates else None,
           "words": float(np.mean([word_count(a) for a in answers])), "kl_ref": float(np.mean(kl))}
    return out


# -- the stage -----------------------------------------------------------------------------------

def run(cfg: PreferenceConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Train `cfg.model` on preferences with the stage's loss; returns the run folder and its metrics."""
    from lmlab.devices import resolve_device
    from lmlab.models import count_parameters, human
    from lmlab.train.preference_steps import PREFERENCE_STEPS
    from lmlab.train.sft import write_samples
    from lmlab.train.steps import StepContext
    from lmlab.train.trainer import Trainer

    stage = STAGE_OF[type(cfg)]
    cfg, rundir, finished = open_stage(stage, cfg, resume=resume, force=force)
    if finished is not None:
        return finished

    policy, tokenizer = load_policy(cfg)
    trainable, total = count_parameters(policy)
    log(f"{stage} {cfg.tuning}: {human(trainable)} trainable of {human(total)} parameters")
    train_src, eval_src, stats = load_sources(cfg, tokenizer)
    log(f"data {cfg.data}: {stats.kept} train units of {stats.records} records ({stats.identical} identical pairs and "
        f"{stats.dropped_truncated} truncated away dropped, {stats.truncated} truncated), "
        f"{len(eval_src.examples) if eval_src else 0} held-out")
    for note in stats.notes:
        log(f"note: {note}")

    ctx = StepContext(options=step_options(cfg))
    ref = None
    if cfg.uses_reference:
        ref = load_ref(cfg, policy)
        ctx.ref_model, ctx.policy = ref, policy
        if cfg.precompute_ref:
            device = resolve_device(cfg.device)
            policy.to(device)
            if ref is not None:
                ref.to(device)
            precompute_reference(cfg, rundir, ctx, {"ref_logps.pt": train_src, "ref_logps_eval.pt": eval_src}, device)
            ctx.ref_model = ref = None  # training never touches the reference again
            gc.collect()
    trainer = Trainer(policy, PREFERENCE_STEPS[stage], train_src, cfg, rundir, eval_source=eval_src, tokenizer=tokenizer,
                      ctx=ctx, companions={"ref": ref} if ref is not None else None)
    result = trainer.fit(resume=resume)

    judged: dict[str, Any] = {}
    if cfg.judge_prompts and (cfg.eval_data or cfg.data).startswith("storyworld/"):
        # KL to the reference (the starting model for SimPO/ORPO, which train without one), measured
        # also when training used cached log-probs: the reference is loaded now if it is not in memory
        judge_ctx = StepContext(ref_model=trainer.ctx.ref_model or load_ref(cfg, trainer.raw), policy=trainer.raw)
        if judge_ctx.ref_model is not None:
            judge_ctx.ref_model.to(trainer.accelerator.device)
        judged = judge_heldout(trainer, tokenizer, cfg, judge_ctx, rundir)
        log(f"held-out: gold mean {judged['gold_mean']:.3f} on {judged['heldout_prompts']} prompts"
            + f", KL to the reference {judged['kl_ref']:.3f} nats per answer")
    samples = write_samples(trainer.raw, tokenizer, cfg, rundir)  # type: ignore[arg-type]
    result.update({"stage": stage, "trainable_params": trainable, "total_params": total, "tuning": cfg.tuning,
                   "data_stats": stats.as_dict(), "val_units": len(eval_src.examples) if eval_src else 0,
                   "precompute_ref": cfg.precompute_ref, **judged, "samples": samples})
    rundir.finish(result)
    return RunResult(rundir.path, result)
