"""`lmlab train pt`: next-token pretraining, from scratch (rnn, lstm, gru, transformer, seq2seq)
or continued on any Hugging Face causal LM.

    lmlab train pt model=transformer:tiny data=storyworld/pretrain max_steps=300
    lmlab train pt model=lstm tokenizer=runs/tok max_length=128 --resume

1. texts from `data` (train split); validation from `eval_data` or a hash split of `data`;
2. a tokenizer: `tokenizer=DIR` (a tokenizer folder or a `lmlab tokenizer train` out folder), else
   one trained on the training texts and saved to <out>/tokenizer; a pretrained model brings its own;
3. the model: `build_model(arch, len(tokenizer), overrides=arch)` (seeded) or `load_model(model)`;
4. the corpus is tokenized once into a cached token file (`data/tokencache.py`) and sampled as
   random contiguous blocks of `max_length` tokens; seq2seq trains on (source, target) pairs;
5. the shared Trainer with `lm_step` / `seq2seq_step`; then samples for `samples` prompts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import ConfigError, DataError, LmlabError
from lmlab.progress import log
from lmlab.runs import RunDir, RunResult, atomic_write_text
from lmlab.train.config import PretrainConfig
from lmlab.train.stage import open_stage

IGNORE_INDEX = -100


# -- tokenizer and model -------------------------------------------------------------------------------
def tokenizer_folder(path: str | Path) -> Path:
    """A tokenizer folder, or a run folder holding one directly, in final/ or in tokenizer/."""
    p = Path(path)
    for cand in (p, p / "final", p / "tokenizer"):
        if (cand / "tokenizer.json").exists() or (cand / "tokenizer_config.json").exists():
            return cand
    if p.exists():
        raise ConfigError(f"tokenizer={path}: no tokenizer there (no tokenizer.json in it, its final/ or tokenizer/); "
                          "give the out folder of `lmlab tokenizer train`")
    raise ConfigError(f"tokenizer={path}: no such folder; train one with `lmlab tokenizer train out={path}` "
                      "or leave tokenizer unset to train one on the data")


def get_tokenizer(cfg: PretrainConfig, texts: list[str], run: RunDir) -> Any:
    """cfg.tokenizer, else the one this run trained before (resume), else a new one on `texts`."""
    from transformers import AutoTokenizer

    if cfg.tokenizer:
        return AutoTokenizer.from_pretrained(tokenizer_folder(cfg.tokenizer))
    own = run.path / "tokenizer"
    if (own / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(own)
    from lmlab.tokenizers import train_tokenizer

    log(f"training a {cfg.tokenizer_kind} tokenizer (vocab {cfg.vocab_size}) on {len(texts)} texts → {own}")
    return train_tokenizer(texts, kind=cfg.tokenizer_kind, vocab_size=cfg.vocab_size, out=own)


def get_model(cfg: PretrainConfig, texts: list[str], run: RunDir) -> tuple[Any, Any, str]:
    """(model, tokenizer, kind) with kind 'causal-lm' or 'seq2seq'."""
    from lmlab.models import architecture, build_model, is_architecture

    if is_architecture(cfg.model):
        arch, _ = architecture(cfg.model)
        tokenizer = get_tokenizer(cfg, texts, run)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, len(tokenizer), overrides=cfg.arch or None, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return model, tokenizer, arch.kind
    if cfg.arch:
        raise ConfigError(f"arch={cfg.arch} only applies to architectures built from scratch, not model={cfg.model}")
    from lmlab.models.load import load_model

    model, tokenizer = load_model(cfg.model)
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(cfg.tokenizer))
    kind = "seq2seq" if getattr(getattr(model, "config", None), "is_encoder_decoder", False) else "causal-lm"
    return model, tokenizer, kind


def check_length(model: Any, max_length: int) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length={max_length} exceeds the model's max_position_embeddings={limit}; "
                          f"lower max_length or set arch.max_position_embeddings={max_length}")


# -- data ----------------------------------------------------------------------------------------------
def load_split_texts(cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    from lmlab.data.loaders import heldout_split, load_texts
    from lmlab.data.split import split_train_val
    from lmlab.train.sft import nested_subset

    texts = load_texts(cfg.data, split="train", limit=cfg.limit, columns=cfg.columns or None)
    if cfg.eval_data:
        val = load_texts(cfg.eval_data, split=heldout_split(cfg.eval_data), columns=cfg.columns or None)
    else:
        texts, val = split_train_val(texts, cfg.val_fraction, cfg.seed)
    return nested_subset(texts, cfg.data_fraction, cfg.seed), val  # held-out set fixed, training set nested


_SENTENCE = re.compile(r"(?<=[.!?])[\"”']?\s+")


def text_pairs(cfg: PretrainConfig, split: str, spec: str) -> list[tuple[str, str]]:
    """(source, target) pairs: chats give (first user turn, first reply); texts give (first sentence, rest)."""
    from lmlab.data.loaders import load_records, load_texts

    try:
        records = load_records(spec, "chat", split=split, limit=cfg.limit, columns=cfg.columns or None)
        pairs = []
        for r in records:
            user = next((m.content for m in r.messages if m.role == "user"), None)
            reply = next((m.content for m in r.messages if m.role == "assistant"), None)
            if user and reply:
                pairs.append((user, reply))
        if pairs:
            return pairs
    except LmlabError:
        pass
    pairs = []
    for text in load_texts(spec, split=split, limit=cfg.limit, columns=cfg.columns or None):
        head, *rest = _SENTENCE.split(text.strip(), maxsplit=1)
        if rest and rest[0].strip():
            pairs.append((head, rest[0].strip()))
    if not pairs:
        raise DataError(f"{spec} ({split}): no (source, target) pairs for seq2seq: chats need a user and an assistant "
                        "turn, texts at least two sentences")
    return pairs


class PairBatches:
    """Shuffled (source, target) micro-batches for encoder-decoder models; order per epoch from (seed, epoch)."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, seed: int = 0,
                 shuffle: bool = True):
        if not pairs:
            raise DataError("no (source, target) pairs to train on")
        self.pairs, self.batch_size, self.pad_id, self.seed, self.shuffle = pairs, batch_size, pad_id, seed, shuffle

    def __len__(self) -> int:
        return max(1, len(self.pairs) // self.batch_size)

    def get(self, index: int) -> dict[str, torch.Tensor]:
        epoch, j = divmod(index, len(self))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs)) if self.shuffle else np.arange(len(self.pairs))
        rows = [self.pairs[int(k)] for k in order[j * self.batch_size:(j + 1) * self.batch_size]]
        S, T = max(len(s) for s, _ in rows), max(len(t) for _, t in rows)
        ids = torch.full((len(rows), S), self.pad_id, dtype=torch.long)  # (B, S)
        mask = torch.zeros((len(rows), S), dtype=torch.long)  # (B, S)
        labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for i, (s, t) in enumerate(rows):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            labels[i, :len(t)] = torch.tensor(t)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_text_pairs(cfg: PretrainConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held-out) (source, target) pairs of a seq2seq run: `eval_data`'s held-out split, else a
    `val_fraction` hash split of the text pairs (so `eval gen prompts=<run>` can find the same ones)."""
    from lmlab.data.loaders import heldout_split
    from lmlab.data.split import split_train_val

    pairs = text_pairs(cfg, "train", cfg.data)
    if cfg.eval_data:
        return pairs, text_pairs(cfg, heldout_split(cfg.eval_data), cfg.eval_data)
    return split_train_val(pairs, cfg.val_fraction, cfg.seed)


def encode_pairs(pairs: list[tuple[str, str]], tokenizer: Any, max_length: int) -> list[tuple[list[int], list[int]]]:
    src = tokenizer([s for s, _ in pairs], add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    tgt = tokenizer([t for _, t in pairs], add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(s, [*t, eos]) for s, t in zip(src, tgt, strict=True) if s]


def lm_sources(cfg: PretrainConfig, tokenizer: Any, train: list[str], val: list[str]) -> tuple[Any, Any]:
    from lmlab.data.tokencache import BlockSource, encode_corpus

    tokens = encode_corpus(train, tokenizer)
    log(f"data {cfg.data}: {len(train)} texts, {len(tokens):,} tokens ({len(tokens) // cfg.max_length:,} blocks of {cfg.max_length})")
    train_src = BlockSource(tokens, cfg.max_length, cfg.batch_size, seed=cfg.seed)
    eval_src = None
    if val:
        vtok = encode_corpus(val, tokenizer)
        block = min(cfg.max_length, len(vtok) - 1)
        if block < 2:
            log(f"validation set too small ({len(vtok)} tokens): no evaluation")
        else:
            if block < cfg.max_length:
                log(f"validation has {len(vtok)} tokens: evaluating on blocks of {block}")
            eval_src = BlockSource(vtok, block, cfg.batch_size, seed=cfg.seed, sequential=True)
    return train_src, eval_src


# -- samples and summary ---------------------------------------------------------------------------------
def write_samples(model: Any, tokenizer: Any, cfg: PretrainConfig, run: RunDir, max_new_tokens: int = 64) -> list[dict[str, str]]:
    """One sampled continuation per prompt (temperature 0.8, top-k 50, seeded) → samples.jsonl."""
    if not cfg.samples:
        return []
    from lmlab.generate import DecodingConfig, generate

    was_training = model.training
    model.eval()
    try:
        outs = generate(model, tokenizer, list(cfg.samples),
                        DecodingConfig(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=cfg.seed))
    finally:
        model.train(was_training)
    rows = [{"prompt": p, "completion": o[0]} for p, o in zip(cfg.samples, outs, strict=True)]
    atomic_write_text(run.file("samples.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def print_summary(result: dict[str, Any], run: RunDir) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    table = Table(title=f"pretraining {run.path}")
    for col in ("steps", "train loss", "val loss", "val ppl", "tokens/s"):
        table.add_column(col, justify="right")
    table.add_row(str(result["steps"]), num(result.get("train_loss"), ".4f"), num(result.get("val_loss"), ".4f"),
                  num(result.get("val_ppl"), ".2f"), num(result.get("tokens_per_s"), ",.0f"))
    console = Console(quiet=False)
    console.print(table)
    console.print(f"model: {run.final_dir}")


# -- the stage -----------------------------------------------------------------------------------------
def run(cfg: PretrainConfig, *, resume: bool = False, force: bool = False) -> RunResult:
    """Pretrain `cfg.model` on `cfg.data`; returns the run folder and its final metrics."""
    from lmlab.devices import is_main_process, main_process_first
    from lmlab.models import count_parameters, human
    from lmlab.train.steps import STEPS
    from lmlab.train.trainer import Trainer

    cfg, rundir, finished = open_stage("pt", cfg, resume=resume, force=force)
    if finished is not None:
        return finished

    train_texts, val_texts = load_split_texts(cfg)
    with main_process_first():  # one process trains the tokenizer and writes the token caches
        model, tokenizer, kind = get_model(cfg, train_texts, rundir)
    check_length(model, cfg.max_length)
    trainable, total = count_parameters(model)
    log(f"pt {cfg.model}: {human(total)} parameters ({human(trainable)} trainable), vocab {len(tokenizer)}")
    if kind == "seq2seq":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        train_text, val_text = split_text_pairs(cfg)
        train_pairs = encode_pairs(train_text, tokenizer, cfg.max_length)
        val_pairs = encode_pairs(val_text, tokenizer, cfg.max_length)
        log(f"data {cfg.data}: {len(train_pairs)} train / {len(val_pairs)} held-out (source, target) pairs")
        train_src = PairBatches(train_pairs, cfg.batch_size, pad, cfg.seed)
        eval_src = PairBatches(val_pairs, cfg.batch_size, pad, cfg.seed, shuffle=False) if val_pairs else None
    else:
        with main_process_first():
            train_src, eval_src = lm_sources(cfg, tokenizer, train_texts, val_texts)
    step = STEPS["seq2seq" if kind == "seq2seq" else "lm"]  # the step table is the dispatch
    trainer = Trainer(model, step, train_src, cfg, rundir, eval_source=eval_src, tokenizer=tokenizer)
    result = trainer.fit(resume=resume)
    samples = write_samples(trainer.raw, tokenizer, cfg, rundir) if is_main_process() else []
    result = {**result, "total_params": total, "vocab_size": len(tokenizer), "train_texts": len(train_texts),
              "batches_per_epoch": len(train_src), "samples": samples}
    rundir.finish(result)
    if is_main_process():
        print_summary(result, rundir)
    return RunResult(rundir.path, result)
