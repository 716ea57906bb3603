"""The `lmlab data` commands: list, show, stats, compare. Thin: build inputs, call data/stats.py, print.

    lmlab data list
    lmlab data show alpaca n=3                 (LMLAB_DATA_DIR=/path/to/mirror for real data)
    lmlab data stats storyworld/pretrain tokenizer=tok/
    lmlab data compare storyworld/pretrain tinystories out=runs/cmp
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmlab.config import opt
from lmlab.data import registry
from lmlab.data.formats import ChatRecord, FeedbackRecord, PreferenceRecord, detect_kind, to_record
from lmlab.data.loaders import load_records, load_rows, load_texts
from lmlab.data.stats import compare_counts, entropy_bits, field_counts, plot_rank_frequency, text_stats, word_counts
from lmlab.errors import DataError
from lmlab.runs import atomic_write_json


def _out() -> Console:
    # piped output (logs, CI) gets a wide fixed width instead of rich's 80-column fallback
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# -- list ---------------------------------------------------------------------------------------------
@dataclass
class DataListConfig:
    """`lmlab data list`: every named dataset, its kind, splits and where it resolves right now."""

    kind: str | None = opt(None, "show only datasets of this kind (text, chat, preference, feedback, labelled, benchmark)")


def list_datasets(cfg: DataListConfig) -> dict[str, Any]:
    table = Table(title=f"datasets ({registry.ENV}={registry.data_dir() or 'unset'})")
    for col in ("name", "kind", "splits", "resolves to", "description"):
        table.add_column(col, overflow="fold")
    out = {}
    for name, ds in registry.DATASETS.items():
        if cfg.kind and ds.kind != cfg.kind:
            continue
        where = registry.where_now(name)
        splits = registry.splits(name)
        out[name] = {"kind": ds.kind, "splits": splits, "where": where, "hub": ds.hub, "files": dict(ds.files)}
        table.add_row(name, ds.kind, ", ".join(splits), escape(where),
                      escape(ds.description))
    _out().print(table)
    return out


# -- show ---------------------------------------------------------------------------------------------
@dataclass
class DataShowConfig:
    """`lmlab data show NAME`: the first records of a dataset, as lmlab reads them."""

    name: str = opt(help="dataset name, file or hub id")
    n: int = opt(3, "records to show")
    split: str = opt("train", "split")
    kind: str | None = opt(None, "read as this kind; default: the registry's kind, or detected from the first row")
    columns: dict[str, str] = opt({}, "column mapping {canonical: source}")
    raw: bool = opt(False, "show raw rows (fields as stored) instead of records")
    max_chars: int = opt(400, "truncate each text to this many characters in the display")


def _clip(text: str, n: int) -> str:
    """Shortened and escaped, so brackets in the data are shown, not read as rich markup."""
    return escape(text if len(text) <= n else text[:n] + f" … (+{len(text) - n} chars)")


def _render(record: Any, n: int) -> str:
    if isinstance(record, ChatRecord):
        return "\n".join(f"[bold]{m.role}[/bold]: {_clip(m.content, n)}" for m in record.messages)
    if isinstance(record, (PreferenceRecord, FeedbackRecord)):
        lines = [f"[bold]{m.role}[/bold]: {_clip(m.content, n)}" for m in record.prompt]
        if isinstance(record, PreferenceRecord):
            lines += [f"[green]chosen[/green]: {_clip(record.chosen, n)}", f"[red]rejected[/red]: {_clip(record.rejected, n)}"]
        else:
            lines.append(f"[bold]completion[/bold] (label={record.label}): {_clip(record.completion, n)}")
        return "\n".join(lines)
    extra = f"  [dim](label={record.label})[/dim]" if hasattr(record, "label") else ""
    return _clip(record.text, n) + extra


def _kind_of(spec: str, split: str) -> str:
    if registry.is_registered(spec) and registry.get(spec).kind != "benchmark":
        return registry.get(spec).kind
    _, row = load_rows(spec, split=split, limit=1)[0]
    return detect_kind(row)


def show(cfg: DataShowConfig) -> dict[str, Any]:
    console = _out()
    if cfg.raw or (registry.is_registered(cfg.name) and registry.get(cfg.name).kind == "benchmark"):
        rows = load_rows(cfg.name, split=cfg.split, limit=cfg.n)
        for where, row in rows:
            console.rule(escape(where))
            for key, value in row.items():
                console.print(f"[bold]{escape(str(key))}[/bold]: {_clip(str(value), cfg.max_chars)}")
        return {"rows": [r for _, r in rows]}
    kind = cfg.kind or _kind_of(cfg.name, cfg.split)
    records = load_records(cfg.name, kind, columns=cfg.columns or None, split=cfg.split, limit=cfg.n)
    for i, rec in enumerate(records):
        console.rule(escape(f"{cfg.name} [{cfg.split}] #{i} ({kind})"))
        console.print(_render(rec, cfg.max_chars))
    return {"kind": kind, "records": [dataclasses.asdict(r) for r in records]}


# -- stats --------------------------------------------------------------------------------------------
@dataclass
class DataStatsConfig:
    """`lmlab data stats PATH_OR_NAME`: rows, fields, length distributions (words; tokens with tokenizer=)."""

    path: str = opt(help="dataset name, file or hub id")
    split: str = opt("train", "split")
    limit: int | None = opt(None, "read at most this many rows")
    tokenizer: str | None = opt(None, "tokenizer folder (or model folder) to also count tokens")
    columns: dict[str, str] = opt({}, "column mapping {canonical: source}")
    draws: int = opt(1000, "storyworld: records drawn to count distinct stories")
    out: str | None = opt(None, "folder to write metrics.json (optional)")


def _row_text(row: dict[str, Any], columns: dict[str, str] | None) -> str:
    """A row's text as lmlab reads it, or all its string fields joined (benchmark rows)."""
    try:
        return to_record(row, "text", columns=columns).text
    except DataError:
        return "\n".join(str(v) for v in row.values() if isinstance(v, str))


def stats(cfg: DataStatsConfig) -> dict[str, Any]:
    rows = load_rows(cfg.path, split=cfg.split, limit=cfg.limit)
    if not rows:
        raise DataError(f"{cfg.path} ({cfg.split}): no rows")
    reg_cols = dict(registry.get(cfg.path).columns) if registry.is_registered(cfg.path) else {}
    cols = {**reg_cols, **(cfg.columns or {})}
    texts = [_row_text(r, {k: v for k, v in cols.items() if v in r} or None) for _, r in rows]
    tok = None
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    result: dict[str, Any] = {"data": cfg.path, "split": cfg.split, "rows": len(rows),
                              "fields": field_counts([r for _, r in rows]), **text_stats(texts, tok)}
    result["entropy_bits_per_word"] = entropy_bits(word_counts(texts))
    if cfg.path.startswith("storyworld/"):
        result["storyworld"] = storyworld_stats(cfg.path, cfg.draws)
    _print_stats(result)
    if cfg.out:
        atomic_write_json(Path(cfg.out) / "metrics.json", result)
    return result


def storyworld_stats(spec: str, draws: int) -> dict[str, Any]:
    """Distinct texts among `draws` records and their vocabulary; plus the generator's own
    `world_stats()` when the storyworld module provides it."""
    texts = load_texts(spec, n=draws, limit=draws, clean={"drop_empty": False})
    counts = word_counts(texts)
    out: dict[str, Any] = {"draws": len(texts), "distinct": len(set(texts)),
                           "distinct_ratio": len(set(texts)) / max(len(texts), 1), "vocabulary": len(counts)}
    from lmlab.data import storyworld

    world_stats = getattr(storyworld, "world_stats", None)
    if callable(world_stats):
        out["world"] = world_stats()
    return out


def _print_stats(res: dict[str, Any]) -> None:
    console = _out()
    console.print(escape(f"{res['data']} [{res['split']}]: {res['rows']:,} rows, {res['vocabulary']:,} distinct words, "
                         f"{res['distinct_texts']:,} distinct texts"))
    table = Table()
    for col in ("length", "mean", "min", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for key in ("chars", "words", "tokens"):
        if key in res:
            s = res[key]
            table.add_row(key, f"{s['mean']:.1f}", *(f"{s[k]:.0f}" for k in ("min", "p50", "p90", "p99", "max")))
    console.print(table)
    console.print("fields: " + ", ".join(f"{k} ({v})" for k, v in res["fields"].items()))
    if "storyworld" in res:
        sw = res["storyworld"]
        console.print(f"storyworld: {sw['distinct']:,} distinct of {sw['draws']:,} draws, vocabulary {sw['vocabulary']:,}")
        if isinstance(sw.get("world"), dict):
            console.print("storyworld world_stats(): " + escape(", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sw["world"].items())))


# -- compare ------------------------------------------------------------------------------------------
@dataclass
class DataCompareConfig:
    """`lmlab data compare A B`: how B's words differ from A's (Zipf plot, OOV rate, JS divergence)."""

    a: str = opt(help="reference corpus A: dataset name, file or hub id")
    b: str = opt(help="corpus B, compared against A")
    out: str = opt("data-compare", "folder for metrics.json and rank_frequency.png")
    split_a: str = opt("train", "split of A")
    split_b: str = opt("train", "split of B")
    limit: int | None = opt(None, "read at most this many documents of each corpus")
    top_k: int = opt(20, "how many most-different words to list")


def compare(cfg: DataCompareConfig) -> dict[str, Any]:
    texts_a = load_texts(cfg.a, split=cfg.split_a, limit=cfg.limit)
    texts_b = load_texts(cfg.b, split=cfg.split_b, limit=cfg.limit)
    ca, cb = word_counts(texts_a), word_counts(texts_b)
    res = {"a": cfg.a, "b": cfg.b, "texts_a": len(texts_a), "texts_b": len(texts_b), **compare_counts(ca, cb, cfg.top_k)}
    res["entropy_a"], res["entropy_b"] = entropy_bits(ca), entropy_bits(cb)
    out = Path(cfg.out)
    label_a, label_b = (cfg.a, cfg.b) if cfg.a != cfg.b else (f"{cfg.a} [{cfg.split_a}]", f"{cfg.b} [{cfg.split_b}]")
    plot_rank_frequency({label_a: ca, label_b: cb}, out / "rank_frequency.png",
                        title=f"Rank–frequency: {label_a} vs {label_b}")
    atomic_write_json(out / "metrics.json", res)
    console = _out()
    console.print(
        f"A={cfg.a}: {res['words_a']:,} words, vocab {res['vocab_a']:,}   B={cfg.b}: {res['words_b']:,} words, "
        f"vocab {res['vocab_b']:,}\nOOV rate of B w.r.t. A: {res['oov_rate']:.2%} of words "
        f"({res['oov_type_rate']:.2%} of distinct words)   JS divergence: {res['jsd']:.4f} bits"
    )
    table = Table(title=f"top {cfg.top_k} words by |freq_B − freq_A|")
    for col in ("word", "freq A", "freq B", "B − A"):
        table.add_column(col, justify="right")
    for row in res["top_differences"]:
        table.add_row(escape(row["word"]), f"{row['freq_a']:.4%}", f"{row['freq_b']:.4%}", f"{row['diff']:+.4%}")
    console.print(table)
    console.print(f"wrote {out / 'metrics.json'} and {out / 'rank_frequency.png'}")
    return res
