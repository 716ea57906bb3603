"""Zero/few-shot benchmarks: multiple choice by log-likelihood, GSM8K by greedy generation.

    LMLAB_DATA_DIR=/path/to/mirror lmlab eval bench model=runs/quickstart/pt tasks=mmlu,openbookqa limit=200
    lmlab eval bench model=runs/base,runs/sft tasks=arc_easy path=ARC-Easy-Test.jsonl shots=5 out=runs/bench

Scored as lm-evaluation-harness scores them (`lm_eval --model hf`, checked item by item in
tests/test_lmeval_parity.py), so the numbers compare with published ones. A multiple-choice item is
answered by the choice whose continuation the model finds most likely: `acc` takes the largest
log P(choice | prompt), `acc_norm` the largest log-likelihood per character of the choice (which
removes the bias toward short answers). Few-shot demonstrations are the first `shots` solved items
of the task's few-shot split (the harness's `first_n`; MMLU: the subject's dev questions),
separated by blank lines. GSM8K is generative: greedy decoding until "Question:", then the
harness's two answer extractions (flexible: the last number, `acc`; strict: the number after
"####", `acc_strict`) compared with the gold number.

Like the harness by default, no BOS token is prefixed unless the tokenizer adds one itself
(`add_bos=true` prefixes one), and a model that chats is prompted through its chat template
(`chat_template=auto`; lm-eval's `--apply_chat_template`). Beside each accuracy the table prints
the chance level, the majority-answer baseline (always answering the subset's most common gold
position) and where the model's answers fall (A/B/C/D): a model that always answers "A" scores the
share of gold A's, which on a small subset can look better than chance; it is flagged.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmlab.config import closest, opt
from lmlab.errors import DataError
from lmlab.eval.common import load, model_labels, print_table, split_list
from lmlab.eval.tasks import LETTERS, TASKS, Example, Task, available_splits, load_examples, local_file
from lmlab.progress import log

Scorer = Callable[[list[tuple[str, str]]], list[float]]
Generator = Callable[[list[str]], list[str]]
Chat = Callable[[list[dict[str, str]]], str]  # messages -> the prompt text, ending where the reply starts
Mode = Literal["auto", True, False]

# lm-evaluation-harness's gsm8k task: stop strings, answer regexes, what exact match ignores
GSM8K_STOP = ["Question:", "</s>", "<|im_end|>"]
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORED = [",", r"\$", r"(?s).*#### ", r"\.$"]


@dataclass
class BenchConfig:
    """`lmlab eval bench`: accuracy on standard benchmarks, one column per model, chance and majority baseline beside each."""

    model: str = opt(help="model(s), comma separated: run folders, model folders or hub ids (A,B = before/after)")
    tasks: str = opt("mmlu,openbookqa", f"comma separated: {', '.join(TASKS)}, or all")
    split: str = opt("auto", "test, validation or train; auto = the task's usual eval split that is available locally")
    path: str | None = opt(None, "read the (single) task from this file or folder instead of the mirror/hub")
    limit: int | None = opt(None, "at most N items per task (MMLU: N in all, spread evenly over subjects)")
    shots: int = opt(0, "solved examples shown before each question (few-shot)")
    add_bos: Mode = opt("auto", "prefix a BOS token: auto = as lm-evaluation-harness by default (only when the tokenizer "
                                "adds one itself), true = always (BOS, else EOS: lm-eval's add_bos_token=True), false = never")
    chat_template: Mode = opt("auto", "prompt through the tokenizer's chat template (lm-eval's --apply_chat_template); "
                                      "auto = when the model has a template and is not a pretraining (pt) run")
    batch_size: int = opt(8, "sequences per forward pass (and prompts per generation batch)")
    max_length: int | None = opt(None, "tokens per scored sequence (prompt is cut from the left); default the model's context, at most 2048")
    max_new_tokens: int = opt(256, "GSM8K: tokens generated per question (lm-eval's max_gen_toks)")
    out: str | None = opt(None, "folder for metrics.json, table.md, bench.png and predictions (none: print only)")
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


# -- tokens: what the harness feeds the model -------------------------------------------------------

def encode(tokenizer: Any, texts: Sequence[str], add_bos: Mode = "auto") -> list[list[int]]:
    """Token ids of each text, with the prefix lm-evaluation-harness's HFLM would give it.

    auto: the tokenizer's own special tokens (`add_special_tokens=True`: Llama's adds `<s>`,
    GPT-2's and Qwen's add nothing), the harness's default; true: the BOS token (else EOS, the
    harness's `prefix_token_id`) first; false: none. A text that already starts with that token
    (a chat template that writes it) gets no second one, as in HFLM.tok_encode.
    """
    from lmlab.eval.perplexity import bos_id

    start = bos_id(tokenizer)
    start_text = tokenizer.decode([start]) if start is not None else None
    plain = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    own = tokenizer(list(texts), add_special_tokens=True)["input_ids"] if add_bos == "auto" else plain
    out = []
    for text, bare, default in zip(texts, plain, own, strict=True):
        if add_bos is False or (start_text and text.startswith(start_text)):
            out.append(list(bare))
        elif add_bos is True:
            if start is None:
                from lmlab.errors import ConfigError

                raise ConfigError("add_bos=true but the tokenizer has neither a BOS nor an EOS token; use add_bos=auto")
            out.append([start, *bare])
        else:
            out.append(list(default))
    return out


def prefix_used(tokenizer: Any, add_bos: Mode) -> str:
    """The token put before every prompt, as shown in the table ("none" when there is none)."""
    probe = "Question"
    with_prefix, bare = encode(tokenizer, [probe], add_bos)[0], tokenizer(probe, add_special_tokens=False)["input_ids"]
    extra = with_prefix[: len(with_prefix) - len(bare)] if with_prefix[len(with_prefix) - len(bare):] == bare else []
    return tokenizer.decode(extra) if extra else "none"


def loglikelihoods(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], *, batch_size: int = 8,
                   max_length: int = 2048, add_bos: Mode = "auto") -> list[float]:
    """log P(continuation | context) for each (context, continuation), summed over its tokens.

    Tokenised as lm-evaluation-harness does (`_encode_pair`): the context's trailing whitespace is
    moved to the continuation, the pair is encoded whole and the continuation is what follows the
    context's tokens; the prefix follows `encode`. A too-long prompt loses its oldest tokens,
    never the continuation.
    """
    from lmlab.eval.perplexity import tail_nll

    contexts, wholes = [], []
    for context, continuation in requests:
        stripped = context.rstrip()
        contexts.append(stripped)
        wholes.append(stripped + context[len(stripped):] + continuation)
    ctx_ids, whole_ids = encode(tokenizer, contexts, add_bos), encode(tokenizer, wholes, add_bos)
    seqs, tails = [], []
    for (context, continuation), ctx, whole in zip(requests, ctx_ids, whole_ids, strict=True):
        n = len(whole) - len(ctx)
        if n < 1 or not ctx:
            raise DataError(f"cannot score continuation {continuation!r} after context {context[-40:]!r} "
                            "(one of them is empty once tokenized)")
        ids = whole[-max_length:]
        seqs.append(ids)
        tails.append(min(n, len(ids) - 1))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [-x for x in tail_nll(model, seqs, tails, batch_size=batch_size, pad_id=pad, desc="log-likelihoods")]


# -- GSM8K answers, as the harness's gsm8k task extracts and compares them ---------------------------

def extract_answer(text: str, strict: bool = False) -> str | None:
    """strict: the number after "#### "; flexible: the last number-like run ("$18", "1,234", "7").

    The harness's `regex` filters of its gsm8k task (strict-match, flexible-extract); None when
    nothing matches (the harness's "[invalid]").
    """
    found = (STRICT if strict else FLEXIBLE).findall(text)
    if not found:
        return None
    match = found[0] if strict else found[-1]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "")
    return match.strip() or None


def normalize_answer(text: str) -> str:
    """What exact match compares: commas, "$", everything up to "#### " and a final "." removed, lower case."""
    for pattern in IGNORED:
        text = re.sub(pattern, "", text)
    return text.lower()


def same_answer(pred: str | None, gold: str) -> bool:
    return pred is not None and normalize_answer(pred) == normalize_answer(gold)


# -- prompts ------------------------------------------------------------------------------------

def prompt_of(ex: Example, demos: Sequence[Example], context: str, chat: Chat | None) -> str:
    """The text before a continuation: header, demonstrations, question; through the chat template if any.

    With a template it is what lm-evaluation-harness sends with `--apply_chat_template` (which
    turns on `fewshot_as_multiturn`): the header as the system message, each demonstration as a
    user turn (its question) and an assistant turn (its answer), the question as the last user
    turn; the reply starts right after.
    """
    if chat is None:
        return ex.header + "".join(d.demo() + "\n\n" for d in demos) + context
    messages = [{"role": "system", "content": ex.header}] if ex.header else []
    for d in demos:
        question, answer = d.demo_turn()
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return chat([*messages, {"role": "user", "content": context}])


def chat_renderer(tokenizer: Any) -> Chat:
    """Messages → the tokenizer's chat template text ending with the assistant header (ChatML if none)."""
    from lmlab.data.chat import render_prompt

    return lambda messages: render_prompt(tokenizer, messages)


def uses_chat_template(spec: str, tokenizer: Any, mode: Mode) -> bool:
    """chat_template=auto: the tokenizer has a template and the model is not a pretraining run.

    lmlab stores a ChatML template with every tokenizer it trains, also for models that never saw
    a conversation; a run folder's marker (`.lmlab-run`: pt, sft, ...) tells them apart.
    """
    if mode != "auto":
        return bool(mode)
    if not getattr(tokenizer, "chat_template", None):
        return False
    from lmlab.errors import LmlabError
    from lmlab.models.load import resolve_model_dir
    from lmlab.runs import MARKER

    try:
        folder = resolve_model_dir(spec)
    except LmlabError:
        folder = None
    for parent in ([folder, *list(folder.parents)[:2]] if folder is not None else []):
        marker = parent / MARKER
        if marker.is_file():
            return marker.read_text(encoding="utf-8").strip() != "pt"
    return True


# -- evaluation ---------------------------------------------------------------------------------

def evaluate_choice(examples: Sequence[Example], demos: Callable[[int], list[Example]], scorer: Scorer,
                    chat: Chat | None = None) -> list[dict[str, Any]]:
    """Per item: gold, prediction by log-likelihood (acc) and by log-likelihood per character (acc_norm).

    Through a chat template the choices follow the reply header without the joining space (the
    harness's target delimiter is "" there).
    """
    requests, owner = [], []
    for i, ex in enumerate(examples):
        shown = demos(i)
        for context, continuation in zip(ex.contexts, ex.continuations, strict=True):
            if chat is not None and continuation.startswith(" "):
                continuation = continuation[1:]
            requests.append((prompt_of(ex, shown, context, chat), continuation))
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


def evaluate_generate(examples: Sequence[Example], demos: Callable[[int], list[Example]], generator: Generator,
                      chat: Chat | None = None) -> list[dict[str, Any]]:
    """Per item: the generation, the extracted answers (flexible and strict), the gold number, correct or not."""
    prompts = [prompt_of(ex, demos(i), ex.contexts[0], chat) for i, ex in enumerate(examples)]
    outputs = generator(prompts)
    rows = []
    for ex, prompt, output in zip(examples, prompts, outputs, strict=True):
        pred, strict = extract_answer(output), extract_answer(output, strict=True)
        gold = str(ex.answer)
        rows.append({"question": prompt[-300:], "output": output, "pred": pred, "pred_strict": strict, "gold": gold,
                     "correct": same_answer(pred, gold), "correct_strict": same_answer(strict, gold),
                     "correct_norm": same_answer(pred, gold), "choices": 0})
    return rows


def answer_positions(picks: Sequence[int]) -> dict[str, float]:
    """Share of items per answer position, A first: where a model's (or the gold) answers fall."""
    counts = Counter(picks)
    return {LETTERS[k]: counts[k] / len(picks) for k in sorted(counts)}


def one_letter(picks: Sequence[int]) -> str | None:
    """The letter when every one of several answers is at the same position (a degenerate model), else None."""
    return LETTERS[picks[0]] if len(picks) > 1 and len(set(picks)) == 1 else None


def summarize(rows: Sequence[dict[str, Any]], kind: str, *, by_subject: bool = True) -> dict[str, Any]:
    """acc, acc_norm, n, chance (mean 1/choices) and, for multiple choice, where the answers fall.

    `majority` is the accuracy of always giving the subset's most common gold position: a model
    whose answers are all one letter (`one_letter`) scores exactly that share, whatever it knows.
    MMLU adds per-subject values and their macro mean.
    """
    n = len(rows)
    out: dict[str, Any] = {
        "acc": sum(r["correct"] for r in rows) / n,
        "acc_norm": sum(r["correct_norm"] for r in rows) / n if kind == "choice" else None,
        "n": n,
        "chance": sum(1 / r["choices"] for r in rows) / n if kind == "choice" else 0.0,
    }
    if kind == "choice":
        golds = [r["label"] for r in rows]
        out["majority"] = max(Counter(golds).values()) / n
        out["gold_positions"] = answer_positions(golds)
        out["answer_positions"] = answer_positions([r["pred"] for r in rows])
        out["answer_positions_norm"] = answer_positions([r["pred_norm"] for r in rows])
        out["one_letter"] = one_letter([r["pred"] for r in rows])
        out["one_letter_norm"] = one_letter([r["pred_norm"] for r in rows])
    else:
        out["acc_strict"] = sum(r["correct_strict"] for r in rows) / n
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
    """Evaluate each model on each task; print one table (models as columns); write metrics.json, bench.png."""
    from lmlab.eval.perplexity import context_length

    tasks = {name: _load_task(TASKS[name], cfg) for name in cfg.task_names()}
    specs = split_list(cfg.model)
    labels = model_labels(specs)
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for spec, label in zip(specs, labels, strict=True):
        model, tokenizer = load(spec, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        max_length = cfg.max_length or context_length(model, cap=2048)
        chat = chat_renderer(tokenizer) if uses_chat_template(spec, tokenizer, cfg.chat_template) else None
        setting = {"chat_template": chat is not None, "add_bos": cfg.add_bos, "bos_prefix": prefix_used(tokenizer, cfg.add_bos)}

        def scorer(requests: list[tuple[str, str]], model: Any = model, tokenizer: Any = tokenizer,
                   max_length: int = max_length) -> list[float]:
            return loglikelihoods(model, tokenizer, requests, batch_size=cfg.batch_size, max_length=max_length,
                                  add_bos=cfg.add_bos)

        def generator(prompts: list[str], model: Any = model, tokenizer: Any = tokenizer) -> list[str]:
            from lmlab.eval.perplexity import bos_id
            from lmlab.generate import DecodingConfig, generate

            if cfg.add_bos is True:  # written out, so lmlab.generate does not add a second one
                start = tokenizer.decode([bos_id(tokenizer)])
                prompts = [p if p.startswith(start) else start + p for p in prompts]
            decoding = DecodingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, n=1, stop=GSM8K_STOP)
            return [outs[0] for outs in generate(model, tokenizer, prompts, decoding, batch_size=cfg.batch_size)]

        results[label], samples[label] = {}, {}
        for name, (split, examples, pool, source) in tasks.items():
            task = TASKS[name]
            demos = fewshot_picker(task, examples, cfg.shots, pool)
            if task.kind == "choice":
                rows = evaluate_choice(examples, demos, scorer, chat)
            else:
                rows = evaluate_generate(examples, demos, generator, chat)
            summary = summarize(rows, task.kind)
            results[label][name] = {**summary, "split": split, "shots": cfg.shots, **setting,
                                    **({"fewshot_from": source} if cfg.shots else {})}
            samples[label][name] = rows
            log(f"{label} · {name}: acc {summary['acc']:.3f} (n={len(rows)}, chance {summary['chance']:.3f}"
                + (f", majority {summary['majority']:.3f})" if task.kind == "choice" else ")"))
            if summary.get("one_letter"):  # printed even with --quiet: it changes what the number means
                print(f"warning: {label} answers {summary['one_letter']} to every {name} question: its acc "
                      f"{summary['acc']:.3f} is the share of gold {summary['one_letter']} answers, not knowledge",
                      file=sys.stderr)
        del model
    markdown = _table(results, labels, list(tasks))
    metrics = results[labels[0]] if len(labels) == 1 else results
    if cfg.out:
        _write(Path(cfg.out), metrics, markdown, samples)
        bench_plot(results, Path(cfg.out) / "bench.png")
    return metrics


def _positions(shares: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in shares.items())


def _table(results: dict[str, dict[str, Any]], labels: list[str], names: list[str]) -> str:
    """One table for all models: a row per task and metric, a column per model, baselines beside them."""
    header = ["task", "metric", "n", "chance", "majority", *labels]
    rows: list[list[Any]] = []
    for name in names:
        first = results[labels[0]][name]
        per = [results[m][name] for m in labels]
        if TASKS[name].kind == "choice":
            base = [first["n"], first["chance"], first["majority"]]
            rows.append([name, "acc", *base, *(r["acc"] for r in per)])
            rows.append([name, "acc_norm", "", "", "", *(r["acc_norm"] for r in per)])
            rows.append([name, "answer positions", "", "", "gold: " + _positions(first["gold_positions"]),
                         *(_positions(r["answer_positions"]) for r in per)])
            rows.append([name, "one letter", "", "", "",
                         *(f"⚠ all {r['one_letter']}" if r["one_letter"] else "no" for r in per)])
        else:
            rows.append([name, "acc (flexible)", first["n"], "", "", *(r["acc"] for r in per)])
            rows.append([name, "acc_strict (####)", "", "", "", *(r["acc_strict"] for r in per)])
    first_task = names[0]
    rows.append(["prompt", "chat template", "", "", "",
                 *("yes" if results[m][first_task]["chat_template"] else "no" for m in labels)])
    rows.append(["prompt", "BOS prefix", "", "", "", *(f"{results[m][first_task]['bos_prefix']} (add_bos="
                                                        f"{str(results[m][first_task]['add_bos']).lower()})" for m in labels)])
    return print_table("Benchmarks (accuracy; chance and majority-answer baseline beside it)", header, rows)


def bench_plot(results: dict[str, dict[str, Any]], out: Path) -> Path:
    """One bar group per model (a bar per task, its acc); chance levels in the title."""
    from lmlab.plots import bars

    table = {label: {name: r["acc"] for name, r in per.items()} for label, per in results.items()}
    first = next(iter(results.values()))
    chance = ", ".join(f"{n} {r['chance']:.2f}" for n, r in first.items() if r["chance"])
    return bars(table, out, title="Benchmark accuracy per model" + (f" (chance: {chance})" if chance else ""),
                ylabel="acc")
def _write(folder: Path, metrics: dict[str, Any], markdown: str, samples: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    from lmlab.runs import atomic_write_json, atomic_write_text

    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_text(folder / "table.md", markdown)
    for label, per_task in samples.items():
        for name, rows in per_task.items():
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            suffix = f"-{label.replace('/', '_')}" if len(samples) > 1 else ""
            atomic_write_text(folder / f"predictions-{name}{suffix}.jsonl", text)
