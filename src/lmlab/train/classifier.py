"""`lmlab train rm kind=classifier`: a sequence classifier on labelled text, to use as an RL reward.

    lmlab train rm kind=classifier model=runs/imdb-pt data=imdb max_steps=300 out=runs/imdb-rm
    lmlab train ppo model=runs/imdb-pt reward=runs/imdb-rm reward_label=positive data=imdb

The model is a causal LM loaded as an HF sequence-classification model with one output per
class (a fresh linear head on the last real token's hidden state), trained with cross-entropy
on (text, label) records. Class names come from the data (sorted, so IMDB's negative/positive
are 0/1) and are saved as the config's id2label: `lmlab.train.rewards.ModelReward` reads them to
turn `reward_label=positive` into "the positive logit (or probability) of prompt + completion".
Texts keep their last `max_length` tokens, as the reward model does when it scores a completion.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.data.collate import PaddedBatches
from lmlab.data.preference import pad_rows
from lmlab.errors import DataError
from lmlab.progress import log
from lmlab.runs import RunResult
from lmlab.train.config import RewardConfig
from lmlab.train.steps import StepContext, StepOutput, with_weight


@dataclass
class LabelledExample:
    input_ids: list[int]
    label: int


class LabelledBatches(PaddedBatches):
    """Shuffled micro-batches: right-padded input_ids / attention_mask (B, T) and labels (B,)."""

    def get(self, index: int) -> dict[str, Tensor]:
        part = [self.examples[i] for i in self._batch_indices(index)]
        batch = pad_rows([e.input_ids for e in part], self.pad_id)
        batch["labels"] = torch.tensor([e.label for e in part], dtype=torch.long)
        return batch


def classification_step(model: nn.Module, batch: dict[str, Tensor], ctx: StepContext) -> StepOutput:
    """Cross-entropy −log softmax(W·h_last)[y], mean over the B texts (weight B)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()  # (B, K)
    loss = F.cross_entropy(logits, batch["labels"])
    with torch.no_grad():
        accuracy = float((logits.argmax(-1) == batch["labels"]).float().mean())
    return StepOutput(loss=loss, weight=float(len(batch["labels"])), tokens=int(batch["attention_mask"].sum()),
                      metrics={"accuracy": accuracy})


with_weight(classification_step, lambda batch: float(len(batch["labels"])))


def label_names(records: Sequence[Any]) -> list[str]:
    """Class names, sorted (numbers as numbers): the index of each is its class id."""
    values = {r.label for r in records}
    return [str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v))]


def encode_labelled(tokenizer: Any, records: Sequence[Any], names: Sequence[str], max_length: int, source: str) -> list[LabelledExample]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i, r in enumerate(records):
        label = str(r.label)
        if label not in index:
            raise DataError(f"{source}: record {i} has label {r.label!r}, not one of the training labels {list(names)}")
        ids = tokenizer(r.text.replace("<br />", " "), add_special_tokens=True)["input_ids"][-max_length:]
        out.append(LabelledExample(ids, index[label]))
    return out


@torch.no_grad()
def accuracy(model: Any, examples: Sequence[LabelledExample], pad_id: int, batch_size: int) -> float:
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    right = 0
    try:
        for s in range(0, len(examples), batch_size):
            part = examples[s:s + batch_size]
            batch = pad_rows([e.input_ids for e in part], pad_id)
            logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
            right += int((logits.argmax(-1).cpu() == torch.tensor([e.label for e in part])).sum())
    finally:
        model.train(was)
    return right / max(len(examples), 1)


def run(cfg: RewardConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Train a classifier on `cfg.data` (labelled text); final/ loads with AutoModelForSequenceClassification."""
    from lmlab.data.loaders import heldout_split, load_records
    from lmlab.data.split import split_train_val
    from lmlab.models import count_parameters
    from lmlab.models.load import apply_tuning, load_model
    from lmlab.train.stage import open_stage
    from lmlab.train.trainer import Trainer

    cfg, rundir, finished = open_stage("rm", cfg, resume=resume, force=force)
    if finished is not None:
        return finished
    records = load_records(cfg.data, "labelled", columns=cfg.columns or None, limit=cfg.limit)
    if cfg.eval_data:
        train, val = records, load_records(cfg.eval_data, "labelled", columns=cfg.columns or None, split=heldout_split(cfg.eval_data))
    else:
        train, val = split_train_val(records, cfg.val_fraction, seed=cfg.seed)
    names = label_names(train)
    if len(names) < 2:
        raise DataError(f"data={cfg.data}: a classifier needs at least two labels, found {names}")
    model, tokenizer = load_model(cfg.model, kind="sequence-classification", num_labels=len(names),
                                  trust_remote_code=cfg.trust_remote_code)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    model.config.pad_token_id = tokenizer.pad_token_id
    model = apply_tuning(model, cfg.tuning, cfg.lora, cfg.freeze)
    trainable, total = count_parameters(model)
    train_ex = encode_labelled(tokenizer, train, names, cfg.max_length, cfg.data)
    val_ex = encode_labelled(tokenizer, val, names, cfg.max_length, cfg.eval_data or cfg.data) if val else []
    log(f"classifier {names}: {len(train_ex)} train / {len(val_ex)} held-out texts; {trainable:,} trainable parameters")
    pad = tokenizer.pad_token_id
    train_src = LabelledBatches(train_ex, cfg.batch_size, pad, seed=cfg.seed, group_by_length=cfg.group_by_length)
    eval_src = LabelledBatches(val_ex, cfg.batch_size, pad, seed=cfg.seed, group_by_length=True) if val_ex else None
    trainer = Trainer(model, classification_step, train_src, cfg, rundir, eval_source=eval_src, tokenizer=tokenizer)
    result = trainer.fit(resume=resume)
    if val_ex:
        result["eval_accuracy"] = accuracy(trainer.raw, val_ex, pad, cfg.batch_size)
        result["majority_baseline"] = max(sum(e.label == k for e in val_ex) for k in range(len(names))) / len(val_ex)
        log(f"held-out accuracy {result['eval_accuracy']:.3f} (majority class {result['majority_baseline']:.3f})")
    result.update({"kind": "classifier", "labels": names, "trainable_params": trainable, "total_params": total,
                   "train_texts": len(train_ex), "val_texts": len(val_ex)})
    rundir.finish(result)
    return RunResult(rundir.path, result)
