"""Datasets over storyworld: `make_dataset(task, n, seed)` → raw dicts the data layer normalises.

    pretrain  {"text"}
    instruct  {"messages": [user prompt, assistant reply]}: 60% write-a-story with constraints,
              10% each summarise / title / continue / answer a question
    continue  {"prompt": first sentence (two if the first does not name the hero), "completion": the rest}
    qa        {"prompt": story + "\\n\\nQuestion: ...", "completion": short answer}
    prefs     {"prompt", "chosen", "rejected"}: chosen meets the prompt; rejected is a corruption
    kto       {"prompt", "completion", "label"}: half good replies (True), half corruptions (False)

Each task draws from its own stream, `random.Random(f"storyworld/{task}/{seed}")`, so the first k
records do not depend on n, and seeds far apart (the registry's split offsets) share no story.

Corruptions of a reply (`CORRUPTIONS`), each checked to really break what it claims to break:
wrong_character, wrong_place, wrong_object, wrong_ending (re-rendered with the same phrasing and one
thing changed), repetitive (sentences looped), off_topic (another story), truncated (cut mid-sentence).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lmlab.data.storyworld import vocab
from lmlab.data.storyworld.generator import Character, Story, render, rerender, sample_spec
from lmlab.data.storyworld.judge import check, ending_sentiment, split_sentences
from lmlab.data.storyworld.prompts import Constraints, sample_constraints, task_prompt, write_prompt
from lmlab.errors import ConfigError

TASKS = ("pretrain", "instruct", "continue", "qa", "prefs", "kto")
INSTRUCT_MIX = (("write", 0.6), ("summary", 0.1), ("title", 0.1), ("continue", 0.1), ("qa", 0.1))


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    corruption: str


def _story(rng: random.Random, **fixed: str | None) -> tuple[Story, int]:
    spec = sample_spec(rng, **fixed)
    seed = rng.getrandbits(64)
    return render(spec, random.Random(seed)), seed


def _written(rng: random.Random) -> tuple[str, Story, int, Constraints]:
    """A write prompt and a story that meets it."""
    story, seed = _story(rng)
    c = sample_constraints(story.spec, rng)
    return write_prompt(c, rng), story, seed, c


def _other(rng: random.Random, pool: list[str] | tuple[str, ...], *avoid: str | None) -> str:
    while True:
        x = rng.choice(pool)
        if x not in avoid:
            return x


# -- corruptions: (story, seed, constraints, rng) → rejected text, or None if not applicable --------------
def _wrong_character(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    if not (c.name or c.kind):
        return None
    taken = [s.main.name, s.main.kind, *(o.name for o in s.others), *(o.kind for o in s.others)]
    kind = _other(rng, vocab.KINDS, *taken)
    gender = vocab.PEOPLE.get(kind) or rng.choice("fm")
    name = _other(rng, vocab.GIRL_NAMES if gender == "f" else vocab.BOY_NAMES, *taken)
    main = Character(name, kind, vocab.PRONOUNS[gender]["he"])
    return _if_broken(rerender(s, seed, main=main).text, c, ("name", "kind"))


def _wrong_place(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    if not c.place:
        return None
    return _if_broken(rerender(s, seed, place=_other(rng, list(vocab.PLACES), s.place)).text, c, ("place",))


def _wrong_object(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    if not c.object:
        return None
    return _if_broken(rerender(s, seed, object=_other(rng, vocab.OBJECTS, s.object)).text, c, ("object",))


def _wrong_ending(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    if not c.ending:
        return None
    return rerender(s, seed, ending="sad" if s.ending == "happy" else "happy").text


def _repetitive(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    sents = s.sentences
    k = rng.randint(1, min(3, len(sents) - 1))
    loop = sents[:k] * rng.randint(3, 4)        # the opening said over and over
    return " ".join(loop if rng.random() < 0.5 else [*loop, *sents[k:]])


def _off_topic(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    other, _ = _story(rng, name=_other(rng, vocab.NAMES, c.name), kind=_other(rng, vocab.KINDS, c.kind),
                      place=_other(rng, list(vocab.PLACES), c.place), object=_other(rng, vocab.OBJECTS, c.object),
                      ending=None if c.ending is None else ("sad" if c.ending == "happy" else "happy"))
    return _if_broken(other.text, c, tuple(c.asked()))


def _truncated(s: Story, seed: int, c: Constraints, rng: random.Random) -> str | None:
    words = s.text.split()
    cut = max(3, int(len(words) * rng.uniform(0.3, 0.6)))
    text = " ".join(words[:cut]).rstrip(".!?,\"")
    return text if text != s.text else None


CORRUPTIONS: dict[str, Callable[[Story, int, Constraints, random.Random], str | None]] = {
    "wrong_character": _wrong_character, "wrong_place": _wrong_place, "wrong_object": _wrong_object,
    "wrong_ending": _wrong_ending, "repetitive": _repetitive, "off_topic": _off_topic, "truncated": _truncated,
}


def _if_broken(text: str, c: Constraints, keys: tuple[str, ...]) -> str | None:
    """The text, if every constraint in `keys` that was asked now fails (no accidental match)."""
    checks = check(c, text, ending_sentiment(split_sentences(text)))
    asked = [k for k in keys if k in checks and k != "color"]
    return text if asked and not any(checks[k] for k in asked) else None


def make_pair(rng: random.Random, kinds: tuple[str, ...] = tuple(CORRUPTIONS)) -> Pair:
    """A write prompt, a story that meets it, and a corruption of that story (kind recorded)."""
    while True:
        prompt, story, seed, c = _written(rng)
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            rejected = CORRUPTIONS[kind](story, seed, c, rng)
            if rejected:
                return Pair(prompt, story.text, rejected, kind)


def _opening(story: Story) -> tuple[str, str]:
    """(first sentence, rest); two sentences when the first does not name the main character."""
    k = 1 if story.main.name in story.sentences[0] else 2
    return " ".join(story.sentences[:k]), " ".join(story.sentences[k:])


# -- tasks -----------------------------------------------------------------------------------------------
def _instruct(rng: random.Random) -> dict:
    r, acc, kind = rng.random(), 0.0, "write"
    for kind, share in INSTRUCT_MIX:  # noqa: B007 - the loop variable is the pick
        acc += share
        if r < acc:
            break
    if kind == "write":
        prompt, story, _, _ = _written(rng)
        reply = story.text
    else:
        story, _ = _story(rng)
        if kind == "summary":
            prompt, reply = task_prompt("summary", story.text, rng), story.summary
        elif kind == "title":
            prompt, reply = task_prompt("title", story.text, rng), story.title
        elif kind == "continue":
            head, rest = _opening(story)
            prompt, reply = task_prompt("continue", head, rng), rest
        else:
            q, a = rng.choice(story.qa)
            prompt, reply = task_prompt("qa", story.text, rng, question=q), a
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def _one(task: str, rng: random.Random) -> dict:
    if task == "pretrain":
        return {"text": _story(rng)[0].text}
    if task == "instruct":
        return _instruct(rng)
    if task == "continue":
        head, rest = _opening(_story(rng)[0])
        return {"prompt": head, "completion": rest}
    if task == "qa":
        story = _story(rng)[0]
        q, a = rng.choice(story.qa)
        return {"prompt": f"{story.text}\n\nQuestion: {q}", "completion": a}
    if task == "prefs":
        p = make_pair(rng)
        return {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
    # kto: unpaired; a good reply or a corrupted one, half and half
    p = make_pair(rng)
    good = rng.random() < 0.5
    return {"prompt": p.prompt, "completion": p.chosen if good else p.rejected, "label": good}


def make_dataset(task: str, n: int, seed: int = 0) -> list[dict]:
    """`n` records of `task` (one of TASKS), deterministic in (task, seed); see the module docstring."""
    if task not in TASKS:
        from lmlab.config import closest
        raise ConfigError(f"unknown storyworld task {task!r}; choose one of {', '.join(TASKS)}"
                          + (f" (did you mean {closest(task, TASKS)!r}?)" if closest(task, TASKS) else ""))
    if n < 0:
        raise ConfigError(f"storyworld: n must be >= 0, got {n}")
    rng = random.Random(f"storyworld/{task}/{seed}")
    return [_one(task, rng) for _ in range(n)]
