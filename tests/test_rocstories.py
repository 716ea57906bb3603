"""ROCStories / Story Cloze rows read as stories and as continuation data, no hand conversion (issue 14)."""
from __future__ import annotations

import csv

import pytest

from lmlab.data.formats import to_record
from lmlab.errors import DataError

ROW = {"InputSentence1": "Tom had a red kite.", "InputSentence2": "He took it to the park.",
       "InputSentence3": "The wind was strong.", "InputSentence4": "The kite flew high.",
       "RandomFifthSentenceQuiz1": "Tom was sad.", "RandomFifthSentenceQuiz2": "Tom laughed with joy.",
       "AnswerRightEnding": "2"}


def test_story_cloze_row_is_a_story_and_a_continuation():
    text = to_record(ROW, "text", where="r:2")
    assert text.text == ("Tom had a red kite. He took it to the park. The wind was strong. The kite flew high. "
                         "Tom laughed with joy.")  # the right ending, not the wrong one
    chat = to_record(ROW, "chat", where="r:2")
    assert [(m.role, m.content) for m in chat.messages] == [
        ("user", "Tom had a red kite."),
        ("assistant", "He took it to the park. The wind was strong. The kite flew high. Tom laughed with joy.")]
    proper = {f"sentence{i}": f"s{i}." for i in range(1, 6)} | {"storytitle": "t"}
    assert to_record(proper, "chat").messages[1].content == "s2. s3. s4. s5."
    with pytest.raises(DataError, match="r:7: AnswerRightEnding must be 1 or 2, got '3'"):
        to_record({**ROW, "AnswerRightEnding": "3"}, "chat", where="r:7")


def test_story_cloze_csv_loads_as_sft_data(tmp_path):
    from lmlab.data.loaders import load_records

    path = tmp_path / "cloze.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROW))
        w.writeheader()
        w.writerow(ROW)
        w.writerow({**ROW, "InputSentence1": "Mia lost her hat.", "AnswerRightEnding": "1"})
    recs = load_records(str(path), "chat")
    assert [r.messages[0].content for r in recs] == ["Tom had a red kite.", "Mia lost her hat."]
    assert recs[1].messages[1].content.endswith("Tom was sad.")


def test_seq2seq_on_story_cloze_is_scored_on_its_own_heldout_pairs(tmp_path, tiny_tokenizer_dir):
    """train pt model=seq2seq on the Story Cloze layout; eval gen prompts=<run> = exactly its held-out pairs."""
    import json
    import random

    from lmlab.api import evaluate
    from lmlab.config import build
    from lmlab.train import pretrain
    from lmlab.train.config import PretrainConfig

    rng = random.Random(0)
    words = ["tom", "mia", "the", "cat", "ran", "park", "happy", "ball", "red", "found"]
    path = tmp_path / "cloze.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROW))
        w.writeheader()
        for i in range(40):
            w.writerow({k: " ".join(rng.choice(words) for _ in range(5)) + f" {i}." for k in ROW} | {"AnswerRightEnding": "1"})
    cfg = build(PretrainConfig, dict(model="seq2seq:tiny", data=str(path), tokenizer=str(tiny_tokenizer_dir), max_steps=2,
                                     batch_size=4, max_length=48, val_fraction=0.25, out=str(tmp_path / "s2s"),
                                     arch={"hidden_size": 32, "num_layers": 1}, device="cpu"))
    pretrain.run(cfg)
    train, held = pretrain.split_text_pairs(cfg)
    assert len(train) + len(held) == 40 and held and not set(train) & set(held)
    metrics = evaluate("gen", model=str(tmp_path / "s2s"), prompts=str(tmp_path / "s2s"), max_new_tokens=4,
                       out=str(tmp_path / "gen"))
    rows = [json.loads(x) for x in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(held) and [r["ref"] for r in rows] == [t for _, t in held]
    assert 1 <= metrics["distinct_outputs"] <= len(held)
