"""Reward sources (lmlab.train.rewards): built-ins, Python callables, models, weights, penalties, errors."""
from __future__ import annotations

import pytest
import torch

from lmlab.errors import ConfigError, DataError
from lmlab.train.rewards import load_rewards, normalise_answer, qa_reference, repeated_ngram_share, shaping_penalties

STORY = ("Not long ago, a cheerful princess called Nanette lived near the island. Nanette was skipping along with "
         "her pink tent when she saw Igor, a quick penguin.")
QA = STORY + "\n\nQuestion: What color is the tent?"


def brevity(prompts, completions, **kwargs):
    """A user reward: minus the number of words."""
    return [-float(len(c.split())) for c in completions]


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def raises(prompts, completions, **kwargs):
    raise KeyError("score")


def test_qa_exact_reads_the_answer_from_the_story_or_the_column():
    assert qa_reference(QA) == "pink"
    assert normalise_answer("The  Tide pool!") == "tide pool"
    rewards = load_rewards("storyworld:qa_exact")
    total, _ = rewards([QA, QA, QA], ["Pink.", "blue", "the pink"])
    assert total.tolist() == [1.0, 0.0, 1.0]
    total, _ = rewards(["q1", "q2"], ["tide pool", "Sana"], answer=["the tide pool", "Mia"])
    assert total.tolist() == [1.0, 0.0]


def test_gold_and_happy_builtins():
    from lmlab.data.storyworld.judge import gold_reward

    story = "Write a story about Mia. It should end happily."
    reply = "Mia found a red ball in the park. She played with her friend all day. Mia was very happy."
    total, parts = load_rewards("storyworld:gold,storyworld:happy", weights=[1.0, 0.5])([story, story], [reply, "sad sad."])
    assert parts["storyworld:gold"][0] == pytest.approx(gold_reward(story, reply))
    assert parts["storyworld:happy"] == [1.0, 0.0]
    assert total[0].item() == pytest.approx(gold_reward(story, reply) + 0.5)


def test_python_callable_with_weights_and_columns():
    total, parts = load_rewards("test_rewards:brevity", weights=[2.0])(["p", "p"], ["a b c", "a"])
    assert parts["test_rewards:brevity"] == [-3.0, -1.0]
    assert total.tolist() == [-6.0, -2.0]
    # a callable passed directly (the Python API)
    total, _ = load_rewards([brevity, brevity], weights=[1, 1])(["p"], ["x y"])
    assert total.tolist() == [-4.0]


def test_bad_reward_specs_are_named_with_the_fix():
    with pytest.raises(ConfigError, match="did you mean storyworld:gold"):
        load_rewards("storyworld:gld")
    with pytest.raises(ConfigError, match=r"cannot import module 'nopkg_xyz\.rewards'"):
        load_rewards("nopkg_xyz.rewards:fn")
    with pytest.raises(ConfigError, match="has no function 'nothing'"):
        load_rewards("test_rewards:nothing")
    with pytest.raises(ConfigError, match="no such folder"):
        load_rewards("runs/does-not-exist")
    with pytest.raises(ConfigError, match="2 values for 1 rewards"):
        load_rewards("storyworld:gold", weights=[1, 2])


def test_reward_functions_that_fail_say_which_and_what():
    with pytest.raises(DataError, match=r"test_rewards:wrong_length returned 1 values for 2 completions: \[1.0\]"):
        load_rewards("test_rewards:wrong_length")(["p", "p"], ["a", "b"])
    with pytest.raises(DataError, match="test_rewards:raises raised KeyError"):
        load_rewards("test_rewards:raises")(["p"], ["a"])
    with pytest.raises(DataError, match="non-finite"):
        load_rewards([lambda p, c, **k: [float("nan")]])(["p"], ["a"])


def test_shaping_penalties_by_hand():
    assert repeated_ngram_share("a b c a b c") == pytest.approx(1 - 3 / 4)  # grams abc bca cab abc
    out = shaping_penalties(["a b c a b c", "x"], ended=[False, True], lengths=[12, 3],
                            missing_eos=1.0, repetition=2.0, length=0.1, target_length=10)
    assert out == pytest.approx([-1.0 - 2.0 * 0.25 - 0.2, 0.0])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_tokenizer_dir):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, pad_token_id=tok.pad_token_id, num_labels=2,
                      id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    path = tmp_path_factory.mktemp("clf")
    Qwen2ForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_classifier_reward_is_the_chosen_labels_logit_or_probability(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    prompts, completions = ["the cat ", "a dog"], ["ran to the park.", " was sad"]
    with torch.no_grad():
        expect = torch.stack([model(**tok(p + c, return_tensors="pt")).logits[0] for p, c in zip(prompts, completions, strict=True)])
    _, parts = load_rewards(str(classifier_dir), label="positive", device="cpu")(prompts, completions)
    assert parts[classifier_dir.name] == pytest.approx(expect[:, 1].tolist(), abs=1e-5)
    _, parts = load_rewards(str(classifier_dir), label="negative", output="prob", device="cpu")(prompts, completions)
    assert parts[classifier_dir.name] == pytest.approx(expect.softmax(-1)[:, 0].tolist(), abs=1e-5)
    with pytest.raises(ConfigError, match="has labels"):
        load_rewards(str(classifier_dir), label="neutral", device="cpu")


def test_train_rm_kind_classifier_learns_labels_and_serves_as_a_reward(tiny_qwen2_dir, tmp_path):
    """A classifier on (text, label) where the label is whether 'happy' or 'sad' ends the text:
    held-out accuracy beats the majority class, and as a reward the positive logit ranks a
    'happy' completion above a 'sad' one."""
    import csv
    import random

    from lmlab.cli import COMMANDS, call

    rng = random.Random(0)
    words = ["the", "cat", "dog", "ran", "park", "ball", "red", "tree"]
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(240):
            good = i % 2 == 0
            w.writerow([" ".join(rng.choice(words) for _ in range(5)) + (" happy" if good else " sad"),
                        "positive" if good else "negative"])
    rm = next(c for c in COMMANDS if c.name == "train rm")  # `lmlab train rm kind=classifier` dispatches to classifier.py
    res = call(rm, {"model": str(tiny_qwen2_dir), "data": str(path), "kind": "classifier", "out": str(tmp_path / "clf"),
                    "max_steps": 60, "batch_size": 16, "lr": 3e-3, "max_length": 32, "val_fraction": 0.2,
                    "log_every": 20, "schedule": "constant"})
    assert res.metrics["labels"] == ["negative", "positive"]
    assert res.metrics["eval_accuracy"] >= 0.9 > res.metrics["majority_baseline"] + 0.2
    _, parts = load_rewards(str(res.path / "final"), label="positive", device="cpu")(["the dog", "the dog"], [" ran happy", " ran sad"])
    good, bad = parts["final"]
    assert good > bad
