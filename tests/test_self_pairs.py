"""`lmlab data pairs`: a model's own sampled answers, ranked by the gold judge, as preference pairs."""
from __future__ import annotations

import json

import pytest

from lmlab.eval.self_pairs import best_and_worst


def test_best_and_worst_by_hand():
    assert best_and_worst([0.2, 0.9, 0.1, 0.5], 0.05) == (1, 2)
    assert best_and_worst([0.5, 0.52, 0.49], 0.05) is None  # gap 0.03 < 0.05: a tie
    assert best_and_worst([0.3, 0.3], 0.0) is None  # equal answers are never a pair, even at min_gap 0
    assert best_and_worst([0.7, 0.1, 0.7, 0.1], 0.1) == (0, 1)  # the first of equals, both ways


def test_pairs_are_the_models_own_answers_ranked_by_the_gold_judge(tmp_path, tiny_qwen2_dir):
    from lmlab.data.loaders import load_records
    from lmlab.data.storyworld import gold_reward
    from lmlab.eval.reward_analysis import prompt_text
    from lmlab.eval.self_pairs import PairsConfig, run

    out = tmp_path / "pairs"
    result = run(PairsConfig(model=str(tiny_qwen2_dir), prompts="storyworld/prefs", n=6, samples=3, max_new_tokens=12,
                             min_gap=0.0, out=str(out), device="cpu"))
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert result["pairs"] == len(rows) and result["pairs"] + result["dropped_ties"] == 6
    for r in rows:  # the stored scores are the gold judge's, and chosen beats rejected
        assert r["chosen_score"] == pytest.approx(gold_reward(r["prompt"], r["chosen"]))
        assert r["rejected_score"] == pytest.approx(gold_reward(r["prompt"], r["rejected"]))
        assert r["chosen_score"] > r["rejected_score"] and r["chosen"] != r["rejected"]
    # prompts come from the train split, in order, and the file reads back as preference records
    train_prompts = [prompt_text(rec.prompt) for rec in load_records("storyworld/prefs", "preference", split="train", limit=6)]
    assert all(r["prompt"] in train_prompts for r in rows)
    records = load_records(str(out / "pairs.jsonl"), "preference")
    assert [rec.chosen for rec in records] == [r["chosen"] for r in rows]
    assert json.loads((out / "result.json").read_text())["pairs"] == len(rows)


def test_bad_requests_are_refused_before_any_work():
    from lmlab.config import build
    from lmlab.errors import ConfigError
    from lmlab.eval.self_pairs import PairsConfig

    for bad, word in (({"samples": 1}, "samples"), ({"temperature": 0}, "temperature"), ({"judge": "gold,runs/rm"}, "one labeller")):
        with pytest.raises(ConfigError, match=word):
            build(PairsConfig, {"model": "x", **bad})
