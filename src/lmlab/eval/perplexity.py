"""Perplexity and bits per byte of language models on texts, files and domains.

    lmlab eval ppl model=runs/quickstart/pt,runs/quickstart/sft data=storyworld/pretrain split=test limit=200
    lmlab eval ppl model=runs/x data=storyworld/pretrain,tinystories,wikitext-2,ptb out=runs/x/ppl

Perplexity is exp(total NLL / total scored tokens) over the whole corpus (token-weighted), the
number papers report; the mean of per-text perplexities is given too, because it weights a short
text like a long one and so answers a different question. Texts longer than the context are
scored with overlapping sliding windows (Hugging Face, "Perplexity of fixed-length models"):
every token is scored exactly once, with at least `max_length - stride` tokens of context.

Perplexity depends on the tokenizer (a 300-token vocabulary makes each prediction easier), so
models with different tokenizers are compared by bits per byte: total NLL in bits over the UTF-8
bytes of the scored text, vocabulary-independent (nanochat `loss_eval.evaluate_bpb`).
Encoder-decoder models are scored on targets given sources (`data` of prompt/response records).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lmlab.config import opt
from lmlab.eval.common import load, model_labels, print_table, split_list
from lmlab.progress import log, progress_bar


@dataclass
class PerplexityConfig:
    """`lmlab eval ppl`: corpus and per-text perplexity, bits per byte, one column per model."""

    model: str = opt(help="model(s) to score, comma separated: run folders, model folders or hub ids")
    data: str = opt("storyworld/pretrain", "text set(s), comma separated: named sets, files or hub ids; several = one row each; NAME@SPLIT picks a set's split")
    split: str = opt("test", "split of named sets without @SPLIT (train, validation, test)")
    limit: int | None = opt(None, "score only the first N texts of each set")
    columns: dict[str, str] = opt({}, "column mapping for tabular data, e.g. {text: story}")
    text_unit: str | None = opt(None, "how .txt files split into texts: paragraph (blank-line separated), line (one sentence a line = one row each) or file; default: the set's own (paragraph for files)")
    clean: dict[str, Any] = opt({}, "cleaning before scoring (data/clean.py), e.g. {drop_headings: true} for WikiText's '= Title =' lines, {min_chars: 20}")
    max_length: int | None = opt(None, "tokens per window; default min(model context, 1024, the run's training max_length)")
    stride: int | None = opt(None, "new tokens scored per window for long texts (< max_length); default max_length/2. Smaller = more context per token, slower")
    batch_size: int = opt(4, "windows per forward pass")
    add_bos: bool | None = opt(None, "prepend the BOS (else EOS) token so the first token is scored too; default: when the tokenizer has one")
    concat: bool = opt(False, "join each set's texts with newlines and score one long stream (the usual WikiText/PTB protocol)")
    group_by: Literal["auto", "text", "file"] = opt("auto", "table rows: one per text, or one per data set (auto: per set when several sets)")
    max_rows: int = opt(40, "print at most this many per-text rows (all are in metrics.json)")
    out: str | None = opt(None, "folder for metrics.json, table.md and ppl.png (none: print only)")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    def validate(self) -> list[str]:
        from lmlab.data.loaders import TEXT_UNITS

        problems = []
        if self.text_unit is not None and self.text_unit not in TEXT_UNITS:
            problems.append(f"text_unit must be one of {', '.join(TEXT_UNITS)}, got '{self.text_unit}'")
        if self.clean:
            from lmlab.data.clean import as_clean_config
            from lmlab.errors import ConfigError

            try:
                as_clean_config(self.clean)
            except ConfigError as exc:
                problems.append(str(exc))
        if not split_list(self.model):
            problems.append("model is empty; give one or more models, e.g. model=runs/quickstart/pt")
        if not split_list(self.data):
            problems.append("data is empty; give a set, e.g. data=storyworld/pretrain")
        if self.max_length is not None and self.max_length < 2:
            problems.append(f"max_length must be >= 2, got {self.max_length}")
        if self.stride is not None and self.stride < 1:
            problems.append(f"stride must be >= 1, got {self.stride}")
        if self.stride is not None and self.max_length is not None and self.stride >= self.max_length:
            problems.append(f"stride ({self.stride}) must be < max_length ({self.max_length}); "
                            f"stride={self.max_length - 1} gives disjoint windows")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        return problems


@dataclass
class TextScore:
    """Summed NLL (nats) of one text's scored tokens, their number and their UTF-8 bytes."""

    nll: float
    tokens: int
    bytes: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


def corpus_stats(scores: Sequence[TextScore]) -> dict[str, float]:
    """Token-weighted perplexity, bits per byte and the (unweighted) mean of per-text perplexity."""
    nll = sum(s.nll for s in scores)
    tokens = sum(s.tokens for s in scores)
    nbytes = sum(s.bytes for s in scores)
    per_text = [s.ppl for s in scores if s.tokens]
    return {
        "ppl": math.exp(nll / tokens) if tokens else float("nan"),
        "bpb": nll / (math.log(2) * nbytes) if nbytes else float("nan"),
        "nll": nll,
        "tokens": tokens,
        "bytes": nbytes,
        "texts": len(per_text),
        "mean_text_ppl": sum(per_text) / len(per_text) if per_text else float("nan"),
    }


def windows(n_ids: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over a sequence of `n_ids` tokens: `(begin, end, n_scored)`.

    Tokens 1..n_ids-1 are each scored once (token 0 has no context). Windows start every
    `stride` tokens, as in the HF guide; each scores the tokens the previous one did not reach, the
    last `n_scored` of `ids[begin:end]`, which see at least `max_length - stride` tokens before them.
    """
    if n_ids < 2:
        return []
    assert 1 <= stride < max_length, (stride, max_length)
    out, prev_end = [], 0
    for begin in range(0, n_ids, stride):
        end = min(begin + max_length, n_ids)
        out.append((begin, end, end - max(prev_end, 1)))
        prev_end = end
        if end == n_ids:
            break
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def tail_nll(model: torch.nn.Module, seqs: Sequence[Sequence[int]], n_tail: Sequence[int], *,
             batch_size: int = 8, pad_id: int = 0, desc: str | None = None) -> list[float]:
    """Summed NLL (nats) of the last `n_tail[i]` tokens of each sequence, given the tokens before.

    The one scoring primitive of perplexity and of multiple-choice benchmarks (the
    log-likelihood of a continuation is minus this). Sequences are sorted by length and
    right-padded, so batching changes no number (each row attends only to its own tokens).
    """
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    device = _device(model)
    with progress_bar(len(order), desc or "scoring") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(idx), width), dtype=torch.long)  # (B, T)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = torch.as_tensor(seqs[i], dtype=torch.long)
                mask[row, : len(seqs[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
            for row, i in enumerate(idx):
                length, n = len(seqs[i]), n_tail[i]
                assert 1 <= n < length, f"cannot score {n} of {length} tokens"
                pred = logits[row, length - n - 1 : length - 1].float()  # (n, V): position t predicts t+1
                out[i] = F.cross_entropy(pred, ids[row, length - n : length], reduction="sum").item()
            bar.update(len(idx))
    return out


def bos_id(tokenizer: Any) -> int | None:
    """The token that starts a document: BOS, else EOS (GPT-2 and Qwen separate documents with it)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def score_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int, stride: int,
                batch_size: int = 4, add_bos: bool | None = None, desc: str | None = None) -> list[TextScore]:
    """Score each text with a causal LM (sliding windows when longer than `max_length`).

    With a BOS prefix every token of the text is scored and the bytes are the whole text's; without,
    the first token is unscored and its bytes are left out of bits per byte.
    """
    start = bos_id(tokenizer)
    use_bos = (start is not None) if add_bos is None else add_bos
    if use_bos and start is None:
        from lmlab.errors import ConfigError

        raise ConfigError("add_bos=true but the tokenizer has neither a BOS nor an EOS token; use add_bos=false")
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    seqs: list[list[int]] = []
    tails: list[int] = []
    owner: list[int] = []
    scores: list[TextScore] = []
    for i, (text, enc) in enumerate(zip(texts, encoded, strict=True)):
        ids = ([start] if use_bos else []) + list(enc)
        nbytes = len(text.encode("utf-8"))
        if not use_bos and enc:
            nbytes -= len(tokenizer.decode(enc[:1]).encode("utf-8"))
        scores.append(TextScore(0.0, max(0, len(ids) - 1), nbytes if len(ids) > 1 else 0))
        for begin, end, n in windows(len(ids), max_length, stride):
            seqs.append(ids[begin:end])
            tails.append(n)
            owner.append(i)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i, nll in zip(owner, tail_nll(model, seqs, tails, batch_size=batch_size, pad_id=pad, desc=desc), strict=True):
        scores[i].nll += nll
    return scores


@torch.no_grad()
def score_pairs(model: torch.nn.Module, tokenizer: Any, sources: Sequence[str], targets: Sequence[str], *,
                max_length: int, batch_size: int = 4) -> list[TextScore]:
    """Score each target given its source with an encoder-decoder model (teacher forcing)."""
    device = _device(model)
    scores: list[TextScore] = []
    for start in range(0, len(sources), batch_size):
        src = tokenizer(list(sources[start:start + batch_size]), truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        tgt = tokenizer(text_target=list(targets[start:start + batch_size]), truncation=True,
                        max_length=max_length, padding=True, return_tensors="pt")
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)  # (B, T)
        logits = model(input_ids=src["input_ids"].to(device), attention_mask=src["attention_mask"].to(device),
                       labels=labels.to(device)).logits  # (B, T, V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), labels.to(device), reduction="none")  # (B, T)
        for row, text in enumerate(targets[start:start + batch_size]):
            scores.append(TextScore(nll[row].sum().item(), int((labels[row] != -100).sum()), len(text.encode("utf-8"))))
    return scores


def context_length(model: torch.nn.Module, cap: int = 1024) -> int:
    """The model's context (max positions), capped so CPU runs stay quick; `cap` for RNNs."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 1:
            return min(value, cap)
    return cap


def trained_length(spec: str) -> int | None:
    """The block length a run folder's model was trained on (its config.yaml `max_length`).

    A from-scratch model never saw positions past it, even when its config allows more; windows
    longer than that would score tokens at untrained positions.
    """
    import yaml

    path = Path(spec)
    run = path.parent if path.name == "final" else path
    try:
        value = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")).get("max_length")
    except (OSError, AttributeError, yaml.YAMLError):
        return None
    return value if isinstance(value, int) and value > 1 else None


def _set_name(spec: str) -> str:
    path = Path(spec)
    return path.stem if path.suffix and path.exists() else spec


def _load_sets(cfg: PerplexityConfig, kind: str) -> dict[str, list[Any]]:
    """{set name: texts} (causal LMs) or {set name: [(source, target)]} (seq2seq)."""
    from lmlab.data.loaders import load_records, load_texts, split_spec

    sets: dict[str, list[Any]] = {}
    for item in split_list(cfg.data):
        spec, split = split_spec(item, cfg.split)
        if kind == "seq2seq":
            records = load_records(spec, "chat", columns=cfg.columns or None, split=split, limit=cfg.limit,
                                   clean=cfg.clean or None, text_unit=cfg.text_unit)
            pairs = []
            for rec in records:
                prompt = "\n".join(m.content for m in rec.messages[:-1] if m.role != "system")
                pairs.append((prompt, rec.messages[-1].content))
            sets[_set_name(spec)] = pairs
        else:
            texts = [t for t in load_texts(spec, columns=cfg.columns or None, split=split, limit=cfg.limit,
                                           clean=cfg.clean or None, text_unit=cfg.text_unit) if t.strip()]
            if len(texts) == 1 and texts[0].count("\n") >= 3 and not cfg.concat and cfg.text_unit is None:
                log(f"{spec}: read as ONE text of {texts[0].count(chr(10)) + 1} lines (no blank lines between "
                    "paragraphs); text_unit=line scores each line as its own text (one row each)")
            sets[_set_name(spec)] = ["\n".join(texts)] if cfg.concat else texts
    return sets


def _preview(text: Any, width: int = 48) -> str:
    text = text[1] if isinstance(text, tuple) else text
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run(cfg: PerplexityConfig) -> dict[str, Any]:
    """Score every model on every set; print the table; write metrics.json, table.md, ppl.png."""
    specs = split_list(cfg.model)
    labels = model_labels(specs)
    results: dict[str, Any] = {}
    sets: dict[str, list[Any]] = {}
    for spec, label in zip(specs, labels, strict=True):
        model, tokenizer = load(spec, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        kind = "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal-lm"
        sets = _load_sets(cfg, kind)  # per model: a seq2seq model reads (source, target) pairs, not texts
        max_length = cfg.max_length or min(context_length(model), trained_length(spec) or 1 << 30)
        stride = cfg.stride or max(1, max_length // 2)
        if stride >= max_length:
            stride = max_length - 1
        per_set: dict[str, list[TextScore]] = {}
        for name, items in sets.items():
            if kind == "seq2seq":
                per_set[name] = score_pairs(model, tokenizer, [s for s, _ in items], [t for _, t in items],
                                            max_length=max_length, batch_size=cfg.batch_size)
            else:
                per_set[name] = score_texts(model, tokenizer, items, max_length=max_length, stride=stride,
                                            batch_size=cfg.batch_size, add_bos=cfg.add_bos, desc=f"{label} · {name}")
        every = [s for scores in per_set.values() for s in scores]
        results[label] = {
            "model": spec,
            **corpus_stats(every),
            "max_length": max_length,
            "stride": stride,
            "per_set": {name: corpus_stats(scores) for name, scores in per_set.items()},
            "per_text": [{"set": name, "index": i, "ppl": s.ppl, "tokens": s.tokens, "bytes": s.bytes, "nll": s.nll}
                         for name, scores in per_set.items() for i, s in enumerate(scores)],
        }
        log(f"{label}: ppl {results[label]['ppl']:.4g}, bpb {results[label]['bpb']:.4g} over {results[label]['tokens']} tokens")
        del model
    markdown = _table(cfg, results, sets, labels)
    if cfg.out:
        _write(cfg.out, results, markdown, labels)
    return results


def _table(cfg: PerplexityConfig, results: dict[str, Any], sets: dict[str, list[Any]], labels: list[str]) -> str:
    by_file = cfg.group_by == "file" or (cfg.group_by == "auto" and len(sets) > 1)
    header = ["set" if by_file else "text"] + [f"{m} ppl" for m in labels] + [f"{m} bpb" for m in labels]
    rows: list[list[Any]] = []
    if by_file:
        for name in sets:
            rows.append([name] + [results[m]["per_set"][name]["ppl"] for m in labels]
                        + [results[m]["per_set"][name]["bpb"] for m in labels])
    else:
        per_text = {m: results[m]["per_text"] for m in labels}
        texts = [(name, i, item) for name, items in sets.items() for i, item in enumerate(items)]
        for k, (_, _, item) in enumerate(texts[: cfg.max_rows]):
            rows.append([_preview(item)] + [per_text[m][k]["ppl"] for m in labels]
                        + [_bpb(per_text[m][k]) for m in labels])
        if len(texts) > cfg.max_rows:
            rows.append([f"… {len(texts) - cfg.max_rows} more texts (metrics.json)"] + [None] * (2 * len(labels)))
        rows.append(["mean of per-text ppl"] + [results[m]["mean_text_ppl"] for m in labels] + [None] * len(labels))
    rows.append(["corpus (token-weighted)"] + [results[m]["ppl"] for m in labels] + [results[m]["bpb"] for m in labels])
    title = f"Perplexity ({', '.join(sets)})"
    return print_table(title, header, rows)


def _bpb(row: dict[str, Any]) -> float | None:
    return row["nll"] / (math.log(2) * row["bytes"]) if row["bytes"] else None


def _write(out: str, results: dict[str, Any], markdown: str, labels: list[str]) -> None:
    from lmlab.runs import atomic_write_json, atomic_write_text

    folder = Path(out)
    atomic_write_json(folder / "metrics.json", results)
    atomic_write_text(folder / "table.md", markdown)
    try:
        from lmlab.plots import bars
    except ImportError:  # plots.py belongs to the report module; the numbers matter more than the figure
        return
    set_names = list(next(iter(results.values()))["per_set"])
    if len(set_names) > 1:
        table = {name: {m: results[m]["per_set"][name]["ppl"] for m in labels} for name in set_names}
    else:
        table = {m: results[m]["ppl"] for m in labels}
    title = "Perplexity by data set (lower is better)" if len(set_names) > 1 else f"Perplexity on {set_names[0]} (lower is better)"
    bars(table, folder / "ppl.png", title=title, ylabel="perplexity")
