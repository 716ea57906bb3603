"""Text metrics: parity with sacrebleu / rouge-score called directly, hand-worked diversity values."""
from __future__ import annotations

import json

import pytest

from lmlab.eval.text_metrics import distinct_n, is_cjk, normalize, seq_rep_n, text_metrics

HYPS = ["the cat sat on the mat today", "a dog ran in the park", "she was very happy ."]
REFS = ["the cat sat on the red mat", "the dog ran to the park", "she was happy ."]


def test_bleu_and_rouge_equal_the_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    summary, per_pair = text_metrics(HYPS, REFS)
    assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    sentence = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS, strict=True)]
    assert summary["sentence_bleu"] == pytest.approx(sum(sentence) / 3)
    assert [p["bleu"] for p in per_pair] == pytest.approx(sentence)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = [scorer.score(r, h)[key].fmeasure for h, r in zip(HYPS, REFS, strict=True)]
        assert summary[key] == pytest.approx(sum(expected) / 3)
    assert 0 < summary["bleu"] < 100 and 0 < summary["rougeL"] < 1  # the two scales
    assert summary["n"] == 3 and summary["lang"] == "en"


def test_distinct_and_repetition_by_hand():
    # tokens: [the cat the cat] [a dog]: 6 unigrams, 4 distinct; 4 bigrams (the cat twice), 3 distinct
    assert distinct_n(["the cat the cat", "a dog"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["the cat the cat", "a dog"], 2) == pytest.approx(3 / 4)
    # a b c d a b c d: five 4-grams, "a b c d" twice → 1 - 4/5
    assert seq_rep_n("a b c d a b c d") == pytest.approx(0.2)
    assert seq_rep_n("a b c") is None  # no 4-gram: left out of the mean
    summary, _ = text_metrics(["a b c d a b c d", "x y z w", "short"], ["r", "r", "r"])
    assert summary["repetition_4"] == pytest.approx((0.2 + 0.0) / 2)
    assert summary["distinct_1"] == pytest.approx(9 / 13)


def test_exact_match_and_lengths():
    summary, _ = text_metrics(["The cat.", "a  dog", "no"], ["the cat", "a dog!", "yes"])
    assert normalize("  The, CAT! ") == "the cat"
    assert summary["exact_match"] == pytest.approx(2 / 3)
    # tokens: [the cat .] [a dog] [no] vs [the cat] [a dog !] [yes]
    assert summary["hyp_len_mean"] == pytest.approx(2.0) and summary["ref_len_mean"] == pytest.approx(2.0)
    assert summary["len_ratio"] == pytest.approx(1.0)


def test_chinese_rouge_counts_characters():
    from rouge_score import rouge_scorer

    hyp, ref = "我喜欢狗", "我喜欢猫"
    # rouge-score's default tokenizer drops every non-ASCII character: everything would score 0
    assert rouge_scorer.RougeScorer(["rouge1"]).score(ref, hyp)["rouge1"].fmeasure == 0.0
    assert is_cjk([ref]) and not is_cjk(["the cat 猫"])
    summary, _ = text_metrics([hyp], [ref])
    assert summary["lang"] == "zh"
    assert summary["rouge1"] == pytest.approx(0.75)  # 3 of 4 characters
    assert summary["rouge2"] == pytest.approx(2 / 3)  # 我喜, 喜欢 of 3 bigrams
    assert summary["rougeL"] == pytest.approx(0.75)  # LCS 我喜欢
    assert summary["distinct_1"] == pytest.approx(1.0)


def test_chinese_bleu_uses_sacrebleu_zh():
    import sacrebleu

    hyps, refs = ["今天天气很好，我们去公园。"], ["今天天气很好，我们去公园玩。"]
    summary, _ = text_metrics(hyps, refs)
    assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)
    assert summary["bleu"] != pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_cli_files(tmp_path, capsys):
    from lmlab.cli import main

    (tmp_path / "h.txt").write_text("\n".join(HYPS) + "\n")
    (tmp_path / "r.txt").write_text("\n".join(REFS) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "gen", f"refs={tmp_path / 'r.txt'}", f"hyps={tmp_path / 'h.txt'}", f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bleu", "rouge1", "rouge2", "rougeL", "distinct_1", "distinct_2", "n"} <= set(metrics)
    assert metrics["bleu"] == pytest.approx(text_metrics(HYPS, REFS)[0]["bleu"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["hyp"] for s in samples] == HYPS
    assert "rougeL" in capsys.readouterr().out


def test_misaligned_files_name_both(tmp_path, capsys):
    from lmlab.cli import main

    (tmp_path / "h.txt").write_text("a\nb\n")
    (tmp_path / "r.txt").write_text("a\n")
    assert main(["eval", "gen", f"refs={tmp_path / 'r.txt'}", f"hyps={tmp_path / 'h.txt'}"]) == 2
    err = capsys.readouterr().err
    assert "h.txt has 2 lines" in err and "r.txt has 1" in err
    assert main(["eval", "gen", f"hyps={tmp_path / 'h.txt'}"]) == 2
    assert "hyps= needs refs=" in capsys.readouterr().err


def test_generate_then_score_equals_scoring_the_generations(tmp_path, tiny_qwen2_dir):
    from lmlab.cli import main
    from lmlab.generate import DecodingConfig, generate
    from lmlab.models.load import load_model

    (tmp_path / "p.txt").write_text("the cat\nmia found\n")
    (tmp_path / "r.txt").write_text("the cat ran to the park.\nmia found a red ball.\n")
    out = tmp_path / "gen"
    rc = main(["eval", "gen", f"model={tiny_qwen2_dir}", f"prompts={tmp_path / 'p.txt'}", f"refs={tmp_path / 'r.txt'}",
               "max_new_tokens=6", f"out={out}"])
    assert rc == 0
    model, tok = load_model(str(tiny_qwen2_dir), device="cpu")
    hyps = [o[0].strip() for o in generate(model, tok, ["the cat", "mia found"], DecodingConfig(max_new_tokens=6, temperature=0))]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["hyp"] for s in samples] == hyps and [s["prompt"] for s in samples] == ["the cat", "mia found"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bleu"] == pytest.approx(text_metrics(hyps, ["the cat ran to the park.", "mia found a red ball."])[0]["bleu"])


def test_chat_dataset_prompts_use_the_template_and_their_responses(tmp_path, tiny_qwen2_dir):
    from lmlab.cli import main

    out = tmp_path / "gen"
    assert main(["eval", "gen", f"model={tiny_qwen2_dir}", "prompts=storyworld/instruct", "limit=2",
                 "max_new_tokens=4", f"out={out}"]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    assert all(s["prompt"].startswith("<|im_start|>") and s["prompt"].endswith("<|im_start|>assistant\n") for s in samples)
    from lmlab.data.loaders import load_records

    records = load_records("storyworld/instruct", "chat", split="test", limit=2)
    assert [s["ref"] for s in samples] == [r.messages[-1].content for r in records]  # its responses are the refs
    assert records[0].messages[0].content in samples[0]["prompt"]
