"""Preference and feedback batches: masks, end of turn, row layout, counts of dropped pairs, KL partners."""
from __future__ import annotations

import pytest
import torch

from lmlab.data.alignment_batches import (
    EncodeOptions,
    FeedbackBatches,
    PolicyPairBatches,
    batch_units,
    encode_feedback,
    encode_policy_pairs,
    kl_partners,
)
from lmlab.data.formats import FeedbackRecord, Message, PreferenceRecord
from lmlab.errors import DataError


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def pref(prompt: str, chosen: str, rejected: str) -> PreferenceRecord:
    return PreferenceRecord([Message("user", prompt)], chosen, rejected)


def test_reply_and_end_of_turn_are_labelled_prompt_is_masked(tok):
    pairs, stats = encode_policy_pairs(tok, [pref("the cat ran", "tom found a ball", "mia was sad")], EncodeOptions())
    (p,) = pairs
    for row, reply in ((p.chosen, "tom found a ball"), (p.rejected, "mia was sad")):
        text = tok.decode(row.input_ids)
        assert text == f"<|im_start|>user\nthe cat ran<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n"
        trained = [t for t in row.labels if t != -100]
        assert tok.decode(trained) == f"{reply}<|im_end|>"  # the reply and the token that ends the turn
        first = row.labels.index(trained[0])
        assert tok.decode(row.input_ids[:first]).endswith("<|im_start|>assistant\n")  # everything before is masked
    assert stats.as_dict()["kept"] == 1 and stats.reply_tokens == sum(p.chosen.n_trained + p.rejected.n_trained for p in pairs)


def test_identical_and_truncated_away_pairs_are_counted_and_dropped(tok):
    head = tok.apply_chat_template([{"role": "user", "content": "the cat ran"}], tokenize=False, add_generation_prompt=True)
    prompt_len = len(tok(head, add_special_tokens=False)["input_ids"])
    recs = [pref("the cat ran", "same words", "same words"),
            pref("the cat ran " * 30, "a", "b"),  # the prompt alone fills max_length
            pref("the cat ran", "tom found a red ball and then the dog", "mia")]
    pairs, stats = encode_policy_pairs(tok, recs, EncodeOptions(max_length=prompt_len + 3))
    assert (stats.records, stats.kept, stats.identical, stats.dropped_truncated, stats.truncated) == (3, 1, 1, 1, 1)
    assert len(pairs[0].chosen.input_ids) == prompt_len + 3  # keep_start: the end of the long reply is cut
    with pytest.raises(DataError, match=r"no usable preference pair.*1 with identical"):
        encode_policy_pairs(tok, recs[:1], EncodeOptions(), source="prefs.jsonl")


def test_pair_batches_put_chosen_rows_first_and_carry_lengths_index_and_cache(tok):
    recs = [pref(f"the {w} ran", f"{w} found a ball", "no") for w in ("cat", "dog", "tom", "mia", "boy")]
    pairs, _ = encode_policy_pairs(tok, recs, EncodeOptions())
    src = PolicyPairBatches(pairs, 2, tok.pad_token_id, seed=0)
    assert len(src) == 3
    b = src.get(0)
    idx = b["index"].tolist()
    B = len(idx)
    assert b["input_ids"].shape[0] == 2 * B and batch_units(b) == B
    for k, i in enumerate(idx):
        n_c, n_r = len(pairs[i].chosen), len(pairs[i].rejected)
        assert b["input_ids"][k, :n_c].tolist() == pairs[i].chosen.input_ids
        assert b["input_ids"][B + k, :n_r].tolist() == pairs[i].rejected.input_ids
        assert b["lengths"][k] == pairs[i].chosen.n_trained and b["lengths"][B + k] == pairs[i].rejected.n_trained
        assert b["attention_mask"][k].sum() == n_c and (b["labels"][k, n_c:] == -100).all()
    assert torch.equal(src.get(0)["input_ids"], b["input_ids"])  # deterministic
    seen = sorted(i for j in range(len(src)) for i in src.get(j)["index"].tolist())
    assert seen == list(range(5))  # one epoch covers every pair once
    src.ref = torch.arange(10, dtype=torch.float32).view(5, 2)  # (chosen, rejected) = (2i, 2i+1)
    cached = src.get(0)["ref_logps"]
    assert cached.tolist() == [2.0 * i for i in idx] + [2.0 * i + 1 for i in idx]


def test_kl_partners_rotate_each_chunk_by_one():
    assert kl_partners(6, 3) == [2, 0, 1, 5, 3, 4]
    assert kl_partners(7, 3) == [2, 0, 1, 6, 3, 4, 5]  # a last chunk of one joins the previous chunk
    assert kl_partners(5, 2) == [1, 0, 4, 2, 3]
    assert all(p != j for j, p in enumerate(kl_partners(11, 4)))


def test_feedback_batches_hold_completions_then_kl_rows(tok):
    recs = [FeedbackRecord([Message("user", f"prompt {w}")], f"{w} found a ball", i % 2 == 0)
            for i, w in enumerate(("cat", "dog", "tom", "mia"))]
    exs, stats = encode_feedback(tok, recs, EncodeOptions(), batch_size=2)
    assert stats.kept == 4 and [e.desirable for e in exs] == [True, False, True, False]
    # example 1's KL row: its own prompt with example 0's completion (chunk [0, 1] rotated)
    assert tok.decode(exs[1].kl.input_ids) == tok.decode(exs[1].completion.input_ids).replace("dog found", "cat found")
    src = FeedbackBatches(exs, 2, tok.pad_token_id, seed=0)
    b = src.get(0)
    idx = b["index"].tolist()
    assert b["desirable"].tolist() == [exs[i].desirable for i in idx]
    for k, i in enumerate(idx):
        assert b["input_ids"][k, :len(exs[i].completion)].tolist() == exs[i].completion.input_ids
        assert b["input_ids"][2 + k, :len(exs[i].kl)].tolist() == exs[i].kl.input_ids


@pytest.mark.parametrize("stage", ["dpo", "kto"])
def test_group_by_length_cuts_padding_and_keeps_every_unit_once(tok, stage):
    """`group_by_length=true` on a preference stage: each pair once per epoch, fewer pad tokens."""
    from lmlab.config import build
    from lmlab.train.config import DPOConfig, KTOConfig
    from lmlab.train.preference import load_sources

    klass, data = (DPOConfig, "storyworld/prefs") if stage == "dpo" else (KTOConfig, "storyworld/kto")

    def epoch(grouped: bool) -> tuple[list[int], int]:
        cfg = build(klass, {"model": "x", "out": "x", "data": data, "limit": 96, "batch_size": 4,
                            "max_length": 4096, "val_fraction": 0.0, "group_by_length": grouped})
        src = load_sources(cfg, tok)[0]
        seen, pads = [], 0
        for i in range(len(src)):
            b = src.get(i)
            seen += b["index"].tolist()
            pads += int((b["attention_mask"] == 0).sum())
        return sorted(seen), pads

    (plain_seen, plain_pads), (grouped_seen, grouped_pads) = epoch(False), epoch(True)
    assert plain_seen == grouped_seen == list(range(len(plain_seen)))
    assert grouped_pads < 0.6 * plain_pads
