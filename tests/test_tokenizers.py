"""Tokenizers: exact round-trips (English, Chinese, whitespace), specials, chat template, the command."""
from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from conftest import corpus
from lmlab.errors import ConfigError
from lmlab.templates import CHATML
from lmlab.tokenizers import SPECIALS, TokenizerTrainConfig, compression, run_train, train_tokenizer

CHINESE = ["小猫在公园里玩。她很开心！", "床前明月光，疑是地上霜。", "我们一起去河边看太阳。"]
SAMPLES = [
    "the cat ran to the park.",
    "小猫在公园里玩。\n她很开心！",
    "  leading, double  spaces,\ttabs\tand trailing  ",
    "line one\n\nline three\r\n",
    "mixed 中文 and English , with odd spacing .",
    "<|im_start|>user\nhi<|im_end|>\n",
]


def _train_and_reload(kind, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tok_{kind}")
    # the samples are in the training text so the char tokenizer has seen every character
    train_tokenizer(corpus(200) + CHINESE * 3 + SAMPLES, kind, 300, out)
    return AutoTokenizer.from_pretrained(out)


@pytest.fixture(scope="module")
def bpe_tok(tmp_path_factory):
    return _train_and_reload("bpe", tmp_path_factory)


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory):
    return _train_and_reload("char", tmp_path_factory)


@pytest.fixture(params=["bpe", "char"])
def saved(request):
    return request.param, request.getfixturevalue(f"{request.param}_tok")


def test_round_trip_exact_after_reload(saved):
    kind, tok = saved
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, (kind, text)


def test_specials_and_template(saved):
    _, tok = saved
    assert tok.convert_ids_to_tokens(list(range(5))) == SPECIALS  # specials first, fixed ids
    assert (tok.eos_token, tok.bos_token, tok.pad_token, tok.unk_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>")
    # specials are single tokens, never split
    assert tok("<|im_start|>", add_special_tokens=False)["input_ids"] == [3]
    assert tok.chat_template == CHATML
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert tok("hi", add_special_tokens=True)["input_ids"] == tok("hi", add_special_tokens=False)["input_ids"]


def test_char_tokenizer_is_one_token_per_character_and_unk_for_unseen(char_tok):
    tok = char_tok
    text = "小猫 cat"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == list(text)
    assert tok("龍", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_bpe_merges_frequent_words(bpe_tok):
    tok = bpe_tok
    assert len(tok) == 300
    # ' the' (with its space: byte-level BPE keeps the space in the word) is frequent: one token
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(SAMPLES[0], add_special_tokens=False)["input_ids"]) < 0.6 * len(SAMPLES[0])
    # bytes, not characters, are the base alphabet: never-seen text still round-trips with no unk
    unseen = "龍🙂 Ωmega"
    ids = tok(unseen, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == unseen


def test_char_vocab_is_capped_by_frequency():
    tok = train_tokenizer(["aaaa bbb cc d"], "char", 5 + 3, chat_template=None)
    # 8 = 5 specials + the 3 most frequent characters: a, b, space (c and d become unk)
    assert sorted(tok.get_vocab()) == sorted([*SPECIALS, "a", "b", " "])
    assert tok.decode(tok("abc", add_special_tokens=False)["input_ids"]) == "ab<|unk|>"


def test_bpe_vocab_too_small_is_refused():
    with pytest.raises(ConfigError, match=r"vocab_size=100 is too small for byte-level BPE.*261.*kind=char"):
        train_tokenizer(["abc"], "bpe", 100)
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'bep'; did you mean 'bpe'"):
        train_tokenizer(["abc"], "bep", 300)


def test_compression_worked_values():
    tok = train_tokenizer(["ab ab"], "char", 50, chat_template=None)
    m = compression(tok, ["ab ab", "小猫"])
    # 7 chars, 7 tokens (char-level); words: ab, ab, 小, 猫 → 4; 小猫 unseen → 2 unk of 7
    assert m["chars"] == 7 and m["tokens"] == 7
    assert m["chars_per_token"] == 1.0
    assert m["tokens_per_word"] == pytest.approx(7 / 4)
    assert m["unk_rate"] == pytest.approx(2 / 7)


def test_tokenizer_train_command(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("\n\n".join(corpus(300)))
    out = tmp_path / "tok"
    from lmlab.config import build

    cfg = build(TokenizerTrainConfig, {"data": str(data), "kind": "bpe", "vocab_size": 400, "out": str(out)})
    metrics = run_train(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    # the 40-word language runs out of merges (min_frequency=2) before 400: the real size is reported
    assert saved["vocab_size"] == len(AutoTokenizer.from_pretrained(out)) <= 400
    assert saved["measured_on"] == "held-out"
    assert saved["train_texts"] + saved["texts"] == 300
    tok = AutoTokenizer.from_pretrained(out)
    assert saved["chars_per_token"] == pytest.approx(compression(tok, [t for t in corpus(300)])["chars_per_token"], rel=0.2)
    # 139 merges cover every ' word' of the fixture's 40-word language: about a token per word
    assert saved["chars_per_token"] > 3.0 and saved["tokens_per_word"] < 1.5


def test_tokenizer_config_validation():
    from lmlab.config import build

    with pytest.raises(ConfigError, match="too small for byte-level BPE"):
        build(TokenizerTrainConfig, {"vocab_size": 200})
    with pytest.raises(ConfigError, match="unknown key 'vocab'; did you mean 'vocab_size'"):
        build(TokenizerTrainConfig, {"vocab": 200})


def test_char_tokenizer_on_two_sets_covers_both(tmp_path):
    """data=A,B: one vocabulary for a pretraining corpus and different SFT data (no unk in either)."""
    from lmlab.config import build

    (tmp_path / "poems.txt").write_text("气和玉烛\n\n睿化著鸿明\n")
    (tmp_path / "chat.txt").write_text("细胞理论\n\n日心说\n")
    cfg = build(TokenizerTrainConfig, {"data": f"{tmp_path / 'poems.txt'},{tmp_path / 'chat.txt'}", "kind": "char",
                                       "vocab_size": 100, "out": str(tmp_path / "tok"), "val_fraction": 0.0})
    assert run_train(cfg)["train_texts"] == 4
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in ("气和玉烛睿化著鸿明", "细胞理论日心说"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids
