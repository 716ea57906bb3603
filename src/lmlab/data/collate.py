"""Batches for SFT: padding collator, length-grouped batching, padding-free packing.

All three are `BatchSource`s (see `lmlab.train.trainer`): `len()` micro-batches per epoch and a
deterministic `get(i)` for micro-batch `i` counted across epochs, so a resumed run sees exactly
the batches an uninterrupted one would. The order of epoch `e` is a permutation seeded by
`(seed, e)`.

Packing (`PackedBatches`): examples are placed into rows of at most `max_length` tokens by
best-fit decreasing (done once; row order is reshuffled every epoch). Each example keeps its own
`position_ids` (restarting at 0) and the batch carries *no* `attention_mask`; transformers then
derives a block-diagonal causal mask from the position resets
(`masking_utils.find_packed_sequence_indices`), so no token attends across examples. Row tails are
filled with a pad segment whose positions also restart at 0: it only attends to itself and has
labels -100. The detection is skipped when a KV cache exists, so the model must run with
`use_cache=False` (the SFT stage sets it). The first token of every packed example gets label
-100: alone it would never be a target (nothing precedes it), packed it would be predicted from
the previous example.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from lmlab.data.chat import IGNORE_INDEX


class Example(Protocol):
    input_ids: list[int]
    labels: list[int]


def pad_collate(examples: Sequence[Example], pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels (-100 on pads)."""
    width = max(len(e.input_ids) for e in examples)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_collate(rows: Sequence[Sequence[Example]], pad_id: int) -> dict[str, Tensor]:
    """Rows of several examples each → input_ids, labels, position_ids (B, T); no attention_mask."""
    lengths = [sum(len(e.input_ids) for e in row) for row in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    pos = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            labels[r, at] = IGNORE_INDEX
            pos[r, at:at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)  # the pad tail is its own segment
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin indices of `lengths` into bins of total <= capacity (longest first, tightest bin).

    Deterministic: ties break by index (of the example, then of the bin). The open bins are kept
    sorted by (room left, bin index), so the tightest bin that fits is one bisection away:
    O(n log n) comparisons (plus list moves done in C) instead of a scan over every bin per
    example, which took minutes at 10^5 examples.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), ascending
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}; truncate first")
        k = bisect.bisect_left(free, (n, -1))  # first bin with room >= n: the tightest, lowest index among equals
        if k == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
        else:
            room, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (room - n, b))
    return bins


def _epoch_rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


class _EpochSource:
    """Shared bookkeeping: a per-epoch plan of micro-batches, cached for the current epoch."""

    def __init__(self, seed: int):
        self.seed = seed
        self._epoch = -1
        self._plan: list[list[int]] = []

    def plan(self, epoch: int) -> list[list[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_indices(self, index: int) -> list[int]:
        if index < 0:
            raise IndexError(index)
        epoch, j = divmod(index, len(self))
        if epoch != self._epoch:
            self._plan, self._epoch = self.plan(epoch), epoch
        return self._plan[j]


class PaddedBatches(_EpochSource):
    """Shuffled, right-padded micro-batches; with `group_by_length`, similar lengths together.

    Length grouping (as in HF's LengthGroupedSampler): shuffle, cut into mega-chunks of
    `mega × batch_size` examples, sort each chunk by length, cut into batches, then shuffle the
    batch order so long and short batches alternate. Less padding, still random.
    """

    def __init__(
        self, examples: Sequence[Example], batch_size: int, pad_id: int, *, seed: int = 0,
        group_by_length: bool = False, mega: int = 50, drop_last: bool = False, pad_to_multiple_of: int | None = None,
    ):
        super().__init__(seed)
        self.pad_to_multiple_of = pad_to_multiple_of  # bucketed widths: fewer distinct shapes (GPU kernels, compile)
        if not examples:
            raise ValueError("no examples")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.group_by_length = group_by_length
        self.mega = mega
        n = len(self.examples)
        self._len = n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)

    def __len__(self) -> int:
        return self._len

    def plan(self, epoch: int) -> list[list[int]]:
        rng = _epoch_rng(self.seed, epoch)
        order = list(range(len(self.examples)))
        rng.shuffle(order)
        if self.group_by_length:
            chunk = self.mega * self.batch_size
            grouped: list[int] = []
            for s in range(0, len(order), chunk):
                part = order[s:s + chunk]
                grouped.extend(sorted(part, key=lambda i: -len(self.examples[i].input_ids)))
            order = grouped
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)][: self._len]
        if self.group_by_length:
            rng.shuffle(batches)
        return batches

    def get(self, index: int) -> dict[str, Tensor]:
        return pad_collate([self.examples[i] for i in self._batch_indices(index)], self.pad_id, self.pad_to_multiple_of)


class PackedBatches(_EpochSource):
    """Micro-batches of `batch_size` packed rows of <= `max_length` tokens each (see module doc)."""

    def __init__(self, examples: Sequence[Example], batch_size: int, pad_id: int, max_length: int, *, seed: int = 0):
        super().__init__(seed)
        if not examples:
            raise ValueError("no examples")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.rows = best_fit_decreasing([len(e.input_ids) for e in self.examples], max_length)
        self._len = -(-len(self.rows) // batch_size)

    def __len__(self) -> int:
        return self._len

    def plan(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.rows)))
        _epoch_rng(self.seed, epoch).shuffle(order)
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def get(self, index: int) -> dict[str, Tensor]:
        rows = [[self.examples[i] for i in self.rows[r]] for r in self._batch_indices(index)]
        return pack_collate(rows, self.pad_id)

