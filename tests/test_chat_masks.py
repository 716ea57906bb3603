"""Label masks from chat rendering: exact token spans, both mask paths, truncation, eos."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lmlab.data.chat import IGNORE_INDEX, encode_chat, encode_dataset, render_prompt
from lmlab.errors import DataError

MULTI = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "the cat ran"},
    {"role": "assistant", "content": "the dog said"},
    {"role": "user", "content": "tom"},
    {"role": "assistant", "content": "mia went"},
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def expected_chatml(tok, messages):
    """Hand-built ChatML token list and label list, segment by segment."""
    all_ids, labels = [], []
    for m in messages:
        head = ids(tok, f"<|im_start|>{m['role']}\n")
        if m["role"] == "assistant":
            body = ids(tok, m["content"] + "<|im_end|>")
            all_ids += head + body
            labels += [IGNORE_INDEX] * len(head) + body
            nl = ids(tok, "\n")
            all_ids += nl
            labels += [IGNORE_INDEX] * len(nl)
        else:
            seg = head + ids(tok, m["content"] + "<|im_end|>\n")
            all_ids += seg
            labels += [IGNORE_INDEX] * len(seg)
    return all_ids, labels


@pytest.mark.parametrize("path", ["markers", "incremental"])
def test_single_turn_mask_matches_hand_spans(tok, path):
    msgs = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "a dog ran"}]
    ex = encode_chat(tok, msgs, path=path)
    want_ids, want_labels = expected_chatml(tok, msgs)
    assert ex.input_ids == want_ids
    assert ex.labels == want_labels
    # the trained span is exactly the reply plus <|im_end|>, positions computed by hand
    start = len(ids(tok, "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n"))
    reply = ids(tok, "a dog ran<|im_end|>")
    trained = [i for i, x in enumerate(ex.labels) if x != IGNORE_INDEX]
    assert trained == list(range(start, start + len(reply)))
    assert ex.input_ids[trained[-1]] == tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("path", ["markers", "incremental"])
def test_multi_turn_trains_every_assistant_turn(tok, path):
    ex = encode_chat(tok, MULTI, path=path)
    want_ids, want_labels = expected_chatml(tok, MULTI)
    assert ex.input_ids == want_ids
    assert ex.labels == want_labels
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    spans, cur = [], []
    for i, x in enumerate(ex.labels):
        if x != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert len(spans) == 2  # both assistant turns, nothing else
    assert tok.decode([ex.input_ids[i] for i in spans[0]]) == "the dog said<|im_end|>"
    assert tok.decode([ex.input_ids[i] for i in spans[1]]) == "mia went<|im_end|>"
    assert all(ex.input_ids[s[-1]] == im_end for s in spans)


def test_markers_and_incremental_paths_agree_on_builtin_templates(tok):
    for template in ("chatml", "qwen", "alpaca", "llama3"):
        a = encode_chat(tok, MULTI, template=template, path="markers")
        b = encode_chat(tok, MULTI, template=template, path="incremental")
        assert a.input_ids == b.input_ids, template
        assert a.labels == b.labels, template


def trained_spans(tok, ex) -> list[str]:
    """The decoded runs of consecutive trained (label != IGNORE_INDEX) tokens."""
    spans, cur = [], []
    for x in [*ex.labels, IGNORE_INDEX]:
        if x != IGNORE_INDEX:
            cur.append(x)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    return spans


@pytest.fixture(scope="module")
def llama_tok(tiny_tokenizer_dir):
    """The tiny tokenizer with Llama 3's header and end-of-turn specials (as the real one has them)."""
    t = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    t.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    return t


# what closes an assistant turn in each template, written from the template's published layout
TURN_END = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "alpaca": "<|endoftext|>", "llama3": "<|eot_id|>"}


@pytest.mark.parametrize("path", ["markers", "incremental"])
@pytest.mark.parametrize("template", list(TURN_END))
def test_builtin_templates_equal_transformers_apply_chat_template(tok, llama_tok, template, path):
    """The oracle is transformers' own renderer: the encoded ids are the tokenization of the text
    `apply_chat_template` renders, and the trained tokens are exactly each reply + its turn end."""
    from lmlab.templates import CHAT_TEMPLATES

    t = llama_tok if template == "llama3" else tok
    text = t.apply_chat_template(MULTI, chat_template=CHAT_TEMPLATES[template], tokenize=False)
    ex = encode_chat(t, MULTI, template=template, path=path)
    assert ex.input_ids == t(text, add_special_tokens=False)["input_ids"]
    assert trained_spans(t, ex) == [f"the dog said{TURN_END[template]}", f"mia went{TURN_END[template]}"]
    if template == "qwen":  # the default system prompt only when the conversation has none
        assert text.count("You are a helpful assistant.") == 0
        bare = t.apply_chat_template(MULTI[1:], chat_template=CHAT_TEMPLATES[template], tokenize=False)
        assert bare.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
        assert encode_chat(t, MULTI[1:], template=template, path=path).input_ids == t(bare, add_special_tokens=False)["input_ids"]


def test_template_without_markers_uses_incremental_and_appends_eos(tok):
    # A plain template with no {% generation %} and no end-of-turn token: the reply must still
    # be found, and eos appended (and learned) so the model learns to stop.
    template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\nA:' }}"
        "{% else %}{{ m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '' }}{% endif %}"
    )
    msgs = [{"role": "user", "content": "tom"}, {"role": "assistant", "content": " the ball"}]
    ex = encode_chat(tok, msgs, template=template)
    head = ids(tok, "Q: tom\nA:")
    reply = ids(tok, " the ball\n")
    assert ex.input_ids == head + reply + [tok.eos_token_id]
    assert ex.labels == [IGNORE_INDEX] * len(head) + reply + [tok.eos_token_id]


def test_train_on_prompt_unmasks_everything(tok):
    ex = encode_chat(tok, MULTI, train_on_prompt=True)
    assert ex.labels == ex.input_ids
    assert ex.n_trained == len(ex)


def test_truncation_counts_cut_response_tokens(tok):
    full = encode_chat(tok, MULTI)
    n_resp_full = full.n_trained
    cut_at = len(full) - 5  # the last 5 tokens: "mia went<|im_end|>\n" tail (4 trained + "\n")
    ex = encode_chat(tok, MULTI, max_length=cut_at)
    assert len(ex) == cut_at
    assert ex.n_truncated_tokens == 5
    assert ex.n_truncated_response_tokens == sum(1 for x in full.labels[cut_at:] if x != IGNORE_INDEX) == 4
    assert ex.n_trained == n_resp_full - 4


def test_dataset_stats_and_dropping(tok):
    short = [{"role": "user", "content": "the cat ran and then the dog went to the park with tom and mia"}, {"role": "assistant", "content": "ok"}]
    convs = [MULTI, short]
    first_reply = next(i for i, x in enumerate(encode_chat(tok, short).labels) if x != IGNORE_INDEX)
    examples, stats = encode_dataset(tok, convs, max_length=first_reply)
    # `short` loses its whole reply → dropped; MULTI is truncated too (it is longer)
    assert stats.examples == 2 and stats.dropped_examples == 1 and len(examples) == 1
    assert stats.truncated_examples == 2
    assert stats.truncated_response_tokens == (
        encode_chat(tok, MULTI, max_length=first_reply).n_truncated_response_tokens + encode_chat(tok, short).n_trained
    )
    with pytest.raises(DataError, match="raise max_length"):
        encode_dataset(tok, [short], max_length=first_reply)


def test_bad_role_names_record_and_fix(tok):
    with pytest.raises(DataError, match=r"record 1.*role 'asistant'.*did you mean 'assistant'"):
        encode_dataset(tok, [[{"role": "user", "content": "x"}, {"role": "asistant", "content": "y"}]])


def test_system_prompt_added_when_missing(tok):
    msgs = [{"role": "user", "content": "tom"}, {"role": "assistant", "content": "mia"}]
    ex = encode_chat(tok, msgs, system="be nice")
    assert tok.decode(ex.input_ids).startswith("<|im_start|>system\nbe nice<|im_end|>")
    assert render_prompt(tok, "tom", system="be nice").endswith("<|im_start|>user\ntom<|im_end|>\n<|im_start|>assistant\n")


def test_template_that_rewrites_earlier_turns_is_refused(tok):
    # Renders only the last user turn in full: prefixes are not prefixes of the whole, so reply
    # tokens cannot be located by incremental rendering; the error names the fix.
    template = (
        "{% for m in messages %}{% if m['role'] == 'user' and not loop.last and loop.index < messages|length - 1 %}"
        "{{ 'U: ...\\n' }}{% elif m['role'] == 'user' %}{{ 'U: ' + m['content'] + '\\n' }}"
        "{% else %}{{ 'A: ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}"
    )
    with pytest.raises(DataError, match=r"not prefix-stable.*template=chatml"):
        encode_chat(tok, MULTI[1:], template=template)


def test_stop_token_ids_cache_follows_the_tokenizer(tiny_tokenizer_dir):
    """The per-tokenizer cache gives the same ids as a fresh computation, and changes with eos."""
    from transformers import AutoTokenizer

    from lmlab.templates import stop_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    first = stop_token_ids(tok)
    calls = []
    real = tok.get_vocab
    tok.get_vocab = lambda: calls.append(1) or real()
    assert stop_token_ids(tok) == first and not calls  # cached: the vocabulary is not rebuilt
    vocab = real()
    assert first[0] == tok.eos_token_id and vocab["<|im_end|>"] in first
    tok.eos_token = "<|pad|>"
    assert stop_token_ids(tok)[0] == vocab["<|pad|>"] and calls  # eos changed: recomputed
