"""Reward analysis statistics against hand computation on a 4-pair set with known rewards."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lmlab.eval.reward_analysis import analyze, fk_grade, keywords, pairwise_accuracy, pearson, welch

CHOSEN = [3.0, 2.0, 1.0, 0.5]
REJECTED = [1.0, 2.0, 2.0, 0.0]
# word counts: chosen 4, 3, 2, 1; rejected 1, 3, 5, 2
CHOSEN_TEXTS = ["the brave dragon flew", "a happy cat", "tom ran", "yes"]
REJECTED_TEXTS = ["no", "a sad dog", "the dog sat and slept", "go away"]


def test_accuracy_counts_ties_half():
    # 3>1 win, 2=2 tie, 1<2 loss, 0.5>0 win → (1 + 0.5 + 0 + 1) / 4
    assert pairwise_accuracy(CHOSEN, REJECTED) == 0.625
    assert pairwise_accuracy([1, 1], [1, 1]) == 0.5  # a constant scorer is at chance, not perfect
    with pytest.raises(ValueError, match="equally many"):
        pairwise_accuracy([1, 2], [1])


def test_welch_matches_the_formula():
    n = 4
    vc, vr = 3.6875 / 3, 2.75 / 3  # sample variances worked by hand
    t = (1.625 - 1.25) / math.sqrt(vc / n + vr / n)
    df = (vc / n + vr / n) ** 2 / ((vc / n) ** 2 / (n - 1) + (vr / n) ** 2 / (n - 1))
    t_stat, p = welch(CHOSEN, REJECTED)
    assert t_stat == pytest.approx(t) and t_stat == pytest.approx(0.511996, abs=1e-5)
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_analyze_hand_computed():
    m = analyze(CHOSEN, REJECTED, CHOSEN_TEXTS, REJECTED_TEXTS)
    assert m["pairs"] == 4 and m["accuracy"] == 0.625
    assert m["chosen_mean"] == 1.625 and m["rejected_mean"] == 1.25 and m["margin_mean"] == 0.375
    assert m["chosen_std"] == pytest.approx(math.sqrt(3.6875 / 3))
    assert m["rejected_std"] == pytest.approx(math.sqrt(2.75 / 3))
    assert m["chosen_words"] == 2.5 and m["rejected_words"] == 2.75
    # Pearson r over all 8 (reward, words) points
    rewards = np.array(CHOSEN + REJECTED)
    words = np.array([4, 3, 2, 1, 1, 3, 5, 2], float)
    dx, dy = rewards - rewards.mean(), words - words.mean()
    assert m["length_corr"] == pytest.approx((dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum()))
    # longer response rewarded higher: pair 1 (chosen longer, 3>1) yes; pair 2 equal length, skipped;
    # pair 3 (rejected longer, 2>1) yes; pair 4 (rejected longer, 0<0.5) no → 2/3
    assert m["longer_preferred"] == pytest.approx(2 / 3)
    # top quartile of the 8 rewards: numpy's linear quantile of sorted [0,.5,1,1,2,2,2,3] at 0.75 → 2.0
    assert m["favoured_cutoff"] == 2.0
    assert {"t_stat", "p_value", "chosen_fk_grade", "rejected_fk_grade", "keywords"} <= set(m)


def test_pearson_undefined_for_constant():
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_flesch_kincaid_grade_worked_example():
    # 9 words, 2 sentences, 10 syllables (happy has two): 0.39*4.5 + 11.8*10/9 - 15.59
    assert fk_grade(["The cat sat on the mat. It was happy!"]) == pytest.approx(0.39 * 4.5 + 11.8 * 10 / 9 - 15.59)
    # the mean over texts
    a, b = fk_grade(["The cat sat."]), fk_grade(["It was happy!"])
    assert fk_grade(["The cat sat.", "It was happy!"]) == pytest.approx((a + b) / 2)


def test_tfidf_keywords_hand_computed():
    # shared IDF over 2 docs (smooth): dragon, river ln(3/2)+1; castle 1. Each doc is L2-normalised.
    idf = math.log(1.5) + 1
    dragon = idf / math.sqrt(idf**2 + 1)
    kws = keywords(["dragon castle"], ["castle river"], top_k=5)
    assert [w for w, _ in kws] == ["dragon"]  # castle's difference is 0, river's negative
    assert kws[0][1] == pytest.approx(dragon, abs=1e-5)
    assert keywords([], ["x y"]) == []


def _prefs(path):
    import json

    rows = [{"prompt": "story about a cat", "chosen": "The happy cat played in the sun all day long.", "rejected": "Cat."},
            {"prompt": "story about a dog", "chosen": "The dog ran.", "rejected": "The dog ran and ran and ran to the river."},
            {"prompt": "a story", "chosen": "Mia found her red ball by the tree.", "rejected": "Mia lost it."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_scores_pairs_and_writes_outputs(tmp_path, monkeypatch):
    """The command with a stub scorer (reward = number of words): files and numbers follow from it."""
    import json

    from lmlab.eval import reward_analysis
    from lmlab.eval.reward_analysis import RewardAnalysisConfig, run

    monkeypatch.setattr(reward_analysis, "load_scorer",
                        lambda spec, **kw: lambda prompts, responses: [float(len(r.split())) for r in responses])
    data = _prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "ra"
    m = run(RewardAnalysisConfig(model="stub", data=str(data), split="train", out=str(out), train_data=str(data)))
    # chosen words 10, 3, 8; rejected 1, 10, 3 → wins, loss, win
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["chosen_mean"] == pytest.approx(7.0) and m["rejected_mean"] == pytest.approx(14 / 3)
    assert m["length_corr"] == pytest.approx(1.0)  # a pure length scorer is all length bias
    assert m["longer_preferred"] == 1.0
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(2 / 3)
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert [(r["r_chosen"], r["r_rejected"]) for r in rows] == [(10.0, 1.0), (3.0, 10.0), (8.0, 3.0)]
    for png in ("reward_hist.png", "reward_vs_length.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_gold_judge_prefers_storyworld_chosen(tmp_path):
    """model=gold: the storyworld judge ranks the generator's chosen responses above the rejected ones."""
    from lmlab.eval.reward_analysis import RewardAnalysisConfig, run

    m = run(RewardAnalysisConfig(model="gold", data="storyworld/prefs", limit=20, out=str(tmp_path / "g")))
    assert m["pairs"] == 20 and m["accuracy"] >= 0.9
    assert m["chosen_mean"] > m["rejected_mean"] and m["p_value"] < 0.01


def test_auto_split_scores_only_what_the_rm_held_out(tmp_path):
    import json

    import yaml

    from lmlab.data.loaders import load_records
    from lmlab.data.split import split_train_val
    from lmlab.eval.reward_analysis import RewardAnalysisConfig, held_out_pairs, run_config_of

    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"}) + "\n"
                            for i in range(40)))
    rm = tmp_path / "rm"
    (rm / "final").mkdir(parents=True)
    (rm / "config.yaml").write_text(yaml.safe_dump({"data": str(data), "val_fraction": 0.3, "seed": 3, "eval_data": None}))
    rm_cfg = run_config_of(str(rm / "final"))  # final/ finds its run's config
    assert rm_cfg["seed"] == 3
    pairs, where = held_out_pairs(RewardAnalysisConfig(model=str(rm), data=str(data), limit=None), rm_cfg)
    _, expected = split_train_val(load_records(str(data), "preference"), 0.3, seed=3)
    assert [p.chosen for p in pairs] == [p.chosen for p in expected] and 0 < len(pairs) < 40
    assert where == "held out by the RM run (val_fraction=0.3, seed=3)"
    # another data set than the RM's: everything, and the caveat is stated
    pairs, where = held_out_pairs(RewardAnalysisConfig(model=str(rm), data=str(data), limit=5), {})
    assert len(pairs) == 5 and where.startswith("train (the set has no held-out split")
