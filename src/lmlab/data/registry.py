"""Named datasets: what each is, where every split's file lives in a local mirror, and its hub id.

A name resolves, per split, to one of three sources:

- a file (or folder) under `$LMLAB_DATA_DIR`: every split the hub dataset has gets a documented
  mirror path (`MIRROR_LAYOUT` in docs/data.md), found when present; a missing one is an error that
  says which file to put where, never a silent substitute. Some splits list a second path: a
  documented slice of the same file (the development mirror holds `TinyStories-train.head.txt`,
  the first stories of `TinyStories-train.txt`); the full file wins when both are there;
- a Hugging Face hub dataset (`datasets.load_dataset`), when no mirror is set;
- storyworld, the built-in generator (`storyworld/pretrain` …), always available offline.

No name ever resolves to another dataset: `hh-rlhf` is Anthropic's file or nothing.

`resolve(name, split)` says which; `resolve_path(name, split)` gives the mirror path (eval code uses
it for benchmarks such as mmlu and gsm8k); `mirror_file` is the same without the error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.config import closest
from lmlab.errors import DataError

ENV = "LMLAB_DATA_DIR"
SPLITS = ("train", "validation", "test")

# Storyworld task → default number of training records; validation/test get a tenth.
STORYWORLD_SIZES = {"pretrain": 20000, "instruct": 4000, "continue": 4000, "prefs": 3000, "kto": 3000, "qa": 3000}
STORYWORLD_KINDS = {"pretrain": "text", "instruct": "chat", "continue": "chat", "prefs": "preference",
                    "kto": "feedback", "qa": "chat"}
# Large, distinct seed offsets per split, so train / validation / test draw different stories.
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1_000_003, "test": 2_000_029}


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # text | chat | preference | feedback | labelled | benchmark
    description: str
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """split → mirror paths relative to $LMLAB_DATA_DIR: the full file first, then documented slices of it"""
    hub: str | None = None  # "owner/name" or "owner/name:config"
    columns: dict[str, str] = field(default_factory=dict)  # {canonical: source}
    text_unit: str = "paragraph"  # how .txt files split into documents
    hub_dir: str | None = None  # a subset folder of the hub repo (`load_dataset(..., data_dir=)`)

    def __post_init__(self) -> None:
        paths = {s: (p,) if isinstance(p, str) else tuple(p) for s, p in self.files.items()}
        object.__setattr__(self, "files", paths)


def _jsonl(folder: str, *splits: str) -> dict[str, tuple[str, ...]]:
    """`folder/SPLIT.jsonl.gz` or `folder/SPLIT.jsonl` per split (the hub's files are gzipped)."""
    return {s: (f"{folder}/{s}.jsonl.gz", f"{folder}/{s}.jsonl") for s in splits}


HH_SUBSETS = ("helpful-base", "harmless-base", "helpful-online", "helpful-rejection-sampled")

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("tinystories", "text", "TinyStories (Eldan & Li 2023): short stories for 3-4 year olds. Development "
            "mirror: the first train stories and a 640 KB slice of the V2-GPT4 validation set",
            {"train": ("tinystories/TinyStories-train.txt", "tinystories/TinyStories-train.head.txt"),
             "validation": ("tinystories/TinyStoriesV2-GPT4-valid.txt", "tinystories/TinyStoriesV2-GPT4-valid.part1.txt")},
            hub="roneneldan/TinyStories"),
    Dataset("ptb", "text", "Penn Treebank (Mikolov preprocessing), one sentence a line",
            {"train": "ptb/ptb.train.txt", "validation": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"},
            hub="ptb_text_only", text_unit="line",
            columns={"text": "sentence"}),  # the hub copy's field; mirror lines are already {text}
    Dataset("wikitext2", "text", "WikiText-2 (tokenized, <unk>), one paragraph a line",
            {"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt", "test": "wikitext-2/test.txt"},
            hub="Salesforce/wikitext:wikitext-2-v1", text_unit="line"),
    Dataset("alpaca", "chat", "English Alpaca-style instructions {instruction, input, output} (LLaMA-Factory demo "
            "sample on the mirror)", {"train": "instruct/alpaca_en_demo.json"}, hub="yahma/alpaca-cleaned"),
    Dataset("alpaca-zh", "chat", "Chinese Alpaca-style instructions (LLaMA-Factory demo sample)",
            {"train": "instruct/alpaca_zh_demo.json"}, hub="llamafactory/alpaca_zh"),
    Dataset("dpo-en", "preference", "English preference pairs, ShareGPT pairwise layout (LLaMA-Factory demo)",
            {"train": "preference/dpo_en_demo.json"}, hub="llamafactory/DPO-En-Zh-20k:en"),
    Dataset("dpo-zh", "preference", "Chinese preference pairs, ShareGPT pairwise layout (LLaMA-Factory demo)",
            {"train": "preference/dpo_zh_demo.json"}, hub="llamafactory/DPO-En-Zh-20k:zh"),
    Dataset("kto-en", "feedback", "English unpaired feedback {messages, label} for KTO (LLaMA-Factory demo)",
            {"train": "preference/kto_en_demo.json"}, hub="llamafactory/kto-mix-15k"),
    Dataset("hh-rlhf", "preference", "Anthropic helpful/harmless dialogues (Bai et al. 2022), all four subsets: "
            "{chosen, rejected} whole '\\n\\nHuman: … \\n\\nAssistant: …' transcripts",
            _jsonl("preference/hh-rlhf", "train", "test"), hub="Anthropic/hh-rlhf"),
    *[Dataset(f"hh-rlhf/{sub}", "preference", f"Anthropic hh-rlhf, the {sub} subset only",
              _jsonl(f"preference/hh-rlhf/{sub}", "train", "test"), hub="Anthropic/hh-rlhf", hub_dir=sub)
      for sub in HH_SUBSETS],
    Dataset("imdb", "labelled", "IMDB movie reviews (Maas et al. 2011), label positive/negative. Development "
            "mirror: 2,500 reviews as the train split",
            {"train": "imdb/imdb_reviews.csv", "test": "imdb/imdb_test.csv"}, hub="stanfordnlp/imdb",
            columns={"text": "review", "label": "sentiment"}),
    Dataset("rocstories", "benchmark", "Story Cloze (ROCStories): 4 sentences + two candidate endings; also reads "
            "as text (sentences 1-4 + the right ending) and as chat/continuation data (sentence 1 → sentences 2-5)",
            {"validation": "rocstories/story_cloze_val.csv", "test": "rocstories/story_cloze_test.csv"}),
    Dataset("mmlu", "benchmark", "MMLU: one CSV per subject {question, choice0-3, answer index}; a folder per split "
            "(validation = the 5-per-subject dev set, the few-shot pool)",
            {"test": "eval/mmlu/test", "validation": "eval/mmlu/dev"}, hub="cais/mmlu:all"),
    Dataset("openbookqa", "benchmark", "OpenBookQA (TSV: Question Stem, Choices, Answer Key)",
            {"train": "eval/openbookqa/train.tsv", "validation": "eval/openbookqa/dev.tsv",
             "test": "eval/openbookqa/test.tsv"}, hub="allenai/openbookqa:main"),
    Dataset("gsm8k", "benchmark", "GSM8K grade-school maths {question, answer '... #### N'}",
            {"train": "eval/gsm8k/train.jsonl", "test": "eval/gsm8k/test.jsonl"}, hub="openai/gsm8k:main"),
    Dataset("chinese-poetry", "text", "全唐诗 Tang poems, traditional characters; a text is the title and its lines",
            {"train": "chinese-poetry/quan_tang_shi.poet.tang.jsonl.gz"}),
    Dataset("song-ci", "text", "宋词 Song ci, simplified characters; a text is the rhythmic title and its lines",
            {"train": "chinese-poetry/song_ci.ci.song.jsonl.gz"}, columns={"title": "rhythmic"}),
]}
for _task, _kind in STORYWORLD_KINDS.items():
    DATASETS[f"storyworld/{_task}"] = Dataset(
        f"storyworld/{_task}", _kind, f"built-in storyworld '{_task}' task ({STORYWORLD_SIZES[_task]} train records, "
        "a tenth for validation/test; splits never share a story)")


@dataclass(frozen=True)
class Source:
    """Where one split of a dataset comes from right now."""

    kind: str  # "mirror" | "hub" | "storyworld"
    path: Path | None = None
    hub: str | None = None
    task: str | None = None
    hub_dir: str | None = None


def data_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value).expanduser() if value else None


def is_registered(name: str) -> bool:
    return name in DATASETS


def get(name: str) -> Dataset:
    if name in DATASETS:
        return DATASETS[name]
    hint = closest(name, DATASETS)
    raise DataError(
        f"unknown dataset '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
        + " (`lmlab data list` shows them; a local file path or a hub id 'owner/name' works too)"
    )


def splits(name: str) -> list[str]:
    """Every split the dataset has (whether or not the mirror holds it now)."""
    ds = get(name)
    if ds.name.startswith("storyworld/"):
        return list(SPLITS)
    return [s for s in SPLITS if s in ds.files]


def present_splits(name: str) -> list[str]:
    """The splits whose file is on the mirror now (none without `$LMLAB_DATA_DIR`)."""
    return [s for s in splits(name) if not name.startswith("storyworld/") and mirror_file(name, s) is not None]


def _check_split(ds: Dataset, split: str) -> None:
    available = list(SPLITS) if ds.name.startswith("storyworld/") else list(ds.files)
    if split not in available:
        hint = closest(split, available)
        raise DataError(
            f"dataset '{ds.name}' has no split '{split}'" + (f"; did you mean '{hint}'?" if hint else "")
            + f" (splits: {', '.join(available)}). {ds.description}"
        )


def expected_files(name: str, split: str) -> tuple[str, ...]:
    """The mirror paths (relative to `$LMLAB_DATA_DIR`) looked for, in order; checks the split exists."""
    ds = get(name)
    _check_split(ds, split)
    return ds.files[split]


def mirror_file(name: str, split: str = "train") -> Path | None:
    """The first of the split's documented mirror paths that exists, or None (also with no mirror set)."""
    root = data_dir()
    if root is None:
        return None
    return next((root / rel for rel in expected_files(name, split) if (root / rel).exists()), None)


def _put_where(root: Path | str, rels: tuple[str, ...]) -> str:
    first = f"put the file at {Path(root) / rels[0]}"
    return first + (" (or a documented slice of it at " + ", ".join(str(Path(root) / r) for r in rels[1:]) + ")"
                    if len(rels) > 1 else "")


def resolve(name: str, split: str = "train") -> Source:
    """The source of one split: storyworld, the mirror file under $LMLAB_DATA_DIR, or the hub."""
    ds = get(name)
    if ds.name.startswith("storyworld/"):
        _check_split(ds, split)
        return Source("storyworld", task=ds.name.split("/", 1)[1])
    if data_dir() is not None:
        return Source("mirror", path=resolve_path(name, split))
    if ds.hub:
        return Source("hub", hub=ds.hub, hub_dir=ds.hub_dir)
    rels = expected_files(name, split)
    raise DataError(
        f"dataset '{name}' ({split}) is read from a local mirror and has no hub copy: set "
        f"{ENV}=<path to a mirror> holding {rels[0]}"
    )


def resolve_path(name: str, split: str = "train") -> Path:
    """The mirror file (or folder) of `name`'s split; a clear error if the mirror or file is missing."""
    ds = get(name)
    if ds.name.startswith("storyworld/"):
        raise DataError(f"'{name}' is generated, not read from files; use lmlab.data.loaders.load_records('{name}')")
    rels = expected_files(name, split)
    root = data_dir()
    if root is None:
        raise DataError(f"dataset '{name}' ({split}) needs a local mirror: set {ENV}=<path to a mirror> holding {rels[0]}")
    path = mirror_file(name, split)
    if path is None:
        present = present_splits(name)
        raise DataError(
            f"dataset '{name}' has no {split} split on the mirror {ENV}={root}: {_put_where(root, rels)}"
            + (f"; splits on this mirror: {', '.join(present)} (use {name}@{present[0]})" if present else "")
            + f". Or set {ENV}=<path to a mirror> that has it"
            + (f", or unset {ENV} to read the hub copy {ds.hub}" if ds.hub else "")
        )
    return path


def where_now(name: str) -> str:
    """Where each split of `name` resolves at this moment, for `lmlab data list`."""
    ds = get(name)
    if ds.name.startswith("storyworld/"):
        return "built-in"
    root = data_dir()
    found = {s: mirror_file(name, s) for s in present_splits(name)}
    if found:
        missing = [s for s in ds.files if s not in found]
        return ("mirror: " + ", ".join(f"{s}={p.relative_to(root)}" for s, p in found.items())
                + (f"; not on the mirror: {', '.join(missing)}" if missing else ""))
    if root is not None:
        return f"not on the mirror: {', '.join(ds.files)}" + (f"; hub {ds.hub} if {ENV} is unset" if ds.hub else "")
    return f"hub: {ds.hub}" if ds.hub else f"needs {ENV}"
