"""Zero/few-shot benchmarks: multiple choice by log-likelihood, GSM8K by greedy generation.

    LMLAB_DATA_DIR=/path/to/mirror lmlab eval bench model=runs/quickstart/pt tasks=mmlu,openbookqa limit=200
    lmlab eval bench model=runs/base,runs/sft tasks=arc_easy path=ARC-Easy-Test.jsonl shots=5 out=runs/bench

A multiple-choice item is answered by the choice whose continuation the model finds most likely:
`acc` takes the largest log P(choice | prompt), `acc_norm` the largest log-likelihood per
character of the choice (lm-evaluation-harness's `acc_norm`, which removes the bias toward short
answers). Few-shot demonstrations are the first `shots` solved items of the task's few-shot split
(MMLU: the subject's dev questions, as in the original MMLU protocol), separated by blank lines.
GSM8K is generative: greedy decoding, then the number after `####` (or else the last number in the
output) must equal the gold answer. Each task's chance level is printed beside it, because a small
model's 27% on MMLU is noise around 25%, not knowledge.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import closest, opt
from lmlab.errors import DataError
from lmlab.eval.common import load, model_labels, print_table, split_list
from lmlab.eval.tasks import TASKS, Example, Task, available_splits, load_examples, local_file
from lmlab.progress import log

Scorer = Callable[[list[tuple[str, str]]], list[float]]
Generator = Callable[[list[str]], list[str]]


@dataclass
class BenchConfig:
    """`lmlab eval bench`: accuracy on standard benchmarks, one column per model, chance beside each."""

    model: str = opt(help="model(s), comma separated: run folders, model folders or hub ids (A,B = before/after)")
    tasks: str = opt("mmlu,openbookqa", f"comma separated: {', '.join(TASKS)}, or all")
    split: str = opt("auto", "test, validation or train; auto = the task's usual eval split that is available locally")
    path: str | None = opt(None, "read the (single) task from this file or folder instead of the mirror/hub")
    limit: int | None = opt(None, "at most N items per task (MMLU: N in all, spread evenly over subjects)")
    shots: int = opt(0, "solved examples shown before each question (few-shot)")
    batch_size: int = opt(8, "sequences per forward pass")
    max_length: int | None = opt(None, "tokens per scored sequence (prompt is cut from the left); default the model's context, at most 2048")
    max_new_tokens: int = opt(256, "GSM8K: tokens generated per question")
    out: str | None = opt(None, "folder for metrics.json, table.md and gsm8k samples (none: print only)")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    def validate(self) -> list[str]:
        problems = []
        for name in split_list(self.tasks):
            if name != "all" and name not in TASKS:
                hint = closest(name, TASKS)
                problems.append(f"unknown task '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
                                + f" (tasks: {', '.join(TASKS)})")
        if self.path and len(self.task_names()) != 1:
            problems.append(f"path= reads one task's file; give exactly one task, got tasks={self.tasks}")
        if self.split not in ("auto", "test", "validation", "train"):
            hint = closest(self.split, ["test", "validation", "train", "dev"])
            problems.append(f"split must be auto, test, validation or train, got {self.split!r}"
                            + (f"; did you mean '{'validation' if hint == 'dev' else hint}'?" if hint else ""))
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.shots < 0:
            problems.append(f"shots must be >= 0, got {self.shots}")
        return problems

    def task_names(self) -> list[str]:
        names = split_list(self.tasks)
        return list(TASKS) if "all" in names else names


# -- scoring ------------------------------------------------------------------------------------

def loglikelihoods(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], *, batch_size: int = 8,
                   max_length: int = 2048) -> list[float]:
    """log P(continuation | context) for each (context, continuation), summed over its tokens.

    Tokenised as lm-evaluation-harness does: the pair is encoded whole and the continuation is
    what follows the context's tokens, with the context's trailing spaces moved to the
    continuation; a BOS (else EOS) token starts every sequence, and a too-long prompt loses its
    oldest tokens, never the continuation.
    """
    from lmlab.eval.perplexity import bos_id, tail_nll

    contexts, wholes = [], []
    for context, continuation in requests:
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        contexts.append(context)
        wholes.append(context + continuation)
    ctx_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(wholes, add_special_tokens=False)["input_ids"]
    start = bos_id(tokenizer)
    seqs, tails = [], []
    for (context, continuation), ctx, whole in zip(requests, ctx_ids, whole_ids, strict=True):
        n = len(whole) - len(ctx)
        if n < 1:
            raise DataError(f"empty continuation {continuation!r} after context {context[-40:]!r}")
        ids = ([start] if start is not None else []) + list(whole)
        ids = ids[-max_length:]
        seqs.append(ids)
        tails.append(min(n, len(ids) - 1))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [-x for x in tail_nll(model, seqs, tails, batch_size=batch_size, pad_id=pad, desc="log-likelihoods")]


NUMBER = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?")


def extract_number(text: str) -> str | None:
    """The answer in a GSM8K-style solution: the number after '####', else the last number.

    Text after a blank line or a new "Question:" is ignored: a model that runs on into an
    invented next question must not be graded on that question's numbers.
    """
    if "####" in text:
        found = NUMBER.findall(text.split("####", 1)[1])
        if found:
            return _clean_number(found[0])
    found = NUMBER.findall(re.split(r"\n\s*\n|Question:", text)[0])
    return _clean_number(found[-1]) if found else None


def _clean_number(raw: str) -> str:
    return raw.replace(",", "").replace("$", "").rstrip(".")


def same_number(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    try:
        return math.isclose(float(pred), float(gold.replace(",", "")), abs_tol=1e-6)
    except ValueError:
        return pred.strip() == gold.strip()


# -- evaluation ---------------------------------------------------------------------------------

def _prefix(ex: Example, demos: Sequence[Example]) -> str:
    return ex.header + "".join(d.demo() + "\n\n" for d in demos)


def evaluate_choice(examples: Sequence[Example], demos: Callable[[int], list[Example]], scorer: Scorer) -> list[dict[str, Any]]:
    """Per item: gold, prediction by log-likelihood (acc) and by log-likelihood per character (acc_norm)."""
    requests, owner = [], []
    for i, ex in enumerate(examples):
        prefix = _prefix(ex, demos(i))
        for context, continuation in zip(ex.contexts, ex.continuations, strict=True):
            requests.append((prefix + context, continuation))
            owner.append(i)
    lls = scorer(requests)
    per_item: list[list[float]] = [[] for _ in examples]
    for i, ll in zip(owner, lls, strict=True):
        per_item[i].append(ll)
    rows = []
    for ex, ll in zip(examples, per_item, strict=True):
        # lm-eval divides by the length of the choice text, without the space that joins it to the prompt
        norm = [v / max(1, len(c.lstrip(" "))) for v, c in zip(ll, ex.continuations, strict=True)]
        pred, pred_norm = max(range(len(ll)), key=ll.__getitem__), max(range(len(norm)), key=norm.__getitem__)
        rows.append({"label": ex.label, "pred": pred, "pred_norm": pred_norm, "loglik": ll, "subject": ex.subject,
                     "correct": pred == ex.label, "correct_norm": pred_norm == ex.label, "choices": len(ll)})
    return rows


def evaluate_generate(examples: Sequence[Example], demos: Callable[[int], list[Example]], generator: Generator) -> list[dict[str, Any]]:
    """Per item: the generation, the extracted number, the gold number, correct or not."""
    prompts = [_prefix(ex, demos(i)) + ex.contexts[0] for i, ex in enumerate(examples)]
    outputs = generator(prompts)
    rows = []
    for ex, prompt, output in zip(examples, prompts, outputs, strict=True):
        pred = extract_number(output)
        ok = same_number(pred, str(ex.answer))
        rows.append({"question": prompt[-300:], "output": output, "pred": pred, "gold": ex.answer,
                     "correct": ok, "correct_norm": ok, "choices": 0})
    return rows


def summarize(rows: Sequence[dict[str, Any]], kind: str, *, by_subject: bool = True) -> dict[str, Any]:
    """acc, acc_norm, n and chance (mean 1/choices); MMLU adds per-subject values and their macro mean."""
    n = len(rows)
    out: dict[str, Any] = {
        "acc": sum(r["correct"] for r in rows) / n,
        "acc_norm": sum(r["correct_norm"] for r in rows) / n if kind == "choice" else None,
        "n": n,
        "chance": sum(1 / r["choices"] for r in rows) / n if kind == "choice" else 0.0,
    }
    subjects = sorted({r["subject"] for r in rows if r.get("subject")})
    if subjects and by_subject:
        out["subjects"] = {s: summarize([r for r in rows if r.get("subject") == s], kind, by_subject=False)
                           for s in subjects}
        out["acc_macro"] = sum(v["acc"] for v in out["subjects"].values()) / len(subjects)
    return out


def spread_limit(examples: list[Example], limit: int | None) -> list[Example]:
    """The first `limit` items, taken round-robin over subjects so every subject is represented."""
    if limit is None or limit >= len(examples):
        return examples
    if not any(ex.subject for ex in examples):
        return examples[:limit]
    rank: dict[str | None, int] = {}
    keyed = []
    for i, ex in enumerate(examples):
        rank[ex.subject] = rank.get(ex.subject, -1) + 1
        keyed.append((rank[ex.subject], i))
    chosen = sorted(i for _, i in sorted(keyed)[:limit])
    return [examples[i] for i in chosen]


def fewshot_picker(task: Task, examples: list[Example], shots: int, pool: list[Example] | None) -> Callable[[int], list[Example]]:
    """demos(i): the first `shots` solved items of the pool (same subject), never item i itself."""
    if shots == 0:
        return lambda i: []

    def demos(i: int) -> list[Example]:
        ex = examples[i]
        source = pool if pool is not None else examples
        picked = [d for j, d in enumerate(source) if d.subject == ex.subject and (pool is not None or j != i)]
        return picked[:shots]

    return demos


def _resolve_split(task: Task, cfg: BenchConfig) -> str:
    if cfg.split != "auto":
        return cfg.split
    if cfg.path:
        return task.default_split
    local = available_splits(task)
    if not local or task.default_split in local:
        return task.default_split
    other = next(s for s in ("validation", "test", "train") if s in local)
    log(f"{task.name}: no local {task.default_split} split; using {other}")
    return other


def _load_task(task: Task, cfg: BenchConfig) -> tuple[str, list[Example], list[Example] | None, str]:
    """(split, limited eval examples, few-shot pool or None = the eval set, where demos come from)."""
    split = _resolve_split(task, cfg)
    examples = load_examples(task, split, cfg.path)
    examples = spread_limit(examples, cfg.limit)
    pool, source = None, "eval set (other items)"
    if cfg.shots:
        from lmlab.data import registry

        if local_file(task, task.fewshot_split) is not None or (cfg.path is None and registry.data_dir() is None):
            pool, source = load_examples(task, task.fewshot_split), task.fewshot_split
        else:
            log(f"{task.name}: no local {task.fewshot_split} split for demonstrations; using other items of {split}")
    return split, examples, pool, source


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Evaluate each model on each task; print the table; write metrics.json (+ samples)."""
    from lmlab.eval.perplexity import context_length

    tasks = {name: _load_task(TASKS[name], cfg) for name in cfg.task_names()}
    specs = split_list(cfg.model)
    labels = model_labels(specs)
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for spec, label in zip(specs, labels, strict=True):
        model, tokenizer = load(spec, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        max_length = cfg.max_length or context_length(model, cap=2048)

        def scorer(requests: list[tuple[str, str]], model: Any = model, tokenizer: Any = tokenizer,
                   max_length: int = max_length) -> list[float]:
            return loglikelihoods(model, tokenizer, requests, batch_size=cfg.batch_size, max_length=max_length)

        def generator(prompts: list[str], model: Any = model, tokenizer: Any = tokenizer) -> list[str]:
            from lmlab.generate import DecodingConfig, generate

            decoding = DecodingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, n=1, stop=["Question:", "\n\n"])
            return [outs[0] for outs in generate(model, tokenizer, prompts, decoding)]

        results[label], samples[label] = {}, {}
        for name, (split, examples, pool, source) in tasks.items():
            task = TASKS[name]
            demos = fewshot_picker(task, examples, cfg.shots, pool)
            if task.kind == "choice":
                rows = evaluate_choice(examples, demos, scorer)
            else:
                rows = evaluate_generate(examples, demos, generator)
            results[label][name] = {**summarize(rows, task.kind), "split": split, "shots": cfg.shots,
                                    **({"fewshot_from": source} if cfg.shots else {})}
            samples[label][name] = rows
            log(f"{label} · {name}: acc {results[label][name]['acc']:.3f} (n={len(rows)}, chance "
                f"{results[label][name]['chance']:.3f})")
        del model
    markdown = _table(results, labels, list(tasks))
    metrics = results[labels[0]] if len(labels) == 1 else results
    if cfg.out:
        _write(Path(cfg.out), metrics, markdown, samples)
    return metrics


def _table(results: dict[str, dict[str, Any]], labels: list[str], names: list[str]) -> str:
    header = ["task", "n", "chance"] + [f"{m} acc" for m in labels] + [f"{m} acc_norm" for m in labels]
    rows = []
    for name in names:
        first = results[labels[0]][name]
        rows.append([name, first["n"], first["chance"]] + [results[m][name]["acc"] for m in labels]
                    + [results[m][name]["acc_norm"] for m in labels])
    return print_table("Benchmarks (accuracy; chance level beside it)", header, rows)


def _write(folder: Path, metrics: dict[str, Any], markdown: str, samples: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    from lmlab.runs import atomic_write_json, atomic_write_text

    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_text(folder / "table.md", markdown)
    for label, per_task in samples.items():
        for name, rows in per_task.items():
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            suffix = f"-{label.replace('/', '_')}" if len(samples) > 1 else ""
            atomic_write_text(folder / f"predictions-{name}{suffix}.jsonl", text)
