"""Storyworld generator and tasks: determinism, richness, coherence invariants, record shapes."""
from __future__ import annotations

import random
import re

import pytest

from lmlab.data.storyworld import TASKS, generate_story, make_dataset, parse_constraints, vocab, world_stats
from lmlab.data.storyworld.arcs import ARCS
from lmlab.data.storyworld.judge import ending_sentiment, expected_answer, split_sentences, vocabulary
from lmlab.errors import ConfigError


def _stories(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_data_other_seed_other_data(task):
    a, b, c = make_dataset(task, 30, 0), make_dataset(task, 30, 0), make_dataset(task, 30, 1)
    assert a == b
    assert all(x != y for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("task", TASKS)
def test_first_records_do_not_depend_on_n(task):
    assert make_dataset(task, 7, 3) == make_dataset(task, 20, 3)[:7]


def test_generate_story_is_deterministic_and_pure():
    state = random.getstate()
    assert generate_story(5).text == generate_story(5).text != generate_story(6).text
    assert random.getstate() == state  # no global RNG touched


def test_split_seeds_share_no_story():
    """The registry gives train/validation/test seeds 0, 1_000_003, 2_000_029."""
    splits = [{r["text"] for r in make_dataset("pretrain", 2000, s)} for s in (0, 1_000_003, 2_000_029)]
    assert all(len(s) == 2000 for s in splits)
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])


def test_world_is_rich():
    stats = world_stats(draws=20000, seed=0)
    assert stats["distinct_fraction"] >= 0.999
    assert stats["vocabulary_size"] >= 1000
    assert stats["arcs"] >= 8 and stats["names"] >= 200 and stats["places"] >= 40 and stats["objects"] >= 60
    assert 4 <= stats["mean_sentences"] <= 8


def test_word_lists_cannot_be_confused():
    """No place phrase holds a kind/object word, no name is an ordinary word, no list overlaps."""
    kinds, objects, places = set(vocab.KINDS), set(vocab.OBJECTS), set(vocab.PLACES)
    for place in places:
        assert not set(place.split()) & (kinds | objects | set(vocab.COLORS)), place
        assert not any(re.search(rf"\b{re.escape(o)}\b", place) for o in places - {place}), place
    assert not kinds & objects and not (kinds | objects) & set(vocab.HELPERS)
    assert len(set(vocab.NAMES)) == len(vocab.NAMES) and not set(vocab.GIRL_NAMES) & set(vocab.BOY_NAMES)
    template_words = vocabulary() - {n.lower() for n in vocab.NAMES}
    assert not {n.lower() for n in vocab.NAMES} & template_words
    assert not vocab.HAPPY_WORDS & vocab.SAD_WORDS


def test_story_fields_and_shape():
    for s in _stories(2000, seed=1):
        assert 3 <= len(s.sentences) <= 8
        assert s.text == " ".join(s.sentences)
        assert s.ending in ("happy", "sad") and s.arc in {a.name for a in ARCS}
        assert f"{s.color} {s.object}" in s.text and s.main.name in s.sentences[0] + s.sentences[1]
        assert s.main.name in s.summary and s.title and s.title[0].isupper()
        assert all(o.name != s.main.name for o in s.others)
    arcs = {s.arc for s in _stories(500)}
    assert len(arcs) == len(ARCS) >= 8


def test_every_story_names_only_its_own_character_place_and_object():
    """What the judge reads out of a story is exactly what was generated (no stray place/object/kind/weather)."""
    place_re = re.compile(r"\b(" + "|".join(sorted(map(re.escape, vocab.PLACES), key=len, reverse=True)) + r")\b")
    object_re = re.compile(r"\b(" + "|".join(vocab.OBJECTS) + r")s?\b")
    kind_re = re.compile(r"\b(" + "|".join(vocab.KINDS) + r")s?\b")
    weather_re = re.compile(r"\b(" + "|".join(vocab.WEATHER) + r")\b")
    for s in _stories(2000, seed=2):
        found = parse_constraints(s.text)
        assert (found.name, found.kind, found.place, found.object, found.color) == (
            s.main.name, s.main.kind, s.place, s.object, s.color), s.text
        places = set(place_re.findall(s.text))
        objects, kinds = set(object_re.findall(s.text)), set(kind_re.findall(s.text))
        assert places == {s.place} and objects == {s.object}, s.text
        assert kinds <= {s.main.kind} | {o.kind for o in s.others}, s.text
        assert set(weather_re.findall(s.text)) == {s.weather}, s.text


def test_pronouns_agree_with_the_main_character():
    checked = 0
    wrong = {"she": r"\b(he|him|his|himself|He|His)\b", "he": r"\b(she|her|herself|She|Her)\b"}
    for s in _stories(3000, seed=3):
        if any(o.pronoun != s.main.pronoun for o in s.others):
            continue  # another character may rightly use the other pronoun
        assert not re.search(wrong[s.main.pronoun], s.text), s.text
        checked += 1
    assert checked > 500
    girls = [s for s in _stories(500, seed=4) if s.main.kind == "girl"]
    assert girls and all(s.main.pronoun == "she" and s.main.name in vocab.GIRL_NAMES for s in girls)


def test_endings_read_back_by_the_lexicon_and_sentences_split_back():
    stories = _stories(3000, seed=5)
    assert all(ending_sentiment(s.sentences) == (s.ending == "happy") for s in stories)
    assert all(split_sentences(s.text) == s.sentences for s in stories)
    share = sum(s.ending == "happy" for s in stories) / len(stories)
    assert 0.6 < share < 0.8  # TinyStories-like: mostly happy, HAPPY_SHARE = 0.7


def test_fixed_fields_are_kept():
    s = generate_story(0, name="Mia", kind="girl", place="toy shop", object="kite", color="red", ending="sad")
    assert (s.main.name, s.main.kind, s.main.pronoun, s.place, s.object, s.color, s.ending) == (
        "Mia", "girl", "she", "toy shop", "kite", "red", "sad")
    assert "red kite" in s.text and "toy shop" in s.text and ending_sentiment(s.sentences) is False
    assert generate_story(1, name="Tom").main.pronoun == "he"


def test_record_shapes():
    rows = {t: make_dataset(t, 200, 0) for t in TASKS}
    assert all(set(r) == {"text"} and isinstance(r["text"], str) for r in rows["pretrain"])
    for r in rows["instruct"]:
        assert set(r) == {"messages"} and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(set(m) == {"role", "content"} and m["content"] for m in r["messages"])
    for t in ("continue", "qa"):
        assert all(set(r) == {"prompt", "completion"} and r["prompt"] and r["completion"] for r in rows[t])
    assert all(set(r) == {"prompt", "chosen", "rejected"} and r["chosen"] != r["rejected"] for r in rows["prefs"])
    assert all(set(r) == {"prompt", "completion", "label"} and isinstance(r["label"], bool) for r in rows["kto"])
    assert 0.35 < sum(r["label"] for r in rows["kto"]) / 200 < 0.65


def test_instruct_mixes_all_its_tasks():
    firsts = [r["messages"][0]["content"].split("\n")[0] for r in make_dataset("instruct", 400, 0)]
    kinds = {
        "summary": sum("ummarize" in f or "what happened" in f for f in firsts),
        "title": sum("title" in f for f in firsts),
        "continue": sum(f.startswith(("Continue", "Finish")) for f in firsts),
        "qa": sum("answer the question" in f.lower() for f in firsts),
    }
    assert all(15 <= v <= 70 for v in kinds.values()), kinds  # 10% of 400 each
    assert 200 <= 400 - sum(kinds.values()) <= 280              # 60% write-a-story


def test_continue_and_qa_are_consistent_with_their_stories():
    for r in make_dataset("continue", 200, 0):
        first = parse_constraints(r["prompt"])
        assert first.name and first.name in r["completion"]  # the story goes on about the same character
    for r in make_dataset("qa", 300, 0):
        story, _, question = r["prompt"].rpartition("\n\nQuestion: ")
        assert expected_answer(story, question) in r["completion"]


def test_unknown_story_field_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown place 'parc'; did you mean 'park'"):
        generate_story(0, place="parc")
    with pytest.raises(ConfigError, match="unknown ending 'happyish'; did you mean 'happy'"):
        generate_story(0, ending="happyish")


def test_unknown_task_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'prefs'"):
        make_dataset("pref", 3, 0)
    with pytest.raises(ConfigError, match="n must be >= 0"):
        make_dataset("pretrain", -1, 0)
