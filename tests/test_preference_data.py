"""Preference and feedback data in every layout the loaders read, from hand-built files; bad rows say
file, line, field and the fix (a `columns=` mapping, or the command that reads that kind of data)."""
from __future__ import annotations

import csv
import json

import pytest

from lmlab.data.formats import FeedbackRecord, Message, PreferenceRecord, to_record
from lmlab.data.loaders import load_records, load_texts
from lmlab.errors import DataError
from test_data_loaders import write

U, A = "user", "assistant"


def write_jsonl(path, rows, gz=False):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), gz)


# -- the layouts ------------------------------------------------------------------------------------
def test_storyworld_layout_prompt_chosen_rejected(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Tell a story about Tom.", "chosen": "Tom ran.",
                                                   "rejected": "Mia sang."}])
    assert load_records(path, "preference") == [PreferenceRecord([Message(U, "Tell a story about Tom.")], "Tom ran.", "Mia sang.")]


def test_sharegpt_pairwise_layout_of_dpo_en(tmp_path):
    """LLaMA-Factory's dpo_en_demo.json: a JSON list; the conversation so far, then one {from, value} per side."""
    row = {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "hi"},
                             {"from": "gpt", "value": "hello"}, {"from": "human", "value": "2+2?"}],
           "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}}
    (tmp_path / "dpo.json").write_text(json.dumps([row]))
    assert load_records(tmp_path / "dpo.json", "preference") == [PreferenceRecord(
        [Message("system", "Be kind."), Message(U, "hi"), Message(A, "hello"), Message(U, "2+2?")], "4", "5")]


HH_CHOSEN = ("\n\nHuman: My cat won't eat. What should I do?\n\nAssistant: How long has it been?"
             "\n\nHuman: Two days.\n\nAssistant: Two days is long for a cat; please call a vet today.")
HH_REJECTED = ("\n\nHuman: My cat won't eat. What should I do?\n\nAssistant: How long has it been?"
               "\n\nHuman: Two days.\n\nAssistant: Cats are fine without food.")


def test_hh_rlhf_transcripts_split_into_the_common_dialogue_and_two_answers(tmp_path, monkeypatch):
    """Hand-split: the shared dialogue is three turns (user, assistant, user); the answers are what
    follows the last '\\n\\nAssistant:' of each transcript, stripped. A row whose transcripts differ
    before the final turn has no such split: it is skipped, counted and reported with its line."""
    import lmlab.progress

    said = []
    monkeypatch.setattr(lmlab.progress, "log", said.append)
    divergent = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you",
                 "rejected": "\n\nHuman: hi\n\nAssistant: go away\n\nHuman: bye\n\nAssistant: ok"}
    path = write_jsonl(tmp_path / "train.jsonl.gz", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, divergent], gz=True)
    recs = load_records(path, "preference")
    assert recs == [PreferenceRecord(
        [Message(U, "My cat won't eat. What should I do?"), Message(A, "How long has it been?"), Message(U, "Two days.")],
        "Two days is long for a cat; please call a vet today.", "Cats are fine without food.")]
    assert said == [f"{path} (train): skipped 1 of 2 dialogue pairs whose chosen and rejected differ before the "
                    f"final assistant turn (first: {path}:2)"]
    # as text (a tokenizer corpus) nothing is skipped: both transcripts are text
    assert load_texts(path)[1] == (divergent["chosen"] + "\n" + divergent["rejected"]).strip()
    only_divergent = write_jsonl(tmp_path / "bad.jsonl", [divergent])
    with pytest.raises(DataError, match=r"every row's chosen and rejected differ before the final assistant turn"):
        load_records(only_divergent, "preference")


def test_kto_feedback_layouts(tmp_path):
    """storyworld/kto's {prompt, completion, label} and kto-en's {messages, label} (label as bool or text)."""
    path = write_jsonl(tmp_path / "kto.jsonl", [
        {"prompt": "Say hi.", "completion": "hi", "label": True},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "no"}], "label": "false"},
    ])
    assert load_records(path, "feedback") == [FeedbackRecord([Message(U, "Say hi.")], "hi", True),
                                              FeedbackRecord([Message(U, "Say hi.")], "no", False)]


# -- bad rows: file, line, and the fix --------------------------------------------------------------
def test_missing_field_names_file_line_and_the_columns_fix(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "response_k": "b"},
    ])
    with pytest.raises(DataError) as err:
        load_records(path, "preference")
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: cannot read a preference record")
    assert msg.endswith("columns={rejected: response_k}")
    # StackExchange-paired names every field differently; the fix maps all three, and works
    se = write_jsonl(tmp_path / "se.jsonl", [{"question": "q", "response_j": "good", "response_k": "bad"}])
    with pytest.raises(DataError, match=r"se\.jsonl:1: .*columns=\{prompt: question, chosen: response_j, rejected: response_k\}"):
        load_records(se, "preference")
    fixed = load_records(se, "preference", columns={"prompt": "question", "chosen": "response_j", "rejected": "response_k"})
    assert fixed == [PreferenceRecord([Message(U, "q")], "good", "bad")]


def test_labelled_data_as_preference_points_to_the_classifier_reward_model(tmp_path):
    """imdb (review, sentiment) given as pairs: the old message proposed `columns={…, chosen: sentiment}`."""
    path = tmp_path / "imdb.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["review", "sentiment"], ["Great film", "positive"]])
    for kind in ("preference", "feedback"):
        with pytest.raises(DataError) as err:
            load_records(path, kind)
        msg = str(err.value)
        assert msg.startswith(f"{path}:2: this row is labelled text (review, sentiment), not {kind} data")
        assert "lmlab train rm kind=classifier" in msg and "chosen:" not in msg


def test_feedback_given_as_pairs_points_to_kto():
    with pytest.raises(DataError, match=r"k\.jsonl:4: this row is unpaired feedback .*`lmlab train kto data=…`"):
        to_record({"prompt": "q", "completion": "a", "label": True}, "preference", where="k.jsonl:4")


# -- message lists (issue 13) -----------------------------------------------------------------------
@pytest.mark.parametrize(("row", "expected"), [
    ({"messages": "hello"}, r"c\.jsonl:1: messages must be a list of \{role, content\} objects, got str 'hello'"),
    ({"conversations": {"from": "human", "value": "hi"}}, r"c\.jsonl:1: conversations must be a list of \{role, content\}"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}]},
     r"c\.jsonl:1: messages\[1\]\.content must be text, got int 42"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, r"c\.jsonl:1: messages\[0\]\.content must be text, got list"),
    ({"messages": [{"role": "asistant", "content": "hi"}]}, r"c\.jsonl:1: messages\[0\] has unknown role 'asistant'; did you mean 'assistant'"),
])
def test_bad_message_lists_say_file_line_and_field(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(DataError, match=expected):
        load_records(path, "chat")


def test_message_list_fields_are_checked_for_every_kind():
    with pytest.raises(DataError, match=r"f:3: messages must be a list"):
        to_record({"messages": "hello", "label": True}, "feedback", where="f:3")
    with pytest.raises(DataError, match=r"f:3: conversations must be a list"):
        to_record({"conversations": "hello", "chosen": "a", "rejected": "b"}, "preference", where="f:3")
    # a prompt may still be plain text (one user turn)
    assert to_record({"prompt": "hello", "completion": "a", "label": 1}, "feedback").prompt == [Message(U, "hello")]


def test_identical_pairs_are_dropped_and_counted(tiny_tokenizer_dir, monkeypatch):
    """Three pairs: one identical, one identical only after left truncation to the last 4 tokens
    (the replies differ in their first word only), one different: one pair is kept, two reported."""
    from transformers import AutoTokenizer

    import lmlab.progress
    from lmlab.data.preference import encode_pairs, encode_response

    said = []
    monkeypatch.setattr(lmlab.progress, "log", said.append)
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    recs = [PreferenceRecord([Message(U, "hi")], "the cat", "the cat"),
            PreferenceRecord([Message(U, "hi")], "cat the dog ran to the park", "dog the dog ran to the park"),
            PreferenceRecord([Message(U, "hi")], "the cat", "the dog")]
    assert encode_response(tok, recs[1].prompt, recs[1].chosen, 4) == encode_response(tok, recs[1].prompt, recs[1].rejected, 4)
    pairs = encode_pairs(tok, recs, 4, "auto", "prefs.jsonl")
    assert [p.chosen for p in pairs] == [encode_response(tok, recs[2].prompt, "the cat", 4)]
    assert said == ["prefs.jsonl: dropped 2 of 3 pairs whose chosen and rejected tokens are identical (within max_length=4)"]
