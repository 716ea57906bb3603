"""Reference-based and diversity metrics of generated text: BLEU, ROUGE, distinct-n, repetition.

    lmlab eval gen refs=refs.txt hyps=hyps.txt out=runs/x/gen          # one text per line, aligned
    lmlab eval gen model=runs/quickstart/sft prompts=storyworld/instruct limit=50 temperature=0

BLEU is sacrebleu's (Post 2018), so scores are comparable across papers: the corpus score and the
mean sentence score (effective order, exp smoothing), 0–100. ROUGE-1/2/L are rouge-score's F1,
0–1. rouge-score's own tokenizer drops every non-ASCII character, so Chinese (or Japanese/Korean)
text is scored on characters instead (detected from the references, or `lang=zh`), and BLEU uses
sacrebleu's `zh` tokenizer. distinct-n (Li et al. 2016, "A Diversity-Promoting Objective", sec. 4.2)
is distinct n-grams over all n-grams of all hypotheses; repetition is seq-rep-4 (Welleck et al.
2019, "Neural Text Degeneration with Unlikelihood Training", sec. 5): per hypothesis 1 - distinct
4-grams / 4-grams, averaged. Exact match compares lower-cased texts without punctuation.
"""
from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.config import fixed, opt
from lmlab.decoding import DecodingConfig
from lmlab.errors import ConfigError, DataError

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|\w+|[^\w\s]")


@dataclass
class GenMetricsConfig(DecodingConfig):
    """`lmlab eval gen`: BLEU, ROUGE, distinct-n, repetition and length of hypotheses vs references."""

    refs: str | None = opt(None, "references, one per line (optional when prompts= is a dataset with responses)")
    hyps: str | None = opt(None, "hypotheses, one per line, aligned with refs")
    model: str | None = opt(None, "generate the hypotheses with this model (instead of hyps=)")
    prompts: str | None = opt(None, "prompts for model=: a text file (one per line), a chat / prompt-completion dataset (its responses become refs) or an SFT / seq2seq run folder (its own held-out split)")
    split: str = opt("test", "split of a named prompts dataset")
    columns: dict[str, str] = opt({}, "column mapping for the prompts dataset, e.g. {prompt: question, response: answer}")
    limit: int | None = opt(None, "score only the first N pairs")
    lang: Literal["auto", "en", "zh"] = opt("auto", "tokenisation: zh = characters (CJK); auto = zh when most reference characters are CJK")
    chat: bool | None = opt(None, "wrap prompts in the model's chat template; default: yes for chat datasets, no for text files")
    # decoding for model=: DecodingConfig's keys with this command's defaults; one hypothesis per prompt
    max_new_tokens: int = opt(128, "tokens to generate per prompt")
    temperature: float = opt(0.0, "sampling temperature; 0 = greedy")
    top_k: int = opt(0, "sample among the k most likely tokens (0 = off)")
    top_p: float = opt(1.0, "nucleus sampling: smallest set with this total probability (1 = off)")
    repetition_penalty: float = opt(1.0, "> 1 discourages repeating tokens (Keskar et al. 2019; 1 = off)")
    beams: int = opt(1, "beam search width (1 = none)")
    seed: int = opt(0, "sampling seed")
    n: int = fixed(1)
    stop: list[str] = fixed([])
    out: str | None = opt(None, "folder for metrics.json, samples.jsonl and table.md (none: print only)")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    def validate(self) -> list[str]:
        problems = []
        if self.hyps and self.model:
            problems.append("give either hyps= (a file) or model= with prompts=, not both")
        if not self.hyps and not self.model:
            problems.append("nothing to score: give hyps=FILE refs=FILE, or model=DIR prompts=FILE")
        if self.model and not self.prompts:
            problems.append("model= needs prompts= (a text file or a dataset) to generate from")
        if self.hyps and not self.refs:
            problems.append("hyps= needs refs= (one reference per line)")
        if self.model:  # the decoding keys matter only when generating
            problems += super().validate()
        return problems


# -- tokenisation ------------------------------------------------------------------------------

def is_cjk(texts: Sequence[str], threshold: float = 0.3) -> bool:
    """True when at least `threshold` of the non-space characters are CJK."""
    chars = [c for t in texts for c in t if not c.isspace()]
    return bool(chars) and sum(bool(CJK.match(c)) for c in chars) / len(chars) >= threshold


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks; each CJK character is one token."""
    return TOKEN.findall(text.lower())


class CharTokenizer:
    """rouge-score tokenizer for CJK text: characters, plus Latin words and numbers, no punctuation."""

    def tokenize(self, text: str) -> list[str]:
        return [t for t in tokens(text) if t[0].isalnum() or CJK.match(t)]


def normalize(text: str) -> str:
    """For exact match: lower case, no punctuation, single spaces."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(text.split())


# -- metrics -----------------------------------------------------------------------------------

def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the whole set of texts (Li et al. 2016)."""
    grams = [tuple(toks[i:i + n]) for toks in map(tokens, texts) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def seq_rep_n(text: str, n: int = 4) -> float | None:
    """1 - distinct n-grams / n-grams of one text (Welleck et al. 2019); None when it has none."""
    toks = tokens(text)
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else None


def bleu_scores(hyps: Sequence[str], refs: Sequence[str], zh: bool) -> tuple[float, list[float]]:
    """(corpus BLEU, sentence BLEU per pair), sacrebleu, 0–100."""
    from sacrebleu.metrics import BLEU

    tokenize = "zh" if zh else "13a"
    corpus = BLEU(tokenize=tokenize).corpus_score(list(hyps), [list(refs)]).score
    sentence = BLEU(tokenize=tokenize, effective_order=True)
    return corpus, [sentence.sentence_score(h, [r]).score for h, r in zip(hyps, refs, strict=True)]


def rouge_scores(hyps: Sequence[str], refs: Sequence[str], zh: bool) -> list[dict[str, float]]:
    """ROUGE-1/2/L F1 per pair (rouge-score; characters for CJK)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=not zh,
                                      tokenizer=CharTokenizer() if zh else None)
    return [{k: v.fmeasure for k, v in scorer.score(r, h).items()} for h, r in zip(hyps, refs, strict=True)]


def text_metrics(hyps: Sequence[str], refs: Sequence[str], *, lang: str = "auto") -> tuple[dict[str, Any], list[dict[str, float]]]:
    """All metrics of aligned hypotheses/references: (summary, per-pair scores)."""
    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} references; they must align one to one")
    if not hyps:
        raise DataError("no hypothesis/reference pairs to score")
    zh = lang == "zh" or (lang == "auto" and is_cjk(refs))
    corpus_bleu, sentence_bleu = bleu_scores(hyps, refs, zh)
    rouge = rouge_scores(hyps, refs, zh)
    reps = [r for r in (seq_rep_n(h) for h in hyps) if r is not None]
    hyp_len = [len(tokens(h)) for h in hyps]
    ref_len = [len(tokens(r)) for r in refs]
    summary = {
        "bleu": corpus_bleu,
        "rouge1": statistics.fmean(r["rouge1"] for r in rouge),
        "rouge2": statistics.fmean(r["rouge2"] for r in rouge),
        "rougeL": statistics.fmean(r["rougeL"] for r in rouge),
        "distinct_1": distinct_n(hyps, 1),
        "distinct_2": distinct_n(hyps, 2),
        "n": len(hyps),
        # a collapsed model writes one continuation whatever the prompt: distinct outputs / prompts says so
        "distinct_outputs": len({normalize(h) for h in hyps}),
        "distinct_outputs_ratio": len({normalize(h) for h in hyps}) / len(hyps),
        "same_output_for_every_prompt": len(hyps) > 1 and len({normalize(h) for h in hyps}) == 1,
        "sentence_bleu": statistics.fmean(sentence_bleu),
        "repetition_4": statistics.fmean(reps) if reps else 0.0,
        "exact_match": statistics.fmean(normalize(h) == normalize(r) for h, r in zip(hyps, refs, strict=True)),
        "hyp_len_mean": statistics.fmean(hyp_len),
        "hyp_len_std": statistics.pstdev(hyp_len),
        "ref_len_mean": statistics.fmean(ref_len),
        "len_ratio": sum(hyp_len) / sum(ref_len) if sum(ref_len) else float("nan"),
        "lang": "zh" if zh else "en",
    }
    per_pair = [{"bleu": b, **r} for b, r in zip(sentence_bleu, rouge, strict=True)]
    return summary, per_pair


# -- inputs ------------------------------------------------------------------------------------

def read_lines(path: str, what: str) -> list[str]:
    """One text per line (a final newline does not add an empty text; empty lines are kept)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{what}={path}: no such file (expected one text per line)")
    return file.read_text(encoding="utf-8").splitlines()


def _prompts(cfg: GenMetricsConfig) -> tuple[list[str], list[str] | None, bool]:
    """(prompts, references or None, whether they are chats)."""
    path = Path(str(cfg.prompts)).expanduser()
    if (path / "config.yaml").is_file():
        records = run_heldout(path)[: cfg.limit]
    elif path.suffix == ".txt" or (path.exists() and not path.suffix):
        return read_lines(str(path), "prompts")[: cfg.limit], None, False
    else:
        from lmlab.data.loaders import load_records

        records = load_records(str(cfg.prompts), "chat", columns=cfg.columns or None, split=cfg.split, limit=cfg.limit)
    prompts, refs = [], []
    for rec in records:
        if rec.messages[-1].role != "assistant":
            raise DataError(f"prompts={cfg.prompts}: a record does not end with a response to compare against")
        prompts.append(rec.messages[:-1])
        refs.append(rec.messages[-1].content)
    return prompts, refs, True  # type: ignore[return-value]


def run_heldout(run: Path) -> list[Any]:
    """`prompts=<a run folder>`: that run's own held-out examples (the split it validated on), as
    chats: an SFT run's held-out conversations, a seq2seq `train pt` run's held-out (source, target)."""
    import dataclasses

    import yaml

    from lmlab.config import build
    from lmlab.data.formats import ChatRecord, Message
    from lmlab.train.config import PretrainConfig, SFTConfig

    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    where = str(run / "config.yaml")
    if "train_on_prompt" in saved:
        from lmlab.train.sft import split_chat_records

        names = {f.name for f in dataclasses.fields(SFTConfig)}
        return split_chat_records(build(SFTConfig, {k: v for k, v in saved.items() if k in names}, where=where))[1]
    if str(saved.get("model", "")).startswith("seq2seq"):
        from lmlab.train.pretrain import split_text_pairs

        names = {f.name for f in dataclasses.fields(PretrainConfig)}
        pairs = split_text_pairs(build(PretrainConfig, {k: v for k, v in saved.items() if k in names}, where=where))[1]
        return [ChatRecord([Message("user", s), Message("assistant", t)]) for s, t in pairs]
    raise ConfigError(f"prompts={run}: not an SFT or seq2seq run folder, so it has no held-out examples with "
                      "references; give a dataset or a prompts file")


def _generate(cfg: GenMetricsConfig, prompts: list[Any], is_chat: bool) -> tuple[list[str], list[str]]:
    """(prompt texts as given to the model, one generated text per prompt)."""
    from lmlab.data.chat import render_prompt
    from lmlab.eval.common import load
    from lmlab.generate import decoding_of, generate

    model, tokenizer = load(str(cfg.model), device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    use_chat = is_chat if cfg.chat is None else cfg.chat
    if use_chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"chat=true but {cfg.model}'s tokenizer has no chat template; use chat=false")
    texts = []
    for p in prompts:
        if use_chat:
            texts.append(render_prompt(tokenizer, p))
        else:
            texts.append("\n".join(m.content for m in p) if is_chat else p)
    return texts, [outs[0].strip() for outs in generate(model, tokenizer, texts, decoding_of(cfg))]


def run(cfg: GenMetricsConfig) -> dict[str, Any]:
    """Score (or generate, then score) hypotheses; print the table; write metrics.json and samples."""
    from lmlab.eval.common import print_table

    prompts: list[str] | None = None
    if cfg.model:
        raw, dataset_refs, is_chat = _prompts(cfg)
        if cfg.refs:
            refs = read_lines(cfg.refs, "refs")[: len(raw)]
        elif dataset_refs is not None:
            refs = dataset_refs
        else:
            raise ConfigError(f"prompts={cfg.prompts} is a text file: give refs=FILE with one reference per prompt")
        if len(refs) != len(raw):
            raise DataError(f"refs={cfg.refs} has {len(refs)} lines but prompts={cfg.prompts} has {len(raw)}")
        prompts, hyps = _generate(cfg, raw, is_chat)
    else:
        hyps, refs = read_lines(str(cfg.hyps), "hyps"), read_lines(str(cfg.refs), "refs")
        if len(hyps) != len(refs):
            raise DataError(f"hyps={cfg.hyps} has {len(hyps)} lines but refs={cfg.refs} has {len(refs)}; "
                            "they must align one to one (one text per line)")
        hyps, refs = hyps[: cfg.limit], refs[: cfg.limit]
    summary, per_pair = text_metrics(hyps, refs, lang=cfg.lang)
    if summary["same_output_for_every_prompt"]:
        from lmlab.progress import log

        log(f"[bold red]warning[/bold red]: the same output for all {summary['n']} prompts: {hyps[0][:80]!r} "
            "(a collapsed model or decoding; try repetition_penalty, sampling or more training)")
    rows = [[k, v] for k, v in summary.items()]
    markdown = print_table(f"Text metrics ({summary['n']} pairs, {summary['lang']})", ["metric", "value"], rows)
    if cfg.out:
        from lmlab.runs import atomic_write_json, atomic_write_text

        folder = Path(cfg.out)
        atomic_write_json(folder / "metrics.json", summary)
        atomic_write_text(folder / "table.md", markdown)
        lines = []
        for i, (h, r, s) in enumerate(zip(hyps, refs, per_pair, strict=True)):
            row = {"prompt": prompts[i]} if prompts else {}
            lines.append(json.dumps({**row, "hyp": h, "ref": r, **s}, ensure_ascii=False))
        atomic_write_text(folder / "samples.jsonl", "\n".join(lines) + "\n")
    return summary
