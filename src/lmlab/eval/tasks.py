"""Benchmark tasks: where each one's files live, how a row becomes a prompt and its choices.

Every task turns raw rows (the published file format, or the hub's) into examples; the prompt
formats follow lm-evaluation-harness so numbers are comparable with its defaults:

    mmlu        "{question}\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer:" + " A" | " B" | " C" | " D"
    openbookqa  "{question_stem}" + " {choice}"
    arc_*       "Question: {stem}\nAnswer:" + " {choice}"
    hellaswag   "{activity}: {ctx_a} {Ctx_b}" + " {ending}"        (lm-eval's text clean-up)
    boolq       "{passage}\nQuestion: {question}?\nAnswer:" + " no" | " yes"
    winogrande  "{sentence up to _ with option}" + " {rest of sentence}"  (partial scoring)
    gsm8k       "Question: {question}\nAnswer:" → generated until "Question:", the last number (or the one after ####) compared

Local files are found under `$LMLAB_DATA_DIR` (the registry's layout: eval/mmlu/{test,dev}/,
eval/openbookqa/{dev,train}.tsv, eval/gsm8k/{test,train}.jsonl, and for the others
eval/<task>/<split>.jsonl with split test, validation (or dev/val) or train), or given as
`path=FILE`; otherwise they come from the hub (`datasets`), when it is reachable.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.errors import DataError

LETTERS = "ABCDEFGHIJ"
SPLIT_FILES = {"test": ("test",), "validation": ("validation", "dev", "val"), "train": ("train",)}


@dataclass
class Example:
    """One multiple-choice item: choice i is scored as log P(continuations[i] | contexts[i]).

    Most tasks share one context across choices; WinoGrande puts the option in the context and
    scores the shared rest of the sentence (partial scoring, Sakaguchi et al. 2020 via lm-eval).
    GSM8K items have no choices: `answer` is the gold number and `demo` the worked solution.
    """

    contexts: list[str]
    continuations: list[str]
    label: int
    subject: str | None = None
    answer: str | None = None
    demo_text: str | None = None
    header: str = ""  # put once before the demonstrations (MMLU's "The following are ... about X.")

    def demo(self) -> str:
        """The solved example, as a few-shot demonstration."""
        if self.demo_text is not None:
            return self.demo_text
        return self.contexts[self.label] + self.continuations[self.label]

    def demo_turn(self) -> tuple[str, str]:
        """The demonstration as a (user, assistant) turn pair: question, then the answer alone.

        Chat-formatted few-shot prompts show each solved example as its own turn, as
        lm-evaluation-harness does with `--apply_chat_template` (`fewshot_as_multiturn`).
        """
        question = self.contexts[max(self.label, 0)]
        text = self.demo()
        if not text.startswith(question):
            raise DataError(f"demonstration {text[:40]!r} does not start with its question {question[:40]!r}")
        return question, text[len(question):].lstrip(" ")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "choice" | "generate"
    parse: Callable[[dict[str, Any]], Example]
    default_split: str
    fewshot_split: str
    hub: str | None
    description: str
    registered: bool = False  # files resolved through lmlab.data.registry
    hub_adapt: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda row: row)


# -- parsers: one published row → Example ---------------------------------------------------------

def _choices(context: str, options: list[str], label: int, subject: str | None = None) -> Example:
    return Example([context] * len(options), [" " + o.strip() for o in options], label, subject)


def _key_index(key: str, labels: list[str], where: str) -> int:
    if key in labels:
        return labels.index(key)
    raise DataError(f"{where}: answer key {key!r} is not one of the choice labels {labels}")


def mmlu_example(row: dict[str, Any]) -> Example:
    subject = row["subject"]
    header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    body = row["question"].strip() + "\n" + "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(row["choices"]))
    label = int(row["answer"])
    return Example([body + "Answer:"] * len(row["choices"]), [f" {LETTERS[i]}" for i in range(len(row["choices"]))],
                   label, subject, demo_text=body + "Answer: " + LETTERS[label], header=header)


def obqa_tsv_row(row: dict[str, Any]) -> dict[str, Any]:
    """OpenBookQA Main TSV (ID, Question Stem, Choices "(A) .. (B) ..", Answer Key) → ARC layout."""
    parts = re.split(r"\(([A-Z])\)\s*", row["Choices"])[1:]
    choices = [{"label": parts[i], "text": parts[i + 1].strip()} for i in range(0, len(parts), 2)]
    return {"question": {"stem": row["Question Stem"], "choices": choices}, "answerKey": row["Answer Key"].strip()}


def arc_layout(row: dict[str, Any], where: str = "row") -> tuple[str, list[str], int]:
    """(stem, choice texts, gold index) of the ARC / OpenBookQA published jsonl layout."""
    q = row["question"]
    labels = [str(c["label"]) for c in q["choices"]]
    return q["stem"], [c["text"] for c in q["choices"]], _key_index(str(row["answerKey"]).strip(), labels, where)


def obqa_example(row: dict[str, Any]) -> Example:
    stem, texts, label = arc_layout(obqa_tsv_row(row) if "Choices" in row else row)
    return _choices(stem.strip(), texts, label)


def arc_example(row: dict[str, Any]) -> Example:
    stem, texts, label = arc_layout(row)
    return _choices(f"Question: {stem.strip()}\nAnswer:", texts, label)


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag pre-processing (WikiHow artefacts such as '[title]' removed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_example(row: dict[str, Any]) -> Example:
    if "ctx_a" in row:
        ctx = row["ctx_a"] + " " + row.get("ctx_b", "").capitalize()
    else:
        ctx = row["ctx"]
    query = f"{row['activity_label']}: {ctx}" if row.get("activity_label") else ctx
    return _choices(_hellaswag_clean(query), [_hellaswag_clean(e) for e in row["endings"]], int(row["label"]))


def boolq_example(row: dict[str, Any]) -> Example:
    answer = row["answer"]
    if isinstance(answer, str):
        answer = answer.strip().lower() in ("true", "yes", "1")
    return _choices(f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", ["no", "yes"], int(bool(answer)))


def winogrande_example(row: dict[str, Any]) -> Example:
    sentence = row["sentence"]
    cut = sentence.index("_")
    rest = " " + sentence[cut + 1:].strip()
    options = [row["option1"], row["option2"]]
    return Example([sentence[:cut] + o for o in options], [rest, rest], int(row["answer"]) - 1)


def gsm8k_example(row: dict[str, Any]) -> Example:
    solution = row["answer"]
    if "####" not in solution:
        raise DataError(f"gsm8k row has no '#### <answer>' in its answer: {solution[:80]!r}")
    gold = solution.split("####")[-1].strip()
    prompt = f"Question: {row['question'].strip()}\nAnswer:"
    return Example([prompt], [], -1, answer=gold, demo_text=f"{prompt} {solution.strip()}")


# -- hub rows → published layout ----------------------------------------------------------------

def _hub_arc(row: dict[str, Any]) -> dict[str, Any]:
    """The hub's flat layout (`question` or `question_stem`, `choices: {text, label}`) → the published one."""
    if isinstance(row.get("question"), dict) or not isinstance(row.get("choices"), dict):
        return row  # already published (jsonl) or OpenBookQA's TSV row
    stem = row.get("question_stem", row.get("question"))
    ch = row["choices"]
    return {"question": {"stem": stem, "choices": [{"label": lab, "text": t} for lab, t in zip(ch["label"], ch["text"], strict=True)]},
            "answerKey": row["answerKey"]}


def _hub_mmlu(row: dict[str, Any]) -> dict[str, Any]:
    return {"question": row["question"], "choices": list(row["choices"]), "answer": int(row["answer"]),
            "subject": row.get("subject", "unknown")}


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("mmlu", "choice", mmlu_example, "test", "validation", "cais/mmlu:all",
         "57 subjects, 4 choices (Hendrycks et al. 2021)", registered=True, hub_adapt=_hub_mmlu),
    Task("openbookqa", "choice", obqa_example, "test", "train", "allenai/openbookqa:main",
         "elementary science, 4 choices (Mihaylov et al. 2018)", registered=True, hub_adapt=_hub_arc),
    Task("arc_easy", "choice", arc_example, "test", "train", "allenai/ai2_arc:ARC-Easy",
         "grade-school science, easy set (Clark et al. 2018)", hub_adapt=_hub_arc),
    Task("arc_challenge", "choice", arc_example, "test", "train", "allenai/ai2_arc:ARC-Challenge",
         "grade-school science, challenge set (Clark et al. 2018)", hub_adapt=_hub_arc),
    Task("hellaswag", "choice", hellaswag_example, "validation", "train", "Rowan/hellaswag",
         "commonsense sentence completion, 4 endings (Zellers et al. 2019)"),
    Task("boolq", "choice", boolq_example, "validation", "train", "google/boolq",
         "yes/no questions about a passage (Clark et al. 2019)"),
    Task("winogrande", "choice", winogrande_example, "validation", "train", "allenai/winogrande:winogrande_xl",
         "pronoun resolution, 2 options, partial scoring (Sakaguchi et al. 2020)"),
    Task("gsm8k", "generate", gsm8k_example, "test", "train", "openai/gsm8k:main",
         "grade-school maths, greedy generation, exact match of the final number (Cobbe et al. 2021)"),
]}


# -- files ---------------------------------------------------------------------------------------

def read_mmlu_csv(path: Path) -> Iterator[dict[str, Any]]:
    """One subject's CSV: with header question,choice0..3,answer (0-3) or headerless, answer A-D."""
    subject = re.sub(r"_(test|dev|val|validation|train|auxiliary_train)$", "", path.stem)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0][:1] == ["question"]:
        rows = rows[1:]
    for line, values in enumerate(rows, start=2):
        if not values:
            continue
        if len(values) != 6:
            raise DataError(f"{path}:{line}: expected 6 fields (question, 4 choices, answer), found {len(values)}")
        answer = values[5].strip()
        index = LETTERS.index(answer) if answer in LETTERS[:4] else int(answer) if answer.isdigit() else -1
        if not 0 <= index < 4:
            raise DataError(f"{path}:{line}: answer {answer!r} must be 0-3 or A-D")
        yield {"question": values[0], "choices": values[1:5], "answer": index, "subject": subject}


def read_task_file(task: Task, path: Path) -> list[dict[str, Any]]:
    """Raw rows of a local task file (or an MMLU folder of per-subject CSVs)."""
    if task.name == "mmlu" and path.suffix not in (".jsonl", ".json"):
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: no <subject>_<split>.csv files (MMLU layout: eval/mmlu/test/anatomy_test.csv ...)")
        return [row for f in files for row in read_mmlu_csv(f)]
    from lmlab.data.loaders import read_rows

    rows = []
    for where, row in read_rows(path):
        row = {k: v for k, v in row.items() if k != "source_file"}
        try:
            rows.append(task.hub_adapt(row))  # a file in the hub's layout reads like the hub
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{where}: not a {task.name} row ({type(exc).__name__}: {exc}); "
                            f"expected the published or the hub's format, see docs/evaluation.md") from None
        rows[-1]["_where"] = where
    return rows


def local_file(task: Task, split: str) -> Path | None:
    """The task's split under $LMLAB_DATA_DIR, or None when there is no such file."""
    from lmlab.data import registry

    root = registry.data_dir()
    if root is None:
        return None
    if task.registered:
        return registry.mirror_file(task.name, split) if split in registry.splits(task.name) else None
    for name in SPLIT_FILES.get(split, (split,)):
        for suffix in (".jsonl", ".json"):
            path = root / "eval" / task.name / f"{name}{suffix}"
            if path.exists():
                return path
    return None


def expected_path(task: Task, split: str) -> str:
    """Where a task's split is looked for, relative to $LMLAB_DATA_DIR (for error messages)."""
    if task.registered:
        from lmlab.data import registry

        rels = registry.get(task.name).files.get(split)
        return f"looked for {' or '.join(rels)}" if rels else f"the mirror layout has no {split} file for {task.name}"
    return f"looked for eval/{task.name}/{'|'.join(SPLIT_FILES.get(split, (split,)))}.jsonl"


def hub_rows(task: Task, split: str) -> list[dict[str, Any]]:
    from lmlab.data.loaders import read_hub

    if task.hub is None:
        raise DataError(f"{task.name} ({split}): no local file and no hub copy")
    # the mirror's MMLU "validation" is the 5-per-subject dev set (the few-shot pool), as on the hub's "dev"
    hub_split = "dev" if task.name == "mmlu" and split == "validation" else split
    return [task.hub_adapt(row) for _, row in read_hub(task.hub, hub_split)]


def load_examples(task: Task, split: str, path: str | None = None) -> list[Example]:
    """Examples of one split: from `path`, the local mirror, or the hub (in that order)."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.exists():
            raise DataError(f"path={path}: no such file for task {task.name}")
        rows = read_task_file(task, file)
    else:
        from lmlab.data import registry

        file = local_file(task, split)
        if file is None and registry.data_dir() is not None:  # a mirror is set: never wait on the hub
            local = available_splits(task)
            raise DataError(
                f"{task.name}: no '{split}' split under {registry.ENV}={registry.data_dir()} "
                f"({expected_path(task, split)}); local splits: {', '.join(local) or 'none'}"
                + (f"; use split={local[0]}" if local else "; or give path=FILE")
            )
        rows = read_task_file(task, file) if file is not None else hub_rows(task, split)
    examples = []
    for i, row in enumerate(rows):
        where = row.pop("_where", f"{file or task.hub} row {i + 1}")
        try:
            examples.append(task.parse(row))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{where}: not a {task.name} row ({type(exc).__name__}: {exc}); "
                            f"expected the published format, see docs/evaluation.md") from None
    if not examples:
        raise DataError(f"{task.name} ({split}): no examples in {file or task.hub}")
    return examples


def available_splits(task: Task) -> list[str]:
    return [s for s in SPLIT_FILES if local_file(task, s) is not None]
