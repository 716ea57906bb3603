"""`lmlab eval compare`: model A vs model B on the same prompts, judged by the gold judge or a reward model.

    lmlab eval compare model=runs/quickstart/pt,runs/quickstart/sft prompts=storyworld/instruct n=48 judge=gold
    lmlab eval compare model=base,tuned prompts=prompts.txt judge=gold,runs/rm data=storyworld/pretrain temperature=0.7

This is the before/after table of fine-tuning. Both models answer the same N prompts (rendered
with each model's chat template, same decoding settings and seed); every answer is scored by each
judge (`gold`: the storyworld judge; a folder: a reward model). Reported per judge:

- mean reward per model, and the win rate of each model over the first (the baseline): the
  fraction of prompts where it scores higher, a tie counting one half (so two identical models
  score exactly 0.5);
- a paired t-test on per-prompt reward differences (scipy.stats.ttest_rel: the same prompt is
  answered by both, so pairing removes prompt difficulty from the noise) and Welch's t-test on the
  two distributions (ttest_ind, equal_var=False) for comparison;
- with the gold judge, the constraint rate: the mean fraction of the prompt's constraints
  (character, place, object, ending ...) that the answer satisfies.

Also: length (words) and Flesch–Kincaid grade of the answers, a per-text perplexity table of
each model on `data` texts when given (scored with `eval.perplexity.score_texts`), side-by-side
samples (samples.md), reward histograms. Writes out/metrics.json, samples.md, samples.jsonl, PNGs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.config import opt
from lmlab.errors import ConfigError, DataError
from lmlab.eval.reward_analysis import Scorer, fk_grade, prompt_text, welch, word_count


@dataclass
class CompareConfig:
    """`lmlab eval compare`: generate with two (or more) models on the same prompts and judge the answers."""

    model: str = opt(help="models, comma separated; the first is the baseline the others are compared with")
    prompts: str = opt("storyworld/instruct", "prompts: a named set or file of chats/prompts, or a .txt file (one prompt a line)")
    split: str | None = opt(None, "split of a named prompt set; default: its validation (or test) split")
    n: int = opt(50, "number of prompts")
    judge: str = opt("gold", "judge(s), comma separated: gold (storyworld judge) and/or reward-model folders")
    data: str | None = opt(None, "texts for a per-text perplexity table of each model (optional)")
    data_limit: int = opt(20, "texts of `data` to score")
    out: str | None = opt(None, "folder for metrics.json, samples.md, PNGs; default runs/compare")
    template: str = opt("auto", "chat template used to render prompts (each model's own by default)")
    system: str | None = opt(None, "system prompt added to every prompt")
    # decoding (same for every model)
    max_new_tokens: int = opt(128, "tokens generated per answer")
    temperature: float = opt(0.0, "sampling temperature; 0 = greedy")
    top_k: int = opt(0, "sample only among the k most likely tokens (0 = off)")
    top_p: float = opt(1.0, "nucleus sampling: smallest set of tokens with this much probability (1 = off)")
    repetition_penalty: float = opt(1.0, "> 1 discourages repeating tokens (Keskar et al. 2019)")
    beams: int = opt(1, "beam search width (1 = no beam search)")
    seed: int = opt(0, "sampling seed (the same for every model)")
    batch_size: int = opt(8, "prompts per generate / score call")
    max_length: int = opt(512, "tokens per prompt + answer given to a reward-model judge")
    device: str = opt("auto", "auto, cpu, cuda, mps")

    def validate(self) -> list[str]:
        problems = []
        if len([m for m in self.model.split(",") if m.strip()]) < 2:
            problems.append(f"model={self.model!r}: give at least two models, comma separated (model=BASE,TUNED)")
        if self.n < 2:
            problems.append(f"n must be >= 2 (a paired test needs two prompts), got {self.n}")
        if not [j for j in self.judge.split(",") if j.strip()]:
            problems.append("judge is empty; use judge=gold or a reward-model folder")
        return problems


# -- statistics (pure) -------------------------------------------------------------------------

def win_rate(base: Sequence[float], other: Sequence[float]) -> float:
    """Fraction of prompts where `other` scores higher than `base`; ties count one half."""
    a, b = np.asarray(base, float), np.asarray(other, float)
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need equally many scores, got {len(a)} and {len(b)}")
    return float(np.mean((b > a) + 0.5 * (b == a)))


def paired_t(base: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of other − base (scipy.stats.ttest_rel); NaN when every difference is equal."""
    from scipy.stats import ttest_rel

    d = np.asarray(other, float) - np.asarray(base, float)
    if len(d) < 2 or np.ptp(d) == 0:
        return float("nan"), float("nan")
    res = ttest_rel(np.asarray(other, float), np.asarray(base, float))
    return float(res.statistic), float(res.pvalue)


def judge_summary(scores: dict[str, Sequence[float]]) -> dict[str, Any]:
    """Per-model mean/std and, for every model after the first, win rate and tests against the first."""
    labels = list(scores)
    base = labels[0]
    out: dict[str, Any] = {"models": {}}
    for label in labels:
        arr = np.asarray(scores[label], float)
        row: dict[str, Any] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}
        if label != base:
            t, p = paired_t(scores[base], arr)
            wt, wp = welch(arr, scores[base])
            row.update({"win_rate": win_rate(scores[base], arr), "mean_diff": float((arr - np.asarray(scores[base], float)).mean()),
                        "paired_t": t, "paired_p": p, "welch_t": wt, "welch_p": wp})
        out["models"][label] = row
    return out


def text_summary(answers: dict[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Mean words and Flesch–Kincaid grade of each model's answers."""
    return {label: {"words": float(np.mean([word_count(t) for t in texts])) if texts else float("nan"),
                    "fk_grade": fk_grade(texts)} for label, texts in answers.items()}


def summarize(prompts: Sequence[Any], answers: dict[str, list[str]], judges: dict[str, Scorer]) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """Score every model's answers with every judge; returns (metrics, scores[judge][model])."""
    scores = {name: {label: list(map(float, scorer(list(prompts), texts))) for label, texts in answers.items()}
              for name, scorer in judges.items()}
    metrics: dict[str, Any] = {"prompts": len(prompts), "baseline": next(iter(answers)),
                               "judges": {name: judge_summary(s) for name, s in scores.items()},
                               "text": text_summary(answers)}
    return metrics, scores


def constraint_rates(prompts: Sequence[Any], answers: dict[str, list[str]]) -> dict[str, float]:
    """Mean fraction of the prompt's constraints the answer satisfies (storyworld gold judge)."""
    from lmlab.data.storyworld import judge

    out = {}
    for label, texts in answers.items():
        rates = [judge(prompt_text(p), t).constraint_rate for p, t in zip(prompts, texts, strict=True)]
        rates = [r for r in rates if r is not None and np.isfinite(r)]
        out[label] = float(np.mean(rates)) if rates else float("nan")
    return out


def samples_markdown(prompts: Sequence[Any], answers: dict[str, list[str]], scores: dict[str, dict[str, list[float]]],
                     limit: int = 50) -> str:
    """A side-by-side table: prompt, each model's answer with its scores."""
    def cell(text: str) -> str:
        return text.strip().replace("|", "\\|").replace("\n", "<br>") or "(empty)"

    labels = list(answers)
    head = ["#", "prompt", *labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, p in enumerate(list(prompts)[:limit]):
        cells = [str(i + 1), cell(prompt_text(p))]
        for label in labels:
            tags = ", ".join(f"{j}={s[label][i]:.3g}" for j, s in scores.items())
            cells.append(cell(answers[label][i]) + (f"<br>*{tags}*" if tags else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline_table(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One row per model of the numbers a reader wants first (the report shows this table)."""
    table: dict[str, dict[str, float]] = {label: {} for label in metrics["text"]}
    for name, summary in metrics["judges"].items():
        for label, row in summary["models"].items():
            table[label][f"{name}_mean"] = row["mean"]
            if "win_rate" in row:
                table[label][f"{name}_win_rate"] = row["win_rate"]
    for label in table:
        if "constraint_rate" in metrics:
            table[label]["constraint_rate"] = metrics["constraint_rate"][label]
        table[label].update(metrics["text"][label])
        if "ppl" in metrics:
            table[label]["ppl"] = metrics["ppl"]["corpus"][label]["ppl"]
    return table


# -- inputs ------------------------------------------------------------------------------------

def load_prompts(spec: str, split: str | None, n: int) -> list[Any]:
    """Prompts as message lists (chats without their last reply) or plain strings (.txt lines)."""
    from lmlab.data.loaders import heldout_split, load_records

    path = Path(spec)
    if path.suffix == ".txt" and path.exists():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise DataError(f"{spec}: no prompts (one prompt a line)")
        return lines[:n]
    split = split or heldout_split(spec)
    try:
        records = load_records(spec, "chat", split=split, limit=n)
        prompts = []
        for rec in records:
            msgs = list(rec.messages)
            while msgs and msgs[-1].role == "assistant":
                msgs.pop()
            if msgs:
                prompts.append(msgs)
        if prompts:
            return prompts
    except DataError:
        pass
    return [rec.prompt for rec in load_records(spec, "preference", split=split, limit=n)]


def make_judges(cfg: CompareConfig) -> dict[str, Scorer]:
    from lmlab.eval.common import model_labels, split_list
    from lmlab.eval.reward_analysis import load_scorer

    specs = split_list(cfg.judge)
    names = ["gold" if s == "gold" else label for s, label in zip(specs, model_labels(specs), strict=True)]
    return {name: load_scorer(spec, batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device)
            for name, spec in zip(names, specs, strict=True)}


def answer_prompts(spec: str, prompts: Sequence[Any], decoding: Any, *, template: str, system: str | None,
                   device: str, batch_size: int) -> list[list[str]]:
    """`decoding.n` answers to each prompt from model `spec`, prompts rendered with its chat template.

    The model lives only inside this call, so a judge loaded afterwards does not share memory with it.
    """
    from lmlab.data.chat import render_prompt
    from lmlab.eval.common import load
    from lmlab.generate import generate

    model, tokenizer = load(spec, device=device)
    texts = [render_prompt(tokenizer, p, template=template, system=system) for p in prompts]
    return generate(model, tokenizer, texts, decoding, batch_size=batch_size)


def generate_answers(spec: str, prompts: Sequence[Any], cfg: CompareConfig) -> list[str]:
    from lmlab.generate import DecodingConfig

    decoding = DecodingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty, beams=cfg.beams, seed=cfg.seed)
    outs = answer_prompts(spec, prompts, decoding, template=cfg.template, system=cfg.system, device=cfg.device,
                          batch_size=cfg.batch_size)
    return [o[0] for o in outs]


def ppl_table(specs: Sequence[str], labels: Sequence[str], cfg: CompareConfig) -> dict[str, Any]:
    """Corpus and per-text perplexity of each model on the `data` texts."""
    from lmlab.data.loaders import heldout_split, load_texts
    from lmlab.eval.common import load
    from lmlab.eval.perplexity import context_length, corpus_stats, score_texts

    texts = load_texts(cfg.data, split=heldout_split(cfg.data), limit=cfg.data_limit)
    per_text: dict[str, list[float]] = {}
    corpus: dict[str, Any] = {}
    for spec, label in zip(specs, labels, strict=True):
        model, tokenizer = load(spec, device=cfg.device)
        ctx = context_length(model)
        scores = score_texts(model, tokenizer, texts, max_length=ctx, stride=max(1, ctx // 2))
        per_text[label] = [s.ppl for s in scores]
        corpus[label] = corpus_stats(scores)
    return {"data": cfg.data, "corpus": corpus, "texts": [t[:80] for t in texts], "per_text": per_text}


# -- the command -------------------------------------------------------------------------------

def write_outputs(out: Path, metrics: dict[str, Any], prompts: Sequence[Any], answers: dict[str, list[str]],
                  scores: dict[str, dict[str, list[float]]]) -> None:
    import json

    from lmlab.plots import bars, histograms
    from lmlab.runs import atomic_write_json, atomic_write_text

    labels = list(answers)
    md = samples_markdown(prompts, answers, scores)
    ppl = metrics.get("ppl")
    if ppl:
        head = ["text", *labels]
        rows = [[t.replace("|", "\\|"), *(f"{ppl['per_text'][lb][i]:.4g}" for lb in labels)] for i, t in enumerate(ppl["texts"])]
        md += "\n## Perplexity per text\n\n" + "| " + " | ".join(head) + " |\n" + "|" + "---|" * len(head) + "\n"
        md += "".join("| " + " | ".join(r) + " |\n" for r in rows)
    atomic_write_text(out / "samples.md", md)
    rows = [{"prompt": prompt_text(p), **{f"answer_{lb}": answers[lb][i] for lb in labels},
             **{f"{j}_{lb}": s[lb][i] for j, s in scores.items() for lb in labels}} for i, p in enumerate(prompts)]
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_json(out / "metrics.json", metrics)
    for name, s in scores.items():
        base = labels[0]
        for other in labels[1:]:
            suffix = "" if len(labels) == 2 else f"_{other}"
            histograms(s[base], s[other], out / f"reward_{name}{suffix}.png", labels=(base, other),
                       title=f"{name} reward: {base} vs {other}", xlabel=f"{name} reward")
    table = {name: {lb: m["mean"] for lb, m in summary["models"].items()} for name, summary in metrics["judges"].items()}
    bars(table, out / "mean_reward.png", title="Mean reward per judge", ylabel="mean reward")


def run(cfg: CompareConfig) -> dict[str, Any]:
    """Generate with each model, judge the answers, write metrics.json, samples.md and plots to cfg.out."""
    from lmlab.eval.common import model_labels, split_list
    from lmlab.progress import log

    specs = split_list(cfg.model)
    labels = model_labels(specs)
    out = Path(cfg.out or "runs/compare")
    prompts = load_prompts(cfg.prompts, cfg.split, cfg.n)
    if len(prompts) < 2:
        raise ConfigError(f"prompts={cfg.prompts}: {len(prompts)} prompt(s); need at least 2")
    judges = make_judges(cfg)
    answers: dict[str, list[str]] = {}
    for spec, label in zip(specs, labels, strict=True):
        log(f"eval compare: {label} answers {len(prompts)} prompts")
        answers[label] = generate_answers(spec, prompts, cfg)
    metrics, scores = summarize(prompts, answers, judges)
    if "gold" in judges:
        metrics["constraint_rate"] = constraint_rates(prompts, answers)
    if cfg.data:
        metrics["ppl"] = ppl_table(specs, labels, cfg)
    metrics.update({"models": dict(zip(labels, specs, strict=True)), "prompts_from": cfg.prompts})
    metrics["table"] = headline_table(metrics)
    write_outputs(out, metrics, prompts, answers, scores)
    print_summary(metrics)
    return metrics


def print_summary(metrics: dict[str, Any]) -> None:
    from lmlab.eval.common import print_table

    labels = list(metrics["text"])
    rows: list[list[Any]] = []
    for name, summary in metrics["judges"].items():
        rows.append([f"{name}: mean reward", *(summary["models"][lb]["mean"] for lb in labels)])
        rows.append([f"{name}: win rate vs {labels[0]}", "–", *(summary["models"][lb]["win_rate"] for lb in labels[1:])])
        rows.append([f"{name}: paired p", "–", *(summary["models"][lb]["paired_p"] for lb in labels[1:])])
    if "constraint_rate" in metrics:
        rows.append(["constraint rate", *(metrics["constraint_rate"][lb] for lb in labels)])
    rows.append(["words", *(metrics["text"][lb]["words"] for lb in labels)])
    rows.append(["FK grade", *(metrics["text"][lb]["fk_grade"] for lb in labels)])
    if "ppl" in metrics:
        rows.append([f"ppl on {metrics['ppl']['data']}", *(metrics["ppl"]["corpus"][lb]["ppl"] for lb in labels)])
    print_table(f"compare on {metrics['prompts']} prompts", ["", *labels], rows)
