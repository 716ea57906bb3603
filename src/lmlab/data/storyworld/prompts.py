"""Prompts over storyworld stories, and the parser that reads their constraints back.

A write-a-story prompt carries up to five constraints (character name and/or kind, place, object
with an optional colour, ending). They are phrased many ways, but every phrasing names them with
storyworld words, so `parse_constraints` recovers them by looking the words up, whatever the
sentence around them. That is what lets the gold judge score a reply to any generated prompt, and
degrade gracefully on a free prompt (no constraint found → none checked).

Task prompts put their instruction first, then a blank line and the story (`TASK_PROMPTS`);
`detect_task` tells them apart by the instruction alone.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, fields

from lmlab.data.storyworld import vocab


@dataclass(frozen=True)
class Constraints:
    """What a prompt asks for; None means not asked."""
    name: str | None = None
    kind: str | None = None
    place: str | None = None
    object: str | None = None
    color: str | None = None      # only together with object
    ending: str | None = None     # "happy" | "sad"

    def asked(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# -- phrasing ------------------------------------------------------------------------------------------
CHARACTER = {
    "both": ("a {kind} named {name}", "a {kind} called {name}", "{name} the {kind}", "a little {kind} named {name}"),
    "name": ("{name}", "someone named {name}", "a character called {name}"),
    "kind": ("a {kind}", "a little {kind}", "a friendly {kind}"),
}
PLACE = ("{at} the {place}", "set {at} the {place}", "that takes place {at} the {place}")
OBJECT = ("with a {thing}", "involving a {thing}", "where a {thing} is important")
ENDING = {
    "happy": ("It should end happily.", "Give it a happy ending.", "Make sure it ends happily.", "The ending should be happy."),
    "sad": ("It should end sadly.", "Give it a sad ending.", "Make the ending sad.", "Let it have a sad ending."),
}
LEADS = ("Write a story", "Tell me a short story", "Can you write a bedtime story", "Please write a simple story",
         "Make up a story")


def _piece(options: tuple[str, ...], rng: random.Random, **slots: str) -> str:
    return rng.choice(options).format(**slots)


def _fix_articles(text: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def _inline(c: Constraints, rng: random.Random, lead: str) -> str:
    """"Write a story about a girl named Mia at the park with a red ball. It should end happily." """
    parts = [rng.choice(LEADS) if lead == "" else lead]
    who = _who(c)
    if who:
        parts.append("about " + _piece(CHARACTER[who], rng, name=c.name or "", kind=c.kind or ""))
    if c.place:
        parts.append(_piece(PLACE, rng, at=vocab.PLACES[c.place], place=c.place))
    if c.object:
        parts.append(_piece(OBJECT, rng, thing=_thing(c)))
    end = "?" if parts[0].startswith("Can you") else "."
    text = " ".join(parts) + end
    if c.ending:
        text += " " + rng.choice(ENDING[c.ending])
    return text


def _listed(c: Constraints, rng: random.Random) -> str:
    """A form with one line per constraint."""
    lines = [rng.choice(("Write a short story for children.", "Write a story with these details:"))]
    who = _who(c)
    if who:
        lines.append("Main character: " + _piece(CHARACTER[who], rng, name=c.name or "", kind=c.kind or ""))
    if c.place:
        lines.append(f"Place: the {c.place}")
    if c.object:
        lines.append(f"Object: a {_thing(c)}")
    if c.ending:
        lines.append(f"Ending: {c.ending}")
    return "\n".join(lines)


def _sentences(c: Constraints, rng: random.Random) -> str:
    """Several short sentences: "Please write a story. The main character is Mia. It happens at ..." """
    out = [rng.choice(("Please write a story.", "I would like a story.", "Write me a little story."))]
    who = _who(c)
    if who:
        out.append("The main character is " + _piece(CHARACTER[who], rng, name=c.name or "", kind=c.kind or "") + ".")
    if c.place:
        out.append(f"It happens {vocab.PLACES[c.place]} the {c.place}.")
    if c.object:
        out.append(rng.choice(("Include a {thing}.", "There should be a {thing} in it.")).format(thing=_thing(c)))
    if c.ending:
        out.append(rng.choice(ENDING[c.ending]))
    return " ".join(out)


STYLES = (lambda c, r: _inline(c, r, ""), _listed, _sentences)


def _who(c: Constraints) -> str:
    return "both" if c.name and c.kind else "name" if c.name else "kind" if c.kind else ""


def _thing(c: Constraints) -> str:
    return f"{c.color} {c.object}" if c.color else str(c.object)


def write_prompt(c: Constraints, rng: random.Random, style: int | None = None) -> str:
    """A request for a story meeting `c`, in one of `STYLES` (random unless `style` is given)."""
    if not c.asked():
        raise ValueError("a write prompt needs at least one constraint")
    fn = STYLES[rng.randrange(len(STYLES)) if style is None else style]
    return _fix_articles(fn(c, rng))


def sample_constraints(story_spec, rng: random.Random) -> Constraints:
    """Pick which of a story's attributes a prompt asks for (1 to 5 of them, all true of the story)."""
    s = story_spec
    while True:
        who = rng.choice(("both", "both", "name", "kind", ""))
        c = Constraints(
            name=s.main.name if who in ("both", "name") else None,
            kind=s.main.kind if who in ("both", "kind") else None,
            place=s.place if rng.random() < 0.6 else None,
            object=s.object if rng.random() < 0.6 else None,
            ending=s.ending if rng.random() < 0.6 else None,
        )
        if c.object and rng.random() < 0.5:
            c = Constraints(**{**c.asked(), "color": s.color})
        if c.asked():
            return c


# -- task prompts ----------------------------------------------------------------------------------------
TASK_PROMPTS = {
    "summary": ("Summarize this story in one sentence.", "Read the story below and tell me what happened in one sentence."),
    "title": ("Give this story a title.", "What would be a good title for this story?"),
    "continue": ("Continue this story.", "Finish the story that starts like this."),
    "qa": ("Answer the question about this story.", "Read the story and answer the question."),
}
_TASK_WORDS = (("qa", re.compile(r"\banswer\b|\nQuestion: ", re.I)), ("summary", re.compile(r"summar|what happened", re.I)),
               ("title", re.compile(r"\btitle\b", re.I)), ("continue", re.compile(r"\bcontinue|\bfinish", re.I)))
_REQUEST = re.compile(r"\b(write|tell|story|make up|create|compose)\b", re.I)


def task_prompt(task: str, passage: str, rng: random.Random, question: str | None = None) -> str:
    text = f"{rng.choice(TASK_PROMPTS[task])}\n\n{passage}"
    return f"{text}\n\nQuestion: {question}" if question else text


def split_prompt(prompt: str) -> tuple[str, str]:
    """(instruction, passage): the passage is everything after the first blank line."""
    head, _, rest = prompt.strip().partition("\n\n")
    return head, rest


def detect_task(prompt: str) -> str:
    """"write" | "summary" | "title" | "continue" | "qa" | "opening" (a bare story start) | "free"."""
    head, passage = split_prompt(prompt)
    if "\nQuestion: " in prompt:
        return "qa"
    if passage:
        for task, pattern in _TASK_WORDS:
            if pattern.search(head):
                return task
    if _REQUEST.search(head):
        return "write"
    if parse_constraints(prompt).name and not prompt.rstrip().endswith("?"):
        return "opening"
    return "free"


# -- parsing -------------------------------------------------------------------------------------------
_NAMES = frozenset(vocab.NAMES)
_KINDS = frozenset(vocab.KINDS)
_OBJECTS = frozenset(vocab.OBJECTS)
_COLORS = frozenset(vocab.COLORS)
_PLACE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, vocab.PLACES), key=len, reverse=True)) + r")\b", re.I)
_HAPPY_ASK = re.compile(r"\b(happy|happily)\b", re.I)
_SAD_ASK = re.compile(r"\b(sad|sadly)\b", re.I)
_WORD = re.compile(r"[A-Za-z]+")


def parse_constraints(text: str) -> Constraints:
    """The storyworld constraints named in `text` (the first of each kind)."""
    words = _WORD.findall(text)
    name = next((w for w in words if w in _NAMES), None)
    lower = [w.lower() for w in words]
    kind = next((w for w in lower if w in _KINDS), None)
    obj = color = None
    for i, w in enumerate(lower):
        if w in _OBJECTS:
            obj = w
            color = lower[i - 1] if i > 0 and lower[i - 1] in _COLORS else None
            break
    m = _PLACE_RE.search(text)
    happy, sad = _HAPPY_ASK.search(text), _SAD_ASK.search(text)
    ending = None
    if happy or sad:
        ending = "happy" if happy and (not sad or happy.start() < sad.start()) else "sad"
    return Constraints(name=name, kind=kind, place=m.group(1).lower() if m else None, object=obj, color=color,
                       ending=ending)
