"""`lmlab train sft`: supervised fine-tuning on chats/instructions, loss on the replies only.

    lmlab train sft model=runs/quickstart/pt data=storyworld/instruct tuning=lora lora.rank=8
    lmlab train sft model=Qwen/Qwen2.5-0.5B-Instruct data=alpaca packing=true --resume

Setup → train → samples, top to bottom:

1. model + tokenizer: a run folder (its `final/`), a model folder, a hub id, or an architecture
   name (`transformer:tiny`, with `tokenizer=`) for SFT from scratch; then `tuning`
   (full / freeze / lora / qlora) decides what trains. Trainable/total parameters are printed.
2. data: chat records rendered through the chat template with exact label masks
   (`data/chat.py`); held-out set from `eval_data` (its validation split when it has one) or a
   deterministic `val_fraction` split; `data_fraction` keeps a nested subset for ablations.
   Truncation by `max_length` is counted (examples, response tokens lost) and reported.
3. batches: padded (optionally length-grouped) or packed (`packing=true`: padding-free rows,
   no attention across examples; `data/collate.py`).
4. the shared `Trainer` with `lm_step`; final/ is the HF model (for LoRA: the adapter folder;
   `lmlab export merge_lora=true` merges it).
5. greedy samples for `samples` prompts, chat-rendered, into samples.jsonl; result.json holds the
   final metrics, parameter counts and truncation stats. Held-out loss and `val_ppl` are always
   on the answer tokens (also with `train_on_prompt=true`, so masked and unmasked runs compare);
   `val_ppl_all_tokens` is the all-token PPL, labelled as such.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from lmlab.data.chat import EncodedExample, EncodeStats, encode_dataset, render_prompt
from lmlab.data.collate import PackedBatches, PaddedBatches
from lmlab.errors import ConfigError
from lmlab.progress import log
from lmlab.runs import RunDir, RunResult, atomic_write_text
from lmlab.train.config import SFTConfig
from lmlab.train.stage import open_stage


# -- model -----------------------------------------------------------------------------------------
def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """A tokenizer folder, or a run folder that holds one (directly or in final/)."""
    from transformers import AutoTokenizer

    p = Path(path)
    for cand in (p, p / "final"):
        if (cand / "tokenizer_config.json").exists() or (cand / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(cand, trust_remote_code=trust_remote_code)
    if p.exists():
        raise ConfigError(f"tokenizer={path}: the folder holds no tokenizer (no tokenizer.json or tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_for_sft(cfg: SFTConfig) -> tuple[Any, Any]:
    """(model, tokenizer) with `cfg.tuning` applied."""
    from lmlab.models import build_model, is_architecture
    from lmlab.models.load import apply_tuning, load_model

    if is_architecture(cfg.model):
        if not cfg.tokenizer:
            raise ConfigError(
                f"model={cfg.model} is an architecture trained from scratch: give tokenizer=DIR "
                "(e.g. the folder `lmlab tokenizer train` wrote), or start from a pretrained run folder"
            )
        tokenizer = load_tokenizer(cfg.tokenizer)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    else:
        model, tokenizer = load_model(cfg.model, tuning=cfg.tuning, trust_remote_code=cfg.trust_remote_code)
        if cfg.tokenizer:
            tokenizer = load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = apply_tuning(model, cfg.tuning, cfg.lora, cfg.freeze)
    return model, tokenizer


# -- data ------------------------------------------------------------------------------------------
def nested_subset(records: list[Any], fraction: float, seed: int) -> list[Any]:
    """The first ⌈f·N⌉ records in a seeded hash order: f=0.25 ⊂ f=0.5 ⊂ f=1 (a fair data-size ablation)."""
    if fraction >= 1.0:
        return records
    from lmlab.data.split import unit_hash

    k = max(1, math.ceil(fraction * len(records)))
    keep = set(sorted(range(len(records)), key=lambda i: (unit_hash(records[i], seed + 1), i))[:k])
    return [r for i, r in enumerate(records) if i in keep]


def split_chat_records(cfg: SFTConfig) -> tuple[list[Any], list[Any]]:
    """(train, held-out) chat records: `eval_data`'s held-out split, else a `val_fraction` hash split
    of `data`. The one rule for the stage, its ablations and `eval gen prompts=<sft run>`."""
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val

    records = load_records(cfg.data, "chat", columns=cfg.columns or None, limit=cfg.limit)
    if cfg.eval_data:
        val = load_records(cfg.eval_data, "chat", columns=cfg.columns or None, split=heldout_split(cfg.eval_data),
                           limit=max(cfg.eval_batches, 1) * cfg.batch_size if cfg.eval_batches > 0 else None)
        return records, val
    return split_train_val(records, cfg.val_fraction, seed=cfg.seed)


def load_chat_data(cfg: SFTConfig, tokenizer: Any) -> tuple[list[EncodedExample], list[EncodedExample], EncodeStats]:
    """Rendered train and held-out examples plus the truncation stats of the training set."""
    train, val = split_chat_records(cfg)
    train = nested_subset(train, cfg.data_fraction, cfg.seed)
    opts = {"template": cfg.template, "max_length": cfg.max_length, "train_on_prompt": cfg.train_on_prompt,
            "system": cfg.system}
    train_ex, stats = encode_dataset(tokenizer, train, source=cfg.data, **opts)
    # Held-out labels are the answer tokens whatever `train_on_prompt` is, so a masked and an
    # unmasked run are scored (and their best checkpoint chosen) on the same tokens.
    val_opts = {**opts, "train_on_prompt": False}
    val_ex = encode_dataset(tokenizer, val, source=cfg.eval_data or cfg.data, **val_opts)[0] if val else []
    return train_ex, val_ex, stats


def check_packing(model: Any) -> None:
    """Packing needs a model whose attention honours position_ids resets (HF attention models).

    A recurrent model would carry its state from one packed example into the next: refuse.
    """
    from lmlab.train.forward import accepts

    if not accepts(model, "position_ids"):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        raise ConfigError(
            f"packing=true: {type(base).__name__} does not take position_ids, so packed examples would leak "
            "into each other; set packing=false (group_by_length=true also cuts padding)"
        )


def make_sources(cfg: SFTConfig, train: list[EncodedExample], val: list[EncodedExample], pad_id: int) -> tuple[Any, Any]:
    if cfg.packing:
        src = PackedBatches(train, cfg.batch_size, pad_id, cfg.max_length, seed=cfg.seed)
    else:
        src = PaddedBatches(train, cfg.batch_size, pad_id, seed=cfg.seed, group_by_length=cfg.group_by_length)
    # Evaluation is always padded and length-grouped: the same loss, whatever the training layout.
    ev = PaddedBatches(val, cfg.batch_size, pad_id, seed=cfg.seed, group_by_length=True) if val else None
    return src, ev


# -- held-out perplexity --------------------------------------------------------------------------
@torch.no_grad()
def heldout_ppl(model: Any, source: Any, n_batches: int) -> dict[str, float]:
    """Held-out PPL on the answer tokens and on every token of the first `n_batches` batches.

    The answer tokens (assistant replies + end-of-turn, the eval labels) are what SFT is for and
    the same for a masked and an unmasked run: that is the column to compare them on. All-token
    PPL also scores the prompt (template headers, the user's text), which an unmasked run
    learned to predict and a masked one never saw: a different number, reported under its own name.
    """
    from lmlab.train.objectives import IGNORE_INDEX, causal_lm_loss

    device = next(model.parameters()).device
    sums = {"answer": [0.0, 0], "all_tokens": [0.0, 0]}
    was_training = model.training
    model.eval()
    try:
        for i in range(n_batches):
            batch = source.get(i)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
            for name, labels in (("answer", batch["labels"].to(device)), ("all_tokens", ids.masked_fill(mask == 0, IGNORE_INDEX))):
                loss, n = causal_lm_loss(logits, labels)
                sums[name][0] += float(loss) * n
                sums[name][1] += n
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    for name, (nll, n) in sums.items():
        out[f"val_ppl_{name}"] = math.exp(nll / n) if n else float("nan")
        out[f"val_tokens_{name}"] = n
    return out


def print_summary(result: dict[str, Any], run: RunDir) -> None:
    """The final table, like `train pt` prints: which PPL is which is in the column names."""
    from lmlab.eval.common import print_table

    print_table(f"sft {run.path}", ["steps", "train loss", "val loss (answer)", "val ppl (answer tokens)",
                                   "val ppl (all tokens)", "tokens/s"],
                [[result.get("steps"), result.get("train_loss"), result.get("val_loss"), result.get("val_ppl_answer"),
                  result.get("val_ppl_all_tokens"), result.get("tokens_per_s")]])
    print(f"model: {run.final_dir}")


# -- samples ---------------------------------------------------------------------------------------
def write_samples(model: Any, tokenizer: Any, cfg: SFTConfig, run: RunDir, max_new_tokens: int = 128) -> list[dict[str, str]]:
    """Greedy replies to `cfg.samples`, each prompt rendered as a user turn through the template."""
    if not cfg.samples:
        return []
    from lmlab.generate import DecodingConfig, generate

    prompts = [render_prompt(tokenizer, p, template=cfg.template, system=cfg.system) for p in cfg.samples]
    was_training = model.training
    model.eval()
    try:
        outs = generate(model, tokenizer, prompts, DecodingConfig(max_new_tokens=max_new_tokens, temperature=0.0))
    finally:
        model.train(was_training)
    rows = [{"prompt": p, "response": o[0]} for p, o in zip(cfg.samples, outs, strict=True)]
    atomic_write_text(run.file("samples.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


# -- the stage -------------------------------------------------------------------------------------
def run(cfg: SFTConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Fine-tune `cfg.model` on `cfg.data`; returns the run folder and its final metrics."""
    from lmlab.models import count_parameters, human
    from lmlab.train.steps import lm_step
    from lmlab.train.trainer import Trainer

    cfg, rundir, finished = open_stage("sft", cfg, resume=resume, force=force)
    if finished is not None:
        return finished

    model, tokenizer = load_for_sft(cfg)
    trainable, total = count_parameters(model)
    log(f"sft {cfg.tuning}: {human(trainable)} trainable of {human(total)} parameters ({100 * trainable / max(total, 1):.2f}%)")

    if cfg.packing:
        check_packing(model)
    train, val, stats = load_chat_data(cfg, tokenizer)
    log(f"data {cfg.data}: {len(train)} train / {len(val)} held-out examples, {stats.trained_tokens} response tokens "
        f"of {stats.total_tokens} ({stats.path} masks)")
    if stats.truncated_examples or stats.dropped_examples:
        log(f"max_length={cfg.max_length} truncated {stats.truncated_examples} of {stats.examples} examples "
            f"({stats.truncated_response_tokens} response tokens lost, {stats.dropped_examples} examples left with none)")
    train_src, eval_src = make_sources(cfg, train, val, tokenizer.pad_token_id)
    # chat, serve and eval render prompts with the tokenizer's template: it must be the one the model
    # was trained on, so the resolved `template=` is saved with final/ (tokenizer_config / chat_template)
    from lmlab.data.chat import resolve_template

    tokenizer.chat_template = resolve_template(tokenizer, cfg.template)

    # Packed rows rely on transformers spotting position_ids resets, which it skips when a KV
    # cache exists; no cache in training (it is restored before saving, so generation keeps it).
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if config is not None and use_cache is not None:
        config.use_cache = False
    trainer = Trainer(model, lm_step, train_src, cfg, rundir, eval_source=eval_src, tokenizer=tokenizer)
    try:
        result = trainer.fit(resume=resume)
    finally:
        if config is not None and use_cache is not None:
            config.use_cache = use_cache
    final_config = rundir.final_dir / "config.json"
    if use_cache and final_config.exists():  # final/ was saved mid-training: give it back its cache
        saved = json.loads(final_config.read_text())
        saved["use_cache"] = use_cache
        atomic_write_text(final_config, json.dumps(saved, indent=2) + "\n")

    from lmlab.devices import is_main_process

    samples = write_samples(trainer.raw, tokenizer, cfg, rundir) if is_main_process() else []
    held_out = {}
    if eval_src is not None:
        n_eval = len(eval_src) if cfg.eval_batches <= 0 else min(cfg.eval_batches, len(eval_src))
        held_out = {**heldout_ppl(trainer.raw, eval_src, n_eval), "val_ppl_tokens": "answer"}
    result = {
        **result,
        **held_out,
        "trainable_params": trainable,
        "total_params": total,
        "tuning": cfg.tuning,
        "train_examples": len(train),
        "val_examples": len(val),
        "truncation": stats.as_dict(),
        "batches_per_epoch": len(train_src),
        "samples": samples,
    }
    rundir.finish(result)
    print_summary(result, rundir)
    return RunResult(rundir.path, result)
