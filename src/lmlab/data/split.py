"""Deterministic train/validation split by a stable hash of each record's content.

A record's side depends only on its own content and the seed — not on its position, the order of
the file, the other records, or the Python process (`hash()` is salted per process; blake2b is
not). So adding data never moves an old validation example into training, and duplicates always
land on the same side (no leak from train into validation through repeated examples).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def content_key(record: Any) -> str:
    """A canonical text of a record (dataclass, dict or string) to hash."""
    if isinstance(record, str):
        return record
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        record = dataclasses.asdict(record)
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)


def unit_hash(record: Any, seed: int = 0) -> float:
    """A number in [0, 1) fixed by the record's content and the seed."""
    digest = hashlib.blake2b(f"{seed}\x00{content_key(record)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_train_val(records: Sequence[T], val_fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, val), each in the input order; a record goes to val when its hash < val_fraction.

    With val_fraction > 0 and at least two records, val is never empty: if no hash falls below the
    threshold (tiny sets), the record with the smallest hash (and its duplicates) goes to val.
    """
    if not 0 <= val_fraction < 1:
        from lmlab.errors import ConfigError

        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    hashes = [unit_hash(r, seed) for r in records]
    in_val = [h < val_fraction for h in hashes]
    if val_fraction > 0 and len(records) >= 2 and not any(in_val):
        low = min(hashes)
        in_val = [h == low for h in hashes]
        if all(in_val):  # every record identical: a validation set would only copy training
            in_val = [False] * len(records)
    train = [r for r, v in zip(records, in_val, strict=True) if not v]
    val = [r for r, v in zip(records, in_val, strict=True) if v]
    return train, val
