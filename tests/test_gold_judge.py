"""The gold judge: worked values, hand-written cases, agreement with the preference data, parsing."""
from __future__ import annotations

import itertools
import random

import pytest

from lmlab.data.storyworld import gold_reward, judge, make_dataset, parse_constraints
from lmlab.data.storyworld.generator import sample_spec
from lmlab.data.storyworld.judge import repetition
from lmlab.data.storyworld.prompts import STYLES, Constraints, detect_task, write_prompt
from lmlab.data.storyworld.tasks import CORRUPTIONS, make_pair

PROMPT = "Write a story about a girl named Mia at the park with a red ball. It should end happily."
GOOD = ("One sunny day, a little girl named Mia went to the park. Mia had a red ball that she loved very much. "
        "She played with it and laughed. Then the ball rolled away behind a bush. Mia looked everywhere. "
        "At last, she found the ball under a bench. She hugged it and smiled.")


def test_prompt_parsing():
    c = parse_constraints(PROMPT)
    assert c == Constraints(name="Mia", kind="girl", place="park", object="ball", color="red", ending="happy")
    assert detect_task(PROMPT) == "write"


def test_good_response_meets_everything():
    r = judge(PROMPT, GOOD)
    assert r.constraints == {"name": True, "kind": True, "place": True, "object": True, "ending": True}
    assert r.constraint_rate == 1.0 and r.happy is True and r.repetition == 0.0
    # by hand: 7 sentences of 3..30 words (sentence_ok 1), ends with "." (complete 1), ≥ 3 sentences
    # (length 1), every word a storyworld word (vocab 1), no 3-gram twice, few 3-grams of the prompt
    # → fluency 1, quality 1, all 5 constraints → reward 1 · (0.25 + 0.75) = 1
    assert r.fluency == 1.0 and r.echo < 0.5 and r.reward == pytest.approx(1.0) and r.task == "write"


@pytest.mark.parametrize("bad, failed", [
    (GOOD.replace("Mia", "Lucy"), "name"),                                             # (a) missing the character
    (GOOD.replace("park", "beach"), "place"),                                          # (b) wrong place
    (GOOD.replace("At last, she found the ball under a bench. She hugged it and smiled.",
                  "She never found the ball. She walked home and cried."), "ending"),  # (c) sad, happy asked
    (GOOD.replace("red ball", "blue ball"), "object"),                                 # wrong colour
])
def test_each_broken_constraint_costs_reward(bad, failed):
    good, r = judge(PROMPT, GOOD), judge(PROMPT, bad)
    assert r.constraints[failed] is False
    assert sum(r.constraints.values()) == 4 and r.constraint_rate == pytest.approx(0.8)
    assert r.reward < good.reward
    # the edit keeps every sentence well-formed and every word in the vocabulary (fluency 1, no
    # repetition), so by hand a single miss leaves 0.25 + 0.75 · 4/5 = 0.85
    assert r.fluency == 1.0 and r.repetition == 0.0
    assert r.reward == pytest.approx(0.85)


def test_sad_ending_is_read_as_sad():
    bad = GOOD.replace("She hugged it and smiled.", "She sat down and cried.")
    assert judge(PROMPT, bad).happy is False
    assert judge("Write a sad story about a dog.", bad).constraints == {"kind": False, "ending": True}


def test_repetitive_response_worked_value():
    """"the dog ran. the dog ran. the dog ran." — 9 words, 7 trigrams, 3 distinct: repetition 4/7.

    No capital after each stop, so it is one 9-word sentence: sentence_ok 1, complete 1, length 1/3,
    every word in the vocabulary → fluency 1/3, quality 1/3 · 3/7 = 1/7; no constraint met →
    reward = 1/7 · 0.25 = 1/28."""
    r = judge(PROMPT, "the dog ran. the dog ran. the dog ran.")
    assert r.repetition == pytest.approx(4 / 7)
    assert r.fluency == pytest.approx(1 / 3)
    assert r.constraint_rate == 0.0
    assert r.reward == pytest.approx(1 / 28)
    assert r.reward < judge(PROMPT, GOOD).reward


def test_small_worked_example():
    """12 words, 10 distinct trigrams (repetition 0); sentences of 5, 5, 2 words → sentence_ok 2/3;
    3 sentences → length 1; the name is met → reward = 2/3 · (0.25 + 0.75) = 2/3."""
    r = judge("Write a story about Mia.", "Mia went to the park. Mia saw a red ball. Mia smiled.")
    assert r.constraints == {"name": True} and r.repetition == 0.0
    assert r.reward == pytest.approx(2 / 3)


def test_empty_and_garbage():
    assert judge(PROMPT, "").reward == 0.0 and gold_reward(PROMPT, "   ...  ") == 0.0
    assert gold_reward(PROMPT, "Mia girl park red ball happy") < 0.3  # keyword stuffing is not a story
    rng = random.Random(0)
    letters = "abcdefghij .!?\"XYZ"
    for _ in range(200):
        text = "".join(rng.choice(letters) for _ in range(rng.randint(0, 80)))
        assert 0.0 <= gold_reward(PROMPT, text) <= 1.0


def test_repetition_helper():
    assert repetition(["a", "b", "c", "a", "b", "c"]) == pytest.approx(1 - 3 / 4)
    assert repetition(["one", "two"]) == 0.0


def test_free_prompt_scores_fluency_and_repetition_only():
    """"The sun was warm and the sky was zorp." — 9 words, 8 storyworld words ("zorp" is not), 7
    distinct 3-grams: fluency = vocab share = 8/9, repetition 0, nothing asked → reward 8/9."""
    r = judge("What do you think about that?", "The sun was warm and the sky was zorp.")
    assert r.task == "free" and r.constraints == {} and r.constraint_rate == 1.0
    assert r.repetition == 0.0 and r.reward == pytest.approx(8 / 9)
    # a 3-gram said twice: "the sky was big and the sky was blue" — 9 words, 7 trigrams, 6 distinct
    r = judge("What do you think about that?", "The sky was big and the sky was blue.")
    assert r.repetition == pytest.approx(1 / 7) and r.reward == pytest.approx(6 / 7)
    assert judge("What do you think?", "zzq xqv wpt").reward < r.reward


def test_echoing_the_prompt_is_worth_nothing():
    """Echo 1 → quality · (1 - 2 · 0.5) = 0, although every constraint word is present."""
    r = judge(PROMPT, PROMPT)
    assert r.echo == 1.0 and r.constraint_rate == 1.0 and r.reward == 0.0
    story = GOOD
    summary_prompt = f"Summarize this story in one sentence.\n\n{story}"
    copied, real = judge(summary_prompt, story), judge(summary_prompt, "Mia found her lost red ball at the park.")
    assert copied.echo == 1.0 and copied.reward == 0.0 and real.reward > 0.9
    # answers and titles may quote the story: no echo penalty there
    assert judge(f"Give this story a title.\n\n{story}", "A Sunny Day").echo == 0.0
    for r in make_dataset("instruct", 300, 1):
        prompt, reply = (m["content"] for m in r["messages"])
        assert judge(prompt, reply).echo < 0.5  # generated replies are never penalised for echo


def test_chat_markers_are_ignored():
    rendered = f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    assert judge(rendered, GOOD + "<|im_end|>") == judge(PROMPT, GOOD)
    assert judge(PROMPT, "<|endoftext|>").reward == 0.0


def test_deterministic_and_gold_reward_equals_judge():
    assert judge(PROMPT, GOOD) == judge(PROMPT, GOOD)
    assert gold_reward(PROMPT, GOOD) == judge(PROMPT, GOOD).reward


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_chosen_beats_rejected_for_each_corruption(kind):
    rng = random.Random(kind)
    pairs = [make_pair(rng, kinds=(kind,)) for _ in range(60)]
    assert all(p.corruption == kind for p in pairs)
    wins = sum(gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in pairs)
    assert wins / len(pairs) >= 0.95


def test_prefs_dataset_agrees_with_the_judge():
    rows = make_dataset("prefs", 400, 0)
    wins = sum(gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"]) for r in rows)
    assert wins / len(rows) >= 0.95


def test_kto_labels_separate_under_the_judge():
    rows = make_dataset("kto", 300, 0)
    good = [gold_reward(r["prompt"], r["completion"]) for r in rows if r["label"]]
    bad = [gold_reward(r["prompt"], r["completion"]) for r in rows if not r["label"]]
    assert min(good) > 0.7 and sum(good) / len(good) - sum(bad) / len(bad) > 0.3


def test_generated_replies_meet_their_prompts():
    for r in make_dataset("instruct", 300, 0):
        prompt, reply = (m["content"] for m in r["messages"])
        result = judge(prompt, reply)
        assert result.constraint_rate == 1.0, (prompt, reply, result)
        assert result.reward > 0.7


def test_task_prompts_are_judged_by_their_task():
    story = ("One sunny day, a little girl named Mia went to the park. Mia had a red ball. "
             "She played with it all day. She hugged it and smiled.")
    qa = f"{story}\n\nQuestion: What color is the ball?"
    assert judge(qa, "red").constraints == {"answer": True} and judge(qa, "blue").constraints == {"answer": False}
    assert judge(qa, "red").reward > judge(qa, "blue").reward
    summary = f"Summarize this story in one sentence.\n\n{story}"
    assert detect_task(summary) == "summary"
    assert judge(summary, "Mia played with her red ball at the park.").constraints == {"name": True}
    cont = f"Continue this story.\n\n{story.split('. ')[0]}."
    assert judge(cont, "Mia had a red ball. She played with it.").constraints == {"name": True}
    assert judge(cont, "Tom had a red ball. He played with it.").constraints == {"name": False}
    assert detect_task("One sunny day, a little girl named Mia went to the park.") == "opening"


def _all_constraint_sets(spec):
    """Every non-empty combination of who (both/name/kind/none) × place × object(±colour) × ending."""
    whos = [(spec.main.name, spec.main.kind), (spec.main.name, None), (None, spec.main.kind), (None, None)]
    objs = [(None, None), (spec.object, None), (spec.object, spec.color)]
    for (name, kind), place, (obj, color), ending in itertools.product(
            whos, (None, spec.place), objs, (None, "happy", "sad")):
        c = Constraints(name, kind, place, obj, color, ending)
        if c.asked():
            yield c


def test_constraints_round_trip_through_every_phrasing():
    rng = random.Random(0)
    checked = 0
    for _ in range(12):
        spec = sample_spec(rng)
        for c in _all_constraint_sets(spec):
            for style in range(len(STYLES)):
                for _ in range(3):  # different phrasings within the style
                    prompt = write_prompt(c, rng, style=style)
                    assert parse_constraints(prompt) == c, prompt
                    assert detect_task(prompt) == "write", prompt
                    checked += 1
    assert checked > 5000
