"""Corpus stats and comparison: JSD and OOV worked by hand, the plot, and the data commands."""
from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from lmlab.config import build
from lmlab.data.commands import (
    DataCompareConfig,
    DataListConfig,
    DataShowConfig,
    DataStatsConfig,
    compare,
    list_datasets,
    show,
    stats,
)
from lmlab.data.stats import compare_counts, entropy_bits, summary, text_stats, word_counts, words


def test_words_lowercase_cjk_per_character_and_apostrophes():
    assert words("Tom's dog RAN, 2 times!") == ["tom's", "dog", "ran", "2", "times"]
    assert words("小猫 ran到公园") == ["小", "猫", "ran", "到", "公", "园"]


def test_jsd_and_oov_worked_by_hand():
    # A = "a a b", B = "a c": p = (2/3, 1/3, 0), q = (1/2, 0, 1/2) over (a, b, c); m = (7/12, 1/6, 1/4)
    a, b = word_counts(["a a b"]), word_counts(["a c"])
    kl_pm = 2 / 3 * math.log2((2 / 3) / (7 / 12)) + 1 / 3 * math.log2((1 / 3) / (1 / 6))
    kl_qm = 1 / 2 * math.log2((1 / 2) / (7 / 12)) + 1 / 2 * math.log2((1 / 2) / (1 / 4))
    expected = 0.5 * kl_pm + 0.5 * kl_qm  # ≈ 0.4253 bits
    res = compare_counts(a, b)
    assert expected == pytest.approx(0.42528, abs=1e-5)
    assert res["jsd"] == pytest.approx(expected, abs=1e-12)
    assert res["js_distance"] == pytest.approx(math.sqrt(expected))
    assert res["oov_rate"] == 0.5  # 'c' is one of B's two words
    assert res["oov_type_rate"] == 0.5
    assert (res["words_a"], res["words_b"], res["vocab_a"], res["vocab_b"], res["shared_vocab"]) == (3, 2, 2, 2, 1)
    top = res["top_differences"]
    # |Δ|: a 1/6, b 1/3, c 1/2 → c, b, a
    assert [t["word"] for t in top] == ["c", "b", "a"]
    assert top[0]["diff"] == pytest.approx(0.5) and top[1]["diff"] == pytest.approx(-1 / 3)


def test_jsd_bounds():
    same = compare_counts(Counter("xyz"), Counter("zyx"))
    assert same["jsd"] == pytest.approx(0.0, abs=1e-12) and same["oov_rate"] == 0.0
    disjoint = compare_counts(Counter(["a"]), Counter(["b"]))
    assert disjoint["jsd"] == pytest.approx(1.0) and disjoint["oov_rate"] == 1.0


def test_summary_and_entropy():
    s = summary([1, 2, 3, 4, 100])
    assert (s["min"], s["p50"], s["max"], s["mean"]) == (1, 3, 100, 22)
    assert entropy_bits(Counter({"a": 1, "b": 1, "c": 1, "d": 1})) == pytest.approx(2.0)


def test_text_stats_with_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    texts = ["the cat ran", "the dog", "the dog"]
    res = text_stats(texts, tok)
    assert res["texts"] == 3 and res["total_words"] == 7 and res["vocabulary"] == 4 and res["distinct_texts"] == 2
    assert res["words"]["max"] == 3
    assert res["total_tokens"] == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def test_compare_command_writes_metrics_and_plot(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("a a b")
    b.write_text("a c")
    res = compare(build(DataCompareConfig, {"a": str(a), "b": str(b), "out": str(tmp_path / "cmp")}))
    saved = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert saved["jsd"] == pytest.approx(res["jsd"]) and saved["oov_rate"] == 0.5
    png = (tmp_path / "cmp" / "rank_frequency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_stats_command_on_a_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "one two three", "label": 1}\n{"text": "four", "label": 0}\n{"text": "five six", "extra": 1}\n')
    res = stats(build(DataStatsConfig, {"path": str(p), "out": str(tmp_path / "st")}))
    assert res["rows"] == 3 and res["fields"] == {"text": 3, "label": 2, "extra": 1}
    assert res["words"]["mean"] == pytest.approx(2.0) and res["words"]["max"] == 3
    assert json.loads((tmp_path / "st" / "metrics.json").read_text())["rows"] == 3


def test_stats_storyworld_counts_distinct_draws(monkeypatch):
    from lmlab.data import storyworld

    # 10 draws from a fake generator with only 4 distinct stories
    monkeypatch.setattr(storyworld, "make_dataset", lambda task, n, seed: [{"text": f"s{i % 4}"} for i in range(n)], raising=False)
    monkeypatch.setattr(storyworld, "world_stats", lambda: {"names": 7}, raising=False)
    res = stats(build(DataStatsConfig, {"path": "storyworld/pretrain", "limit": 10, "draws": 10}))
    assert res["storyworld"] == {"draws": 10, "distinct": 4, "distinct_ratio": 0.4, "vocabulary": 4, "world": {"names": 7}}


def test_show_and_list(tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "q [x]", "chosen": "good", "rejected": "bad"}\n')
    res = show(build(DataShowConfig, {"name": str(p), "n": 3}))
    assert res["kind"] == "preference" and res["records"][0]["chosen"] == "good"
    out = capsys.readouterr().out
    assert "q [x]" in out and "chosen" in out  # brackets in data are shown, not eaten as markup
    listed = list_datasets(DataListConfig())
    assert listed["storyworld/instruct"]["where"] == "built-in" and listed["imdb"]["kind"] == "labelled"


def test_cli_rows_wire_positionals(tmp_path, capsys):
    """`lmlab data compare A B out=DIR` and `lmlab tokenizer train ...` through the real CLI."""
    from lmlab.cli import main

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a a b")
    b.write_text("a c")
    assert main(["data", "compare", str(a), str(b), f"out={tmp_path / 'cmp'}", "--quiet"]) == 0
    assert json.loads((tmp_path / "cmp" / "metrics.json").read_text())["oov_rate"] == 0.5
    assert main(["data", "show", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main(["tokenizer", "train", f"data={a}", "kind=char", "vocab_size=20", f"out={tmp_path / 'tok'}", "val_fraction=0"]) == 0
    assert json.loads((tmp_path / "tok" / "metrics.json").read_text())["vocab_size"] == 5 + 3  # specials + 'a', ' ', 'b'
