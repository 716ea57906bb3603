"""`lmlab train rm`: a Bradley–Terry reward model on preference pairs.

    lmlab train rm model=runs/quickstart/sft data=storyworld/prefs max_steps=200
    lmlab train rm model=Qwen/Qwen2.5-0.5B-Instruct data=dpo-en tuning=lora lora.rank=8 margin=0.5

Setup → train → evaluate, top to bottom:

1. model: a causal LM (run folder, model folder or hub id) loaded as a sequence-classification
   model with one output, r(x, y) = w·h_last (a fresh linear head on the last non-pad token's
   hidden state; the LM head is dropped). `pad_token_id` is set on the config, because the head
   finds each row's last real token by comparing with it. Then `tuning` (full / freeze / lora).
2. data: preference records (`lmlab.data.preference`); each response is rendered *with its prompt* through the chat
   template, exactly the text a policy produces at inference (prompt, assistant header, reply,
   end of turn). Sequences longer than `max_length` lose tokens from the left: the reward is read
   at the end, so the end of the reply must survive.
3. batches of B pairs as 2B rows, chosen first, rejected after (one forward pass; `reward_step`),
   loss −log σ(r_c − r_r − m) (InstructGPT eq. 1; margin m: Llama 2 eq. 2) plus the optional
   centring penalty η·(r_c + r_r)² (`center_rewards`).
4. the shared `Trainer`, evaluating on the *selection* half of the held-out pairs (which picks the
   kept checkpoint); after training, pairwise accuracy and the mean margin on the other, *test*
   half go into result.json (`eval_accuracy`, `eval_split: test`; `selection_accuracy` beside it); final/ is the HF sequence-classification model (`eval reward`,
   `eval compare judge=` and PPO load it with AutoModelForSequenceClassification).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lmlab.data.preference import EncodedPair, PairBatches, encode_pairs, pad_rows
from lmlab.errors import ConfigError, DataError
from lmlab.progress import log
from lmlab.runs import RunResult
from lmlab.train.config import RewardConfig
from lmlab.train.stage import open_stage

# -- data --------------------------------------------------------------------------------------

def load_pairs(cfg: RewardConfig, tokenizer: Any) -> tuple[list[EncodedPair], list[EncodedPair], list[EncodedPair]]:
    """(train, selection, test) pairs.

    The held-out pairs (`eval_data`'s held-out split, or `val_fraction` of `data`) are halved by a
    content hash: the selection half is what the loop evaluates on, and so what chooses the kept
    checkpoint (keep_best) and stops early; the test half is touched only once, at the end, for
    the accuracy we report. Accuracy on the pairs that chose the checkpoint is biased upwards.
    With a single held-out pair there is nothing to halve: it serves both, and result.json says so.
    """
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val

    records = load_records(cfg.data, "preference", columns=cfg.columns or None, limit=cfg.limit)
    if cfg.eval_data:
        train = records
        val = load_records(cfg.eval_data, "preference", columns=cfg.columns or None, split=heldout_split(cfg.eval_data),
                           limit=max(cfg.eval_batches, 1) * cfg.batch_size if cfg.eval_batches > 0 else None)
    else:
        train, val = split_train_val(records, cfg.val_fraction, seed=cfg.seed)
    if not train:
        raise DataError(f"data={cfg.data}: no training pairs left after holding out val_fraction={cfg.val_fraction}")
    selection, test = split_train_val(val, 0.5, seed=cfg.seed + 1)
    if not test:
        test = selection

    def encode(records: list[Any]) -> list[EncodedPair]:
        return encode_pairs(tokenizer, records, cfg.max_length, cfg.template, cfg.eval_data or cfg.data) if records else []

    train_pairs = encode_pairs(tokenizer, train, cfg.max_length, cfg.template, cfg.data)
    return train_pairs, encode(selection), (encode(test) if test is not selection else [])


# -- model -------------------------------------------------------------------------------------

@contextmanager
def fresh_head_expected(what: str = "head") -> Iterator[ExpectedHeadReport]:
    """Load a causal LM as a classifier inside this block: HF's load report about the new `score`
    head is replaced by one line (`{what} score.weight: new …, as expected`)."""
    report = ExpectedHeadReport()
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.addFilter(report)
    try:
        yield report
    finally:
        hf_logger.removeFilter(report)
    if report.fresh:
        log(f"{what} {', '.join(report.fresh)}: new and randomly initialised, as expected (this stage trains it)")


class ExpectedHeadReport(logging.Filter):
    """Holds back transformers' load report when all it says is what turning a causal LM into a
    reward model must do: a fresh `score` head (MISSING) and an unused `lm_head` (UNEXPECTED).

    That red "score.weight MISSING" table reads like an error; the stage prints one line instead.
    Any other missing or unexpected key still gets the full report.
    """

    ROW = re.compile(r"^(\S+)\s*\|\s*([A-Z_]+)\s*\|", re.MULTILINE)

    def __init__(self) -> None:
        super().__init__()
        self.fresh: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = self.ROW.findall(message)
        expected = bool(rows) and all((status == "MISSING" and key.startswith("score."))
                                      or (status == "UNEXPECTED" and key.startswith("lm_head.")) for key, status in rows)
        if expected:
            self.fresh += [key for key, status in rows if status == "MISSING"]
        return not expected


def load_for_rm(cfg: RewardConfig) -> tuple[Any, Any]:
    """(sequence-classification model with one output, tokenizer) with `cfg.tuning` applied."""
    from lmlab.models import is_architecture
    from lmlab.models.load import apply_tuning, load_model
    from lmlab.train.sft import load_tokenizer

    if is_architecture(cfg.model):
        raise ConfigError(
            f"model={cfg.model}: a reward model starts from a trained language model (a run folder such as "
            "runs/quickstart/sft, a model folder or a hub id), not an untrained architecture"
        )
    with fresh_head_expected("reward head"):
        model, tokenizer = load_model(cfg.model, kind="sequence-classification", trust_remote_code=cfg.trust_remote_code)
    if cfg.tokenizer:
        tokenizer = load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model = apply_tuning(model, cfg.tuning, cfg.lora, cfg.freeze)
    return model, tokenizer


# -- evaluation --------------------------------------------------------------------------------

@torch.no_grad()
def pair_rewards(model: Any, pairs: Sequence[EncodedPair], pad_id: int, batch_size: int) -> tuple[list[float], list[float]]:
    """Rewards of the chosen and the rejected side of every pair."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen: list[float] = []
    rejected: list[float] = []
    try:
        for s in range(0, len(pairs), batch_size):
            part = pairs[s:s + batch_size]
            batch = pad_rows([p.chosen for p in part] + [p.rejected for p in part], pad_id)
            r = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits[:, 0]
            r = r.float().cpu().tolist()  # (2B,)
            chosen += r[:len(part)]
            rejected += r[len(part):]
    finally:
        model.train(was_training)
    return chosen, rejected


def pair_metrics(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    from lmlab.eval.reward_analysis import pairwise_accuracy

    c, r = torch.tensor(list(chosen)), torch.tensor(list(rejected))
    return {"eval_pairs": len(c), "eval_accuracy": pairwise_accuracy(chosen, rejected),
            "eval_margin": float((c - r).mean()), "eval_reward_chosen": float(c.mean()),
            "eval_reward_rejected": float(r.mean())}


# -- the stage ---------------------------------------------------------------------------------

def run(cfg: RewardConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Train a reward model on `cfg.data`; returns the run folder and its final metrics."""
    if cfg.kind == "classifier":  # labelled text, cross-entropy: train/classifier.py
        from lmlab.train.classifier import run as run_classifier

        return run_classifier(cfg, resume=resume, force=force)
    from lmlab.models import count_parameters
    from lmlab.train.steps import StepContext, reward_step
    from lmlab.train.trainer import Trainer

    cfg, rundir, finished = open_stage("rm", cfg, resume=resume, force=force)
    if finished is not None:
        return finished

    model, tokenizer = load_for_rm(cfg)
    trainable, total = count_parameters(model)
    log(f"rm {cfg.tuning}: {trainable:,} trainable of {total:,} parameters")
    train, val, test = load_pairs(cfg, tokenizer)
    log(f"data {cfg.data}: {len(train)} train / {len(val)} selection / {len(test)} test pairs")
    pad = tokenizer.pad_token_id
    train_src = PairBatches(train, cfg.batch_size, pad, seed=cfg.seed, group_by_length=cfg.group_by_length)
    eval_src = PairBatches(val, cfg.batch_size, pad, seed=cfg.seed, group_by_length=True) if val else None
    ctx = StepContext(options={"margin": cfg.margin, "center_rewards": cfg.center_rewards})
    trainer = Trainer(model, reward_step, train_src, cfg, rundir, eval_source=eval_src, tokenizer=tokenizer, ctx=ctx)
    result = trainer.fit(resume=resume)

    if val:
        # eval_* is on the test half; the selection half chose the checkpoint, its accuracy is kept apart
        chosen_val = pair_metrics(*pair_rewards(trainer.raw, val, pad, cfg.batch_size))
        result["selection_accuracy"] = chosen_val["eval_accuracy"]
        result.update(pair_metrics(*pair_rewards(trainer.raw, test, pad, cfg.batch_size)) if test else chosen_val)
        result["eval_split"] = "test" if test else "validation (also chose the checkpoint: biased upwards)"
        log(f"pairwise accuracy on {len(test) or len(val)} {result['eval_split']} pairs {result['eval_accuracy']:.3f} "
            f"(selection pairs: {result['selection_accuracy']:.3f}), mean margin {result['eval_margin']:.3f}")
    result.update({"trainable_params": trainable, "total_params": total, "tuning": cfg.tuning,
                   "train_pairs": len(train), "val_pairs": len(val), "test_pairs": len(test)})
    rundir.finish(result)
    return RunResult(rundir.path, result)
