"""Load records from a registry name, a local file or a hub dataset: one entry point for all data.

    from lmlab.data.loaders import load_records, load_texts
    load_records("storyworld/instruct", "chat", limit=100)
    load_records("data/qa.csv", "chat", columns={"prompt": "question", "completion": "answer"})
    load_texts("tinystories", split="validation")          # with LMLAB_DATA_DIR=/path/to/mirror

Local files: .txt (one document per blank-line-separated paragraph, or per line / per file),
.json (a list of objects, a dict of equal-length lists, or a dict holding the split's list),
.jsonl, .csv, .tsv, .parquet, and any of them gzipped (.gz). Every row carries its origin
(`file:LINE`) so a bad row is reported where a user can find it.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmlab.data import registry
from lmlab.data.clean import CleanConfig, as_clean_config, clean_record
from lmlab.data.formats import DivergentDialogue, Record, check_kind, record_text, to_record
from lmlab.errors import DataError

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".parquet")
TEXT_UNITS = ("paragraph", "line", "file")
Row = tuple[str, dict[str, Any]]  # (where, raw row)


# -- files -------------------------------------------------------------------------------------------
def file_format(path: Path) -> tuple[str, bool]:
    """('.jsonl', gzipped?) from a file name such as data.jsonl.gz."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise DataError(
            f"{path}: unknown file type '{Path(name).suffix or name}'; use one of "
            f"{', '.join(SUFFIXES)} (optionally .gz)"
        )
    return suffix, gz


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    # utf-8-sig: a byte-order mark (Excel's CSV export) would otherwise stick to the first field name
    enc = "utf-8-sig"
    return gzip.open(path, "rt", encoding=enc, newline="") if gz else open(path, encoding=enc, newline="")


def _guard(path: Path, rows: Iterator[Row]) -> Iterator[Row]:
    """Turn decoding and I/O failures in the middle of a file into DataErrors that name it."""
    try:
        yield from rows
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it, e.g. `iconv -f GBK -t UTF-8`") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {exc}") from None


def _read_text(path: Path, gz: bool) -> str:
    try:
        with _open_text(path, gz) as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it, e.g. `iconv -f GBK -t UTF-8`") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


def read_txt(path: Path, gz: bool, text_unit: str = "paragraph") -> Iterator[Row]:
    if text_unit not in TEXT_UNITS:
        raise DataError(f"text_unit must be one of {', '.join(TEXT_UNITS)}, got '{text_unit}'")
    text = _read_text(path, gz).replace("\r\n", "\n")
    if text_unit == "file":
        yield f"{path}:1", {"text": text}
        return
    lines = text.split("\n")
    if text_unit == "line":
        for i, line in enumerate(lines, 1):
            if line.strip():
                yield f"{path}:{i}", {"text": line}
        return
    start, buf = 0, []
    for i, line in enumerate(lines, 1):
        if line.strip():
            if not buf:
                start = i
            buf.append(line)
        elif buf:
            yield f"{path}:{start}", {"text": "\n".join(buf)}
            buf = []
    if buf:
        yield f"{path}:{start}", {"text": "\n".join(buf)}


def read_jsonl(path: Path, gz: bool) -> Iterator[Row]:
    with _open_text(path, gz) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: invalid JSON (column {exc.colno}): {exc.msg}; each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}")
            yield f"{path}:{i}", row


def read_json(path: Path, gz: bool, split: str = "train") -> Iterator[Row]:
    text = _read_text(path, gz)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (one object per line? name the file .jsonl)" if exc.msg == "Extra data" else ""
        raise DataError(f"{path}:{exc.lineno}: invalid JSON (column {exc.colno}): {exc.msg}{hint}") from None
    if isinstance(data, dict):
        if isinstance(data.get(split), list):  # {"train": [...], "test": [...]}
            data = data[split]
        elif data and all(isinstance(v, list) for v in data.values()):  # dict of columns
            lengths = {k: len(v) for k, v in data.items()}
            if len(set(lengths.values())) != 1:
                raise DataError(f"{path}: a dict of columns needs equal lengths, got {lengths}")
            keys = list(data)
            data = [dict(zip(keys, vals, strict=True)) for vals in zip(*data.values(), strict=True)]
        else:
            data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i}: expected an object, got {type(row).__name__} {str(row)[:60]!r}")
        yield f"{path}: item {i}", row


def read_csv(path: Path, gz: bool, delimiter: str) -> Iterator[Row]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open_text(path, gz) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        start = reader.line_num + 1
        for values in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not values or not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{where}: expected {len(header)} fields ({', '.join(header)}), found {len(values)}; "
                    "a field with a comma or newline must be quoted"
                )
            yield where, dict(zip(header, values, strict=True))


def read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet: {exc}") from None
    for i, row in enumerate(rows):
        yield f"{path}: row {i}", row


def read_rows(path: str | Path, *, split: str = "train", text_unit: str = "paragraph") -> Iterator[Row]:
    """Raw rows of a local file, or of every data file in a folder (sorted, with a 'source_file' field)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: empty folder")
        for f in files:
            for where, row in read_rows(f, split=split, text_unit=text_unit):
                yield where, {**row, "source_file": f.name}
        return
    suffix, gz = file_format(path)
    if suffix == ".txt":
        rows = read_txt(path, gz, text_unit)
    elif suffix == ".jsonl":
        rows = read_jsonl(path, gz)
    elif suffix == ".json":
        rows = read_json(path, gz, split)
    elif suffix in (".csv", ".tsv"):
        rows = read_csv(path, gz, "," if suffix == ".csv" else "\t")
    else:
        if gz:
            raise DataError(f"{path}: gzipped parquet is not supported; parquet is already compressed")
        rows = read_parquet(path)
    yield from _guard(path, rows)


# -- hub --------------------------------------------------------------------------------------------
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+)?$")


def read_hub(hub_id: str, split: str, data_dir: str | None = None) -> Iterator[Row]:
    """Rows of a hub dataset ('owner/name' or 'owner/name:config', optionally one subset folder)."""
    name, _, config = hub_id.partition(":")
    try:
        import datasets

        subset = {"data_dir": data_dir} if data_dir else {}
        ds = datasets.load_dataset(name, config or None, split=split, **subset)
    except Exception as exc:  # offline, unknown id, missing split: all end the same way for the user
        raise DataError(
            f"cannot load hub dataset '{hub_id}' (split {split}): {type(exc).__name__}: {str(exc)[:300]}. "
            f"Offline? Set {registry.ENV}=<path to a mirror> for a named dataset, or pass a local file "
            "(.jsonl/.json/.csv/.tsv/.parquet/.txt)"
        ) from None
    for i, row in enumerate(ds):
        yield f"{hub_id}[{split}] row {i}", dict(row)


# -- storyworld ---------------------------------------------------------------------------------------
def read_storyworld(task: str, split: str, n: int | None, seed: int) -> Iterator[Row]:
    from lmlab.data import storyworld

    default = registry.STORYWORLD_SIZES[task]
    count = n if n is not None else (default if split == "train" else max(1, default // 10))
    rows = storyworld.make_dataset(task, count, seed + registry.SPLIT_SEED_OFFSET[split])
    for i, row in enumerate(rows):
        yield f"storyworld/{task}[{split}] #{i}", row


# -- entry points -------------------------------------------------------------------------------------
def split_spec(spec: str | Path, split: str) -> tuple[str, str]:
    """`"ptb@test"` → `("ptb", "test")`; a spec without `@` (or an existing path) keeps `split`."""
    text = str(spec)
    if "@" in text and not Path(text).expanduser().exists():
        name, _, at = text.rpartition("@")
        if name and at:
            return name, at
    return text, split


def heldout_split(spec: str | Path) -> str:
    """The split to evaluate a dataset on: `NAME@SPLIT`'s split, else a registered set's
    'validation' (then 'test') split, else 'train' (a plain file has only one)."""
    name, split = split_spec(spec, "")
    if split:
        return split
    if registry.is_registered(name):
        splits = registry.splits(name)
        for held_out in ("validation", "test"):
            if held_out in splits:
                return held_out
    return "train"


def iter_rows(
    spec: str | Path, *, split: str = "train", text_unit: str | None = None, n: int | None = None, seed: int = 0,
) -> tuple[Iterator[Row], dict[str, str], str | None]:
    """(rows, the registry's column mapping, the registry's kind) for any spec.

    `NAME@SPLIT` picks a split of a named or hub set (`ptb@validation`), overriding `split`, so
    one key can say "train on this split" wherever a dataset is named.
    """
    text, split = split_spec(spec, split)
    path = Path(text).expanduser()
    if path.exists():
        return read_rows(path, split=split, text_unit=text_unit or "paragraph"), {}, None
    if registry.is_registered(text):
        ds = registry.get(text)
        src = registry.resolve(text, split)
        if src.kind == "storyworld":
            return read_storyworld(src.task, split, n, seed), {}, ds.kind
        if src.kind == "mirror":
            return read_rows(src.path, split=split, text_unit=text_unit or ds.text_unit), dict(ds.columns), ds.kind
        return read_hub(src.hub, split, src.hub_dir), {}, ds.kind
    if text.startswith("storyworld/") or ("/" not in text and not Path(text).suffix):
        registry.get(text)  # raises: unknown name, with the closest one
    if Path(text.removesuffix(".gz")).suffix.lower() in SUFFIXES or text.startswith((".", "/", "~")):
        raise DataError(f"{text}: no such file")
    if not HUB_ID.match(text):
        raise DataError(f"'{text}' is neither a file, a registered dataset (`lmlab data list`), nor a hub id owner/name")
    return read_hub(text, split), {}, None


def load_rows(
    spec: str | Path, *, split: str = "train", limit: int | None = None, text_unit: str | None = None,
    n: int | None = None, seed: int = 0,
) -> list[Row]:
    """Raw (where, row) pairs, for `lmlab data show/stats` and eval code reading benchmark files."""
    rows, _, _ = _limited_rows(spec, split=split, text_unit=text_unit, n=n, seed=seed, limit=limit)
    out = []
    for item in rows:
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def _limited_rows(
    spec: str | Path, *, split: str, text_unit: str | None, n: int | None, seed: int, limit: int | None
) -> tuple[Iterator[Row], dict[str, str], str | None]:
    """`iter_rows` for a reader that stops after `limit` items: storyworld, given no `n`, then
    generates only `limit` records instead of its registry size."""
    if n is None and limit is not None and _is_storyworld(spec):
        n = limit
    return iter_rows(spec, split=split, text_unit=text_unit, n=n, seed=seed)


def _is_storyworld(spec: str | Path) -> bool:
    return str(spec).startswith("storyworld/")


def load_records(
    spec: str | Path,
    kind: str,
    *,
    columns: dict[str, str] | None = None,
    split: str = "train",
    limit: int | None = None,
    clean: CleanConfig | dict[str, Any] | None = None,
    text_unit: str | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[Record]:
    """Records of `kind` from `spec` (registry name, local file or hub id), cleaned and filtered.

    `columns` ({canonical: source}) overrides the registry's own mapping. For storyworld, `n` and
    `seed` choose how many records and which draw (default: the registry's size, seed 0); `limit`
    alone also bounds how many are generated.
    """
    check_kind(kind)
    cfg = as_clean_config(clean)
    rows, reg_columns, _ = _limited_rows(spec, split=split, text_unit=text_unit, n=n, seed=seed, limit=limit)
    out: list[Record] = []
    seen = dropped = 0
    divergent: list[str] = []
    for where, row in rows:
        seen += 1
        mapping = {k: v for k, v in reg_columns.items() if v in row}  # the registry's mapping is best-effort
        mapping.update(columns or {})  # the user's is strict: a missing source field is an error
        try:
            record = clean_record(to_record(row, kind, columns=mapping, where=where), cfg)
        except DivergentDialogue:
            divergent.append(where)
            continue
        if record is None:
            dropped += 1
            continue
        out.append(record)
        if limit is not None and len(out) >= limit:
            break
    if divergent:
        from lmlab.progress import log

        log(f"{spec} ({split}): skipped {len(divergent)} of {seen} dialogue pairs whose chosen and rejected differ "
            f"before the final assistant turn (first: {divergent[0]})")
    if not out:
        why = f"all {seen} rows were dropped by the cleaning filters ({_describe(cfg)})" if seen else "it has no rows"
        if divergent and len(divergent) == seen:
            why = f"every row's chosen and rejected differ before the final assistant turn (first: {divergent[0]})"
        raise DataError(f"{spec} ({split}): no {kind} records: {why}")
    return out


def _describe(cfg: CleanConfig) -> str:
    return f"drop_empty={cfg.drop_empty}, min_chars={cfg.min_chars}, max_chars={cfg.max_chars}"


def load_texts(
    spec: str | Path,
    *,
    columns: dict[str, str] | None = None,
    split: str = "train",
    limit: int | None = None,
    clean: CleanConfig | dict[str, Any] | None = None,
    text_unit: str | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Plain texts (documents) of any dataset: text rows as they are, chats and pairs joined."""
    records = load_records(spec, "text", columns=columns, split=split, limit=limit, clean=clean,
                           text_unit=text_unit, n=n, seed=seed)
    return [record_text(r) for r in records]
