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
