"""Typed configs from YAML and `key=value` overrides, validated before any work starts.

Every stage and command is configured by a dataclass whose fields are the canonical keys of the
command-line contract (`model`, `data`, `max_steps`, `lora.rank` ...). Each field carries its help
text in `metadata["help"]`, so `--help`, the docs and error messages come from one place.

`build(cls, mapping, where)` turns a plain mapping (from YAML or overrides) into a dataclass and
reports *every* problem at once: unknown keys with the closest valid name (difflib), values of the
wrong type, missing required values.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmlab.errors import ConfigError

T = TypeVar("T")
MISSING = dataclasses.MISSING


def opt(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with help text; mutable defaults are wrapped in a factory."""
    meta = {"help": help}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def fixed(default: Any) -> Any:
    """Pin an inherited field: the value stays `default` and the key is not a key of this config.

    A command config that extends a shared one (say `DecodingConfig`) but must not take one of its
    keys redeclares it as `beams: int = fixed(1)`: `build` refuses it as an unknown key, `--help`
    does not list it, and the dataclass constructor does not take it.
    """
    return opt(default, init=False)


def key_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of dataclass `cls` that are keys (every field but those pinned with `fixed`)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]


def parse_value(text: str) -> Any:
    """Parse an override value with YAML scalars rules (`16`→int, `true`→bool, `[a,b]`→list).

    Comma lists without brackets stay strings (`model=a,b`); commands that take several values
    split them themselves, so a comma inside a prompt is never mangled.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None:
        return None if text.strip() in ("null", "~") else text
    if isinstance(value, dict) and not text.lstrip().startswith("{"):
        return text  # "a: b" typed on the command line is text, not a mapping
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lora.rank=16", "lr=3e-4"]` → `{"lora": {"rank": 16}, "lr": 0.0003}`."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r} (for example: max_steps=100)")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"empty key in {item!r}")
        set_dotted(out, key, parse_value(raw))
    return out


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the intermediate dicts."""
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            target[part] = nxt
        target = nxt
    target[parts[-1]] = value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (overrides win)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def closest(name: str, choices: typing.Iterable[str]) -> str | None:
    """The closest valid name, for 'did you mean' hints."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_key_message(key: str, choices: typing.Iterable[str], where: str) -> str:
    prefix, _, last = key.rpartition(".")
    hint = closest(last, choices)
    full = f"{prefix}.{hint}" if prefix and hint else hint
    tail = f"; did you mean '{full}'?" if hint else f"; valid keys: {', '.join(sorted(choices))}"
    return f"{where}: unknown key '{key}'{tail}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str, errors: list[str]) -> Any:
    """Convert `value` to annotation `tp`, appending a message to `errors` when impossible."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for cand in inner:
            sub: list[str] = []
            out = _coerce(value, cand, key, where, sub)
            if not sub:
                return out
        errors.append(f"{where}: '{key}' must be {' or '.join(_type_name(a) for a in inner)}, got {value!r}")
        return value
    if origin is typing.Literal:
        if value in args:
            return value
        hint = closest(str(value), [str(a) for a in args])
        extra = f"; did you mean '{hint}'?" if hint else ""
        errors.append(f"{where}: '{key}' must be one of {', '.join(map(str, args))}, got {value!r}{extra}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            errors.append(f"{where}: '{key}' must be a mapping of {', '.join(key_fields(tp))}, got {value!r}")
            return value
        return _build(tp, value, f"{key}.", where, errors)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, key, where, errors) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: '{key}' must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        errors.append(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        errors.append(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        errors.append(f"{where}: '{key}' must be a number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        errors.append(f"{where}: '{key}' must be text, got {value!r}")
        return value
    return value


def _build(cls: type[T], mapping: dict[str, Any], prefix: str, where: str, errors: list[str]) -> T:
    fields = key_fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in fields:
            errors.append(unknown_key_message(prefix + key, fields, where))
            continue
        kwargs[key] = _coerce(value, hints[key], prefix + key, where, errors)
    for name, f in fields.items():
        if name not in kwargs and f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            errors.append(f"{where}: missing required key '{prefix + name}' ({f.metadata.get('help', '')})")
    if errors:
        return None  # type: ignore[return-value]
    return cls(**kwargs)


def build(cls: type[T], mapping: dict[str, Any] | None, where: str = "config") -> T:
    """Validate `mapping` against dataclass `cls`, raising one ConfigError listing every problem."""
    errors: list[str] = []
    obj = _build(cls, dict(mapping or {}), "", where, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    check = getattr(obj, "validate", None)
    if check is not None:
        problems = check()
        if problems:
            raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain, YAML-safe dict (for resolved configs in run folders)."""
    return dataclasses.asdict(obj)


def help_text(cls: type) -> str:
    """One line per key, nested dataclasses with dotted names: the body of `--help`."""
    lines: list[str] = []
    hints = typing.get_type_hints(cls)

    def walk(klass: type, prefix: str) -> None:
        for f in key_fields(klass).values():
            tp = typing.get_type_hints(klass)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, prefix + f.name + ".")
                continue
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = "(required)"
            lines.append(f"  {prefix + f.name:<28} {f.metadata.get('help', '')} [default: {default}]")

    del hints
    walk(cls, "")
    return "\n".join(lines)


def route_extra_keys(klass: type, mapping: dict[str, Any]) -> dict[str, Any]:
    """For configs with EXTRA_KEYS_FIELD, move unknown top-level keys into that field."""
    extra_field = getattr(klass, "EXTRA_KEYS_FIELD", None)
    if not extra_field:
        return mapping
    names = set(key_fields(klass))
    out = {k: v for k, v in mapping.items() if k in names}
    extra = {k: v for k, v in mapping.items() if k not in names}
    if extra:
        out[extra_field] = merge(out.get(extra_field) or {}, extra)
    return out
