"""Best-fit decreasing (packing) against its definition, written as the plain scan over every bin."""
from __future__ import annotations

import random

import pytest

from lmlab.data.collate import best_fit_decreasing


def reference(lengths: list[int], capacity: int) -> list[list[int]]:
    """Longest example first (ties: lower index), into the open bin with the least room that fits
    it (ties: lower bin index), else a new bin."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [b for b in range(len(bins)) if room[b] >= lengths[i]]
        if fits:
            b = min(fits, key=lambda b: (room[b], b))
            bins[b].append(i)
            room[b] -= lengths[i]
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


@pytest.mark.parametrize("seed", range(6))
def test_same_bins_as_the_definition(seed):
    rng = random.Random(seed)
    capacity = rng.choice([8, 64, 384])
    # many equal lengths and exact fits, where tie-breaking decides
    lengths = [rng.choice([1, capacity // 4, capacity // 2, capacity - 1, capacity, rng.randint(1, capacity)]) for _ in range(300)]
    got = best_fit_decreasing(lengths, capacity)
    assert got == reference(lengths, capacity)
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in got)


def test_zero_length_examples_go_to_the_tightest_bin():
    assert best_fit_decreasing([3, 0, 5], 8) == reference([3, 0, 5], 8) == [[2, 0, 1]]


def test_scales_to_a_large_set():
    rng = random.Random(0)
    lengths = [rng.randint(20, 300) for _ in range(50_000)]
    bins = best_fit_decreasing(lengths, 384)  # the bin scan took minutes here; now well under a second of work
    assert sum(len(b) for b in bins) == 50_000
    assert all(sum(lengths[i] for i in b) <= 384 for b in bins)
