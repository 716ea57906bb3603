"""Helpers the eval commands share: model lists and labels, devices, result tables.

Eval commands take several models at once (`model=A,B`) and print one column per model, so a
before/after comparison is one command. Tables are printed with rich and also returned as
Markdown, which the commands write beside `metrics.json` (`table.md`) for reports and docs.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """`"a,b"` or `["a", "b"]` → `["a", "b"]` (blank items dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [v.strip() for v in items if v.strip()]


def model_labels(specs: Sequence[str]) -> list[str]:
    """Short, unique column names for model specs: `runs/quickstart/sft` → `sft`.

    A trailing `final` or `checkpoints/step-N` is folded into the run's name so that two runs'
    `final/` folders do not both become "final". Labels fall back to the full spec when short
    names would collide.
    """
    def short(spec: str, depth: int) -> str:
        parts = [p for p in Path(spec.rstrip("/")).parts if p not in (".", "")]
        if parts and parts[-1] == "final":
            parts = parts[:-1]
        return "/".join(parts[-depth:]) if parts else spec

    for depth in (1, 2, 3):
        labels = [short(s, depth) for s in specs]
        if len(set(labels)) == len(labels):
            return labels
    return list(specs)


def load(spec: str, *, device: str = "auto", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode through `lmlab.models.load_model`; an encoder-decoder
    checkpoint comes back as a seq2seq model (check `model.config.is_encoder_decoder`)."""
    from lmlab.models.load import load_model

    model, tokenizer = load_model(spec, device=device, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print a table on stdout (always: it is the command's result) and return it as Markdown."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(str(name), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(c) for c in row))
    import sys

    # piped to a file or a log, rich would wrap at 80 columns and split the numbers across lines
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    return f"### {title}\n\n" + markdown_table(header, rows)
