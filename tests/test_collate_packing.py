"""Padding collator, length grouping and padding-free packing (no attention across examples)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmlab.data.chat import IGNORE_INDEX
from lmlab.data.collate import PackedBatches, PaddedBatches, best_fit_decreasing, pack_collate, pad_collate


@dataclass
class Ex:
    input_ids: list[int]
    labels: list[int]


def make(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(10, 250, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2:]
        out.append(Ex(ids, labels))
    return out


def test_pad_collate_right_pads_with_masked_labels():
    a, b = Ex([5, 6, 7], [IGNORE_INDEX, 6, 7]), Ex([8], [8])
    batch = pad_collate([a, b], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


def test_pack_collate_positions_restart_and_first_token_unlabelled():
    a, b = Ex([5, 6, 7], [5, 6, 7]), Ex([8, 9], [8, 9])
    batch = pack_collate([[a, b], [b]], pad_id=1)
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [8, 9, 1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # the first token of each packed example is never a target (as when it is alone)
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 9, -100, -100, -100]]


def test_best_fit_decreasing_worked_example():
    # lengths 7,5,4,3,1 into capacity 8: 7→bin0 (room 1); 5→bin1 (3); 4→bin2 (4); 3→bin1 (0); 1→bin0 (0)
    assert best_fit_decreasing([4, 7, 1, 5, 3], 8) == [[1, 2], [3, 4], [0]]
    with pytest.raises(ValueError, match="capacity"):
        best_fit_decreasing([9], 8)


def _logits(model, **kw):
    with torch.no_grad():
        return model(**kw, use_cache=False).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tiny_qwen2_dir, attn):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, attn_implementation=attn).eval()
    examples = make([7, 12, 5, 9])
    src = PackedBatches(examples, batch_size=2, pad_id=1, max_length=20, seed=3)
    seen = 0
    for i in range(len(src)):
        batch = src.get(i)
        out = _logits(model, input_ids=batch["input_ids"], position_ids=batch["position_ids"])  # (B, T, V)
        for r, row in enumerate(src.rows[j] for j in src.plan(0)[i]):
            at = 0
            for k in row:
                ids = torch.tensor([examples[k].input_ids])
                alone = _logits(model, input_ids=ids)[0]  # (T, V)
                n = ids.shape[1]
                torch.testing.assert_close(out[r, at:at + n], alone, atol=1e-5, rtol=1e-5)
                at += n
                seen += 1
    assert seen == 4
    # Control: without the position resets the later examples DO see earlier ones.
    row = torch.tensor([examples[0].input_ids + examples[1].input_ids])
    leaky = _logits(model, input_ids=row)[0, 7:]
    alone = _logits(model, input_ids=torch.tensor([examples[1].input_ids]))[0]
    assert (leaky - alone).abs().max() > 1e-3


def test_packed_loss_equals_padded_loss(tiny_qwen2_dir):
    """Same examples, same total loss: packing changes layout, not the objective."""
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    examples = make([6, 11, 4])

    def token_loss_sum(batch):
        logits = model(**batch, use_cache=False).logits[:, :-1]  # (B, T-1, V)
        labels = batch["labels"][:, 1:]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")

    padded = {k: v for k, v in pad_collate(examples, pad_id=1).items()}
    packed = pack_collate([examples], pad_id=1)
    with torch.no_grad():
        torch.testing.assert_close(token_loss_sum(packed), token_loss_sum(padded), atol=1e-4, rtol=1e-5)


def test_batches_are_deterministic_per_seed_and_epoch():
    examples = make([3, 9, 4, 12, 6, 8, 2, 10, 5, 7, 11, 1])
    a = PaddedBatches(examples, 3, pad_id=1, seed=7, group_by_length=True, mega=2)
    b = PaddedBatches(examples, 3, pad_id=1, seed=7, group_by_length=True, mega=2)
    c = PaddedBatches(examples, 3, pad_id=1, seed=8, group_by_length=True, mega=2)
    assert len(a) == 4
    # random access in any order gives the same batches (what resume relies on)
    for i in [5, 0, 7, 2, 4]:
        assert torch.equal(a.get(i)["input_ids"], b.get(i)["input_ids"])
    assert a.plan(0) == b.plan(0) and a.plan(0) != a.plan(1) and a.plan(0) != c.plan(0)
    # every epoch visits every example exactly once
    for epoch in range(3):
        assert sorted(i for batch in a.plan(epoch) for i in batch) == list(range(12))


def test_length_grouping_reduces_padding():
    examples = make([2 + (i * 37) % 60 for i in range(64)])
    grouped = PaddedBatches(examples, 8, pad_id=1, seed=0, group_by_length=True, mega=8)
    plain = PaddedBatches(examples, 8, pad_id=1, seed=0)

    def pads(src):
        return sum(int((src.get(i)["attention_mask"] == 0).sum()) for i in range(len(src)))

    # within a mega-chunk of 64 sorted examples each batch holds neighbours in length
    assert pads(grouped) < 0.25 * pads(plain)
    for batch in grouped.plan(0):
        lens = [len(examples[i].input_ids) for i in batch]
        assert lens == sorted(lens, reverse=True)


def test_packed_source_covers_every_example_once_per_epoch():
    examples = make([5, 17, 3, 9, 12, 20, 1, 8])
    src = PackedBatches(examples, 2, pad_id=1, max_length=20, seed=1)
    for epoch in range(2):
        idx = [k for batch in src.plan(epoch) for r in batch for k in src.rows[r]]
        assert sorted(idx) == list(range(8))
    total_real = sum(int((src.get(i)["labels"] != IGNORE_INDEX).sum()) for i in range(len(src)))
    assert total_real == sum(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) for e in examples)
