"""Normalisers: every raw layout becomes the right record, and bad rows say where and how to fix them."""
from __future__ import annotations

import pytest

from lmlab.data.formats import (
    ChatRecord,
    FeedbackRecord,
    LabelledRecord,
    Message,
    PreferenceRecord,
    TextRecord,
    detect_kind,
    parse_hh_dialogue,
    record_text,
    to_record,
)
from lmlab.errors import DataError

U, A, S = "user", "assistant", "system"


def test_alpaca_with_input_system_and_history():
    row = {"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be brief.",
           "history": [["hi", "hello"]]}
    rec = to_record(row, "chat")
    assert rec == ChatRecord([Message(S, "Be brief."), Message(U, "hi"), Message(A, "hello"),
                              Message(U, "Translate\n\nchat"), Message(A, "cat")])


def test_alpaca_empty_input_is_not_appended():
    rec = to_record({"instruction": "Say hi", "input": "", "output": "hi"}, "chat")
    assert rec.messages == [Message(U, "Say hi"), Message(A, "hi")]


def test_sharegpt_and_openai_messages():
    share = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                               {"from": "gpt", "value": "a"}]}
    openai = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}]}
    expected = ChatRecord([Message(S, "s"), Message(U, "q"), Message(A, "a")])
    assert to_record(share, "chat") == expected
    assert to_record(openai, "chat") == expected


def test_prompt_completion_and_response():
    assert to_record({"prompt": "q", "completion": "a"}, "chat") == ChatRecord([Message(U, "q"), Message(A, "a")])
    assert to_record({"prompt": "q", "response": "a"}, "chat") == ChatRecord([Message(U, "q"), Message(A, "a")])


def test_unknown_role_names_closest():
    with pytest.raises(DataError, match=r"f\.jsonl:3: conversations\[0\] has unknown role 'humna'; did you mean 'human'"):
        to_record({"conversations": [{"from": "humna", "value": "x"}]}, "chat", where="f.jsonl:3")


def test_missing_fields_names_where_fields_and_fix():
    with pytest.raises(DataError) as err:
        to_record({"question": "q", "answer": "a"}, "chat", where="qa.csv:7")
    msg = str(err.value)
    assert msg.startswith("qa.csv:7: cannot read a chat record")
    assert "fields found: question, answer" in msg
    assert "columns={prompt: question, completion: answer}" in msg


def test_column_mapping_renames_fields():
    rec = to_record({"question": "q", "answer": "a"}, "chat", columns={"prompt": "question", "completion": "answer"})
    assert rec == ChatRecord([Message(U, "q"), Message(A, "a")])


def test_column_mapping_to_missing_source_field():
    with pytest.raises(DataError, match=r"x.json: item 2: columns maps 'prompt' to 'questoin'.*did you mean 'question'"):
        to_record({"question": "q"}, "chat", columns={"prompt": "questoin"}, where="x.json: item 2")


def test_preference_strings_and_message_lists():
    rec = to_record({"prompt": "q", "chosen": "good", "rejected": "bad"}, "preference")
    assert rec == PreferenceRecord([Message(U, "q")], "good", "bad")
    # TRL conversational layout: prompt list, chosen/rejected as assistant message lists
    row = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    assert to_record(row, "preference") == PreferenceRecord([Message(U, "q")], "good", "bad")


def test_preference_implicit_prompt_from_shared_conversation():
    conv = [{"role": "user", "content": "q"}]
    row = {"chosen": [*conv, {"role": "assistant", "content": "good"}],
           "rejected": [*conv, {"role": "assistant", "content": "bad"}]}
    assert to_record(row, "preference") == PreferenceRecord([Message(U, "q")], "good", "bad")


def test_llamafactory_sharegpt_pairwise():
    row = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
           "rejected": {"from": "gpt", "value": "bad"}}
    assert to_record(row, "preference") == PreferenceRecord([Message(U, "q")], "good", "bad")


def test_hh_rlhf_splits_shared_prefix_at_last_assistant_turn():
    head = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Name a fruit."
    row = {"chosen": head + "\n\nAssistant: An apple.", "rejected": head + "\n\nAssistant: A car."}
    rec = to_record(row, "preference")
    assert rec.prompt == [Message(U, "Hi there"), Message(A, "Hello!"), Message(U, "Name a fruit.")]
    assert (rec.chosen, rec.rejected) == ("An apple.", "A car.")


def test_hh_rlhf_replies_sharing_a_prefix_still_split_at_the_turn():
    # the replies share "A " — the split must not move into the replies
    head = "\n\nHuman: Name a fruit."
    rec = to_record({"chosen": head + "\n\nAssistant: A pear.", "rejected": head + "\n\nAssistant: A pen."}, "preference")
    assert rec.prompt == [Message(U, "Name a fruit.")]
    assert (rec.chosen, rec.rejected) == ("A pear.", "A pen.")


def test_parse_hh_dialogue():
    msgs = parse_hh_dialogue("\n\nHuman: a\nb\n\nAssistant: c")
    assert msgs == [Message(U, "a\nb"), Message(A, "c")]


def test_preference_missing_rejected():
    with pytest.raises(DataError, match=r"p.jsonl:2: cannot read a preference record; fields found: prompt, chosen"):
        to_record({"prompt": "q", "chosen": "a"}, "preference", where="p.jsonl:2")


def test_feedback_prompt_completion_and_messages():
    assert to_record({"prompt": "q", "completion": "a", "label": True}, "feedback") == FeedbackRecord(
        [Message(U, "q")], "a", True)
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}], "label": "false"}
    rec = to_record(row, "feedback")
    assert rec.completion == "a2" and rec.label is False
    assert rec.prompt == [Message(U, "q"), Message(A, "a"), Message(U, "q2")]


def test_feedback_bad_label():
    with pytest.raises(DataError, match=r"k.jsonl:4: .*label must be true/false \(or 1/0\), got 'maybe'"):
        to_record({"prompt": "q", "completion": "a", "label": "maybe"}, "feedback", where="k.jsonl:4")


def test_labelled_text_label_and_imdb_autodetect():
    assert to_record({"text": "great", "label": 1}, "labelled") == LabelledRecord("great", 1)
    assert to_record({"review": "bad film", "sentiment": "negative"}, "labelled") == LabelledRecord("bad film", "negative")
    assert to_record({"body": "x", "stars": 3}, "labelled", columns={"text": "body", "label": "stars"}) == LabelledRecord("x", 3)


def test_text_from_poetry_layout():
    rec = to_record({"title": "靜夜思", "paragraphs": ["床前明月光，", "疑是地上霜。"], "author": "李白"}, "text")
    assert rec == TextRecord("靜夜思\n床前明月光，\n疑是地上霜。")


def test_detect_kind_picks_the_most_specific_layout():
    assert detect_kind({"prompt": "q", "chosen": "a", "rejected": "b"}) == "preference"
    assert detect_kind({"prompt": "q", "completion": "a", "label": True}) == "feedback"
    assert detect_kind({"text": "t", "label": 0}) == "labelled"
    assert detect_kind({"instruction": "i", "output": "o"}) == "chat"
    assert detect_kind({"text": "t"}) == "text"


def test_record_text_joins_every_text():
    rec = PreferenceRecord([Message(U, "q")], "a", "b")
    assert record_text(rec) == "q\na\nb"


def test_unknown_kind():
    with pytest.raises(DataError, match="unknown data kind 'chats'; did you mean 'chat'"):
        to_record({"text": "x"}, "chats")
