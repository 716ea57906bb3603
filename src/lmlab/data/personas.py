"""Personas: a named system prompt plus the keywords that mark an in-character reply.

A persona is a small YAML file::

    name: pirate
    description: a cheerful pirate captain
    system: You are Captain Salt, a cheerful pirate ...
    keywords: [arr, matey, ship, treasure]

Built-in presets live in `lmlab/data/personas/*.yaml` (`lmlab chat MODEL persona=pirate`); any
other name is read as a path to such a file. The keywords make persona adherence measurable:
`lmlab eval persona` reports how often replies contain at least one of them (`keyword_hit`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmlab.config import closest
from lmlab.errors import ConfigError

BUILTIN_DIR = Path(__file__).parent / "personas"
_KEYS = ("name", "description", "system", "keywords")


@dataclass
class Persona:
    name: str
    system: str
    keywords: list[str] = field(default_factory=list)
    description: str = ""


def builtin_personas() -> list[str]:
    """Names of the presets shipped with lmlab, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def _parse(path: Path) -> Persona:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid persona YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a persona file is a mapping with keys {', '.join(_KEYS)}")
    problems = []
    for key in data:
        if key not in _KEYS:
            hint = closest(str(key), _KEYS)
            problems.append(f"{path}: unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))
    system = data.get("system")
    if not isinstance(system, str) or not system.strip():
        problems.append(f"{path}: 'system' must be a non-empty text (the system prompt), got {system!r}")
    keywords = data.get("keywords", [])
    if isinstance(keywords, str):
        keywords = [k.strip() for k in keywords.split(",")]
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
        problems.append(f"{path}: 'keywords' must be a list of words or phrases, got {keywords!r}")
    if problems:
        raise ConfigError("\n".join(problems))
    return Persona(
        name=str(data.get("name") or path.stem),
        system=system.strip(),
        keywords=[k.strip() for k in keywords],
        description=str(data.get("description", "")),
    )


def load_persona(name_or_path: str) -> Persona:
    """A built-in persona by name, or a persona YAML file by path."""
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if builtin.exists():
        return _parse(builtin)
    path = Path(name_or_path)
    if path.is_file():
        return _parse(path)
    hint = closest(name_or_path, builtin_personas())
    raise ConfigError(
        f"unknown persona '{name_or_path}'" + (f"; did you mean '{hint}'?" if hint else "")
        + f" (built-in: {', '.join(builtin_personas())}; or give a path to a persona YAML file)"
    )


def keyword_hits(text: str, keywords: list[str]) -> list[str]:
    """The keywords found in `text`: case-insensitive, whole words (`sea` does not match `season`)."""
    low = text.lower()
    return [k for k in keywords if re.search(r"(?<!\w)" + re.escape(k.lower()) + r"(?!\w)", low)]


def keyword_hit(text: str, keywords: list[str]) -> bool:
    """Whether a reply is in character: at least one persona keyword appears."""
    return bool(keyword_hits(text, keywords))
