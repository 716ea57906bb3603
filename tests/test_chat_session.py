"""Chat session: history trimmed to a token budget, slash commands, save/load, personas."""
from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lmlab.chat.session import ChatSession, render_prompt
from lmlab.data.personas import builtin_personas, keyword_hit, keyword_hits, load_persona
from lmlab.errors import ConfigError


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def chatml(messages):
    """ChatML written out by hand: the oracle for what the model reads."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def n_tokens(tok, messages):
    return len(tok(chatml(messages), add_special_tokens=False)["input_ids"])


def test_render_prompt_is_the_chat_template(tok):
    msgs = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    assert render_prompt(tok, msgs) == chatml(msgs)


def test_history_keeps_newest_whole_turns_within_budget(tok):
    s = ChatSession(tok, system="be brief")
    for i in range(5):
        s.add_exchange(f"question {i} about the cat", f"answer {i}: the dog ran to the park")
    system = [{"role": "system", "content": "be brief"}]
    newest = [{"role": "user", "content": "what now"}]
    for keep in range(6):
        expected = system + s.turns[len(s.turns) - 2 * keep:] + newest
        s.max_history_tokens = n_tokens(tok, expected)  # exactly enough for `keep` turns
        got = s.build_messages("what now")
        assert got == expected
        assert s.dropped_turns == 5 - keep
        assert n_tokens(tok, got) <= s.max_history_tokens
        if keep:  # one token less: the oldest kept turn must go
            s.max_history_tokens -= 1
            assert s.build_messages("what now") == system + s.turns[len(s.turns) - 2 * (keep - 1):] + newest


def test_budget_never_cuts_system_prompt_or_newest_question(tok):
    long_system = "you are a very careful assistant " * 20
    s = ChatSession(tok, system=long_system, max_history_tokens=16)
    s.add_exchange("old question", "old answer")
    got = s.build_messages("the newest question")
    assert got == [{"role": "system", "content": long_system}, {"role": "user", "content": "the newest question"}]
    assert s.dropped_turns == 1


def test_commands_change_state_and_save_load_round_trip(tok, tmp_path):
    s = ChatSession(tok, max_history_tokens=512)
    assert s.command("/system talk like a cat").output.startswith("system prompt set")
    assert s.system == "talk like a cat"
    s.add_exchange("hi", "meow")
    out = tmp_path / "chat.json"
    assert "saved 2 messages" in s.command(f"/save {out}").output
    saved = json.loads(out.read_text())
    assert saved == {"system": "talk like a cat", "persona": None,
                     "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "meow"}]}
    assert s.command("/new").output == "new conversation" and s.turns == [] and s.system == "talk like a cat"
    assert s.command("/persona pirate").output == "persona: pirate"
    assert s.persona == "pirate" and s.system == load_persona("pirate").system
    s.command(f"/load {out}")
    assert (s.system, s.persona, s.turns) == ("talk like a cat", None, saved["messages"])
    assert s.command("/quit").quit is True
    assert s.command("/sistem x").output.startswith("unknown command /sistem; did you mean /system?")
    assert "/persona NAME" in s.command("/help").output


def test_load_reports_file_index_and_role(tok, tmp_path):
    s = ChatSession(tok)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "asistant", "content": "b"}]}))
    msg = s.command(f"/load {bad}").output
    assert msg.startswith(f"error: {bad}: messages[1]") and "did you mean role 'assistant'?" in msg
    broken = tmp_path / "broken.json"
    broken.write_text('{"messages": [\n  {"role": "user",,}]}')
    assert s.command(f"/load {broken}").output.startswith(f"error: {broken}:2: not valid JSON")
    assert s.turns == []  # a failed load leaves the conversation alone


def test_personas_builtin_file_and_errors(tmp_path):
    assert {"pirate", "teacher", "storyteller", "robot"} <= set(builtin_personas())
    for name in builtin_personas():
        p = load_persona(name)
        assert p.name == name and p.system and p.keywords
    with pytest.raises(ConfigError, match="unknown persona 'pirat'; did you mean 'pirate'"):
        load_persona("pirat")
    f = tmp_path / "chef.yaml"
    f.write_text("name: chef\nsystem: You cook.\nkeywords: [salt, pan]\n")
    assert load_persona(str(f)).keywords == ["salt", "pan"]
    f.write_text("name: chef\nsytem: You cook.\n")
    with pytest.raises(ConfigError) as err:
        load_persona(str(f))
    assert f"{f}: unknown key 'sytem'; did you mean 'system'?" in str(err.value)
    assert "'system' must be a non-empty text" in str(err.value)


def test_keyword_hits_whole_words_case_insensitive():
    kw = ["arr", "matey", "sea", "once upon a time"]
    assert keyword_hits("Arr, matey! To the SEA.", kw) == ["arr", "matey", "sea"]
    assert keyword_hits("A new season; the arrow flew.", kw) == []
    assert keyword_hit("Once upon a time, a cat.", kw) and not keyword_hit("", kw)
