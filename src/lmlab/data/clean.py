"""Text cleaning and length filters applied while loading (`clean={...}` in every loader).

Kept deliberately small: the steps courses and tutorials repeat by hand on Chinese and English
corpora (stray newlines, full-width spaces, runs of blanks, empty or overlong documents). Anything
fancier (dedup, language id, quality classifiers) belongs to a separate pass over the data.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from lmlab.config import opt

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
# WikiText section headings: " = Title = ", " = = Section = = " on a line of their own.
_HEADING = re.compile(r"^[ \t]*(=(?:[ \t]*=)*)[ \t]+\S.*?[ \t]+\1[ \t]*$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass
class CleanConfig:
    """Cleaning steps, in the order they run; filters apply to the cleaned text."""

    drop_headings: bool = opt(False, "remove WikiText-style heading lines ('= Title =', '= = Section = ='); a text that was only a heading is then empty")
    strip_newlines: bool = opt(False, "replace newlines inside a text by spaces (one-line documents)")
    fullwidth_spaces: bool = opt(True, "turn U+3000 ideographic spaces into ASCII spaces (common in Chinese corpora)")
    normalize_whitespace: bool = opt(False, "collapse runs of spaces/tabs to one space, runs of blank lines to one, strip ends")
    strip: bool = opt(True, "strip leading and trailing whitespace")
    drop_empty: bool = opt(True, "drop records whose text is empty after cleaning")
    min_chars: int = opt(0, "drop records with fewer characters than this (0 = keep all)")
    max_chars: int | None = opt(None, "drop records with more characters than this (None = keep all)")

    def validate(self) -> list[str]:
        problems = []
        if self.min_chars < 0:
            problems.append(f"clean.min_chars must be >= 0, got {self.min_chars}")
        if self.max_chars is not None and self.max_chars < max(self.min_chars, 1):
            problems.append(f"clean.max_chars ({self.max_chars}) must be >= clean.min_chars ({self.min_chars}) and >= 1")
        return problems


def as_clean_config(value: CleanConfig | dict[str, Any] | None) -> CleanConfig:
    """Accept a CleanConfig, a plain mapping (from YAML / key=value) or None (defaults)."""
    if isinstance(value, CleanConfig):
        return value
    from lmlab.config import build

    return build(CleanConfig, value or {}, where="clean")


def clean_text(text: str, cfg: CleanConfig) -> str:
    if cfg.drop_headings:
        text = _HEADING.sub("", text)
    if cfg.fullwidth_spaces:
        text = text.replace("\u3000", " ")
    if cfg.strip_newlines:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    if cfg.normalize_whitespace:
        text = _BLANK_LINES.sub("\n\n", text)
        text = _SPACES.sub(" ", text)
        text = "\n".join(line.strip() for line in text.split("\n"))
    if cfg.strip or cfg.normalize_whitespace:
        text = text.strip()
    return text


def keep(text: str, cfg: CleanConfig) -> bool:
    """Whether a (cleaned) text passes the filters."""
    n = len(text)
    if cfg.drop_empty and n == 0:
        return False
    if n < cfg.min_chars:
        return False
    return cfg.max_chars is None or n <= cfg.max_chars


def clean_record(record: Any, cfg: CleanConfig) -> Any | None:
    """Clean every text field of a record; None if it is filtered out.

    Empty replies or prompts make a record useless for training, so `drop_empty` drops a record
    when any of its texts is empty; length filters look at all of its text together.
    """
    from lmlab.data.formats import Message, record_text

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return clean_text(value, cfg)
        if isinstance(value, list):
            return [Message(m.role, clean_text(m.content, cfg)) for m in value]
        return value

    changes = {f.name: fix(getattr(record, f.name)) for f in dataclasses.fields(record) if f.name != "label"}
    record = dataclasses.replace(record, **changes)
    texts = [v for v in changes.values() if isinstance(v, str)]
    texts += [m.content for v in changes.values() if isinstance(v, list) for m in v]
    if cfg.drop_empty and any(not t for t in texts):
        return None
    return record if keep(record_text(record), cfg) else None
