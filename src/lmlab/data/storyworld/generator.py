"""Seeded generator of short, coherent stories: a `Spec` (who, where, what, which arc, which
ending) is sampled, then rendered sentence by sentence from the arc's templates.

Sampling and rendering are split so that a preference pair can render the *same* story twice with
one thing changed (the place, the ending ...) and the same phrasing everywhere else. Everything is
driven by a `random.Random` passed in: no global state, same seed → same story.

    story = generate_story(0, place="beach", ending="happy")
    story.text, story.title, story.summary, story.qa
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace

from lmlab.config import closest
from lmlab.data.storyworld import vocab
from lmlab.data.storyworld.arcs import ARCS, DETAILS, OPENINGS, Arc
from lmlab.errors import ConfigError

ARCS_BY_NAME: dict[str, Arc] = {arc.name: arc for arc in ARCS}
HAPPY_SHARE = 0.7  # TinyStories-like: most stories end well
_CHOICE = re.compile(r"\[([^\[\]]*)\]")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


@dataclass(frozen=True)
class Character:
    name: str       # "" for a grown-up helper, who is called by role ("her mom")
    kind: str       # "girl", "fox", "baker", "mom" ...
    pronoun: str    # "she" | "he"


@dataclass(frozen=True)
class Spec:
    """Everything that decides what a story is about; rendering only picks words."""
    main: Character
    arc: str
    place: str
    object: str
    color: str
    weather: str
    ending: str                     # "happy" | "sad"
    friend: Character | None = None
    helper: Character | None = None
    desc: str = "little"            # adjective for the main character ("a little girl")
    fdesc: str = "friendly"


@dataclass
class Story:
    text: str
    title: str
    summary: str
    sentences: list[str]
    main: Character
    others: list[Character]
    place: str
    object: str
    color: str
    weather: str
    arc: str
    ending: str
    qa: list[tuple[str, str]] = field(default_factory=list)
    spec: Spec | None = None


def _compile(template: str) -> tuple[str | tuple[str, ...], ...]:
    """Split "[a|b] c" into parts once, so rendering is joins and `rng.choice`, not regex."""
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _CHOICE.finditer(template):
        parts.append(template[pos:m.start()])
        parts.append(tuple(m.group(1).split("|")))
        pos = m.end()
    parts.append(template[pos:])
    return tuple(p for p in parts if p != "")


_COMPILED: dict[str, tuple[str | tuple[str, ...], ...]] = {}


def expand(template: str, slots: dict[str, str], rng: random.Random) -> str:
    """One sentence: synonyms picked with `rng`, slots filled, "a apple" → "an apple"."""
    parts = _COMPILED.get(template)
    if parts is None:
        parts = _COMPILED[template] = _compile(template)
    text = "".join(p if isinstance(p, str) else rng.choice(p) for p in parts)
    return _ARTICLE.sub(r"\1n ", text.format_map(slots))


_GIRLS = frozenset(vocab.GIRL_NAMES)


def _gender_of(name: str) -> str:
    return "f" if name in _GIRLS else "m"


def _pick_name(rng: random.Random, gender: str, avoid: set[str]) -> str:
    pool = vocab.GIRL_NAMES if gender == "f" else vocab.BOY_NAMES if gender == "m" else vocab.NAMES
    while True:
        name = rng.choice(pool)
        if name not in avoid:
            return name


def _character(rng: random.Random, name: str | None, kind: str | None, avoid: set[str]) -> Character:
    """A name and kind that agree: girls get girls' names; animals and roles take the name's."""
    if kind is None:
        kind = rng.choice(vocab.KINDS)
        if name is not None and vocab.PEOPLE.get(kind, _gender_of(name)) != _gender_of(name):
            kind = "girl" if _gender_of(name) == "f" else "boy"
    forced = vocab.PEOPLE.get(kind, "")
    if name is None:
        name = _pick_name(rng, forced, avoid)
    gender = forced or _gender_of(name)
    return Character(name, kind, vocab.PRONOUNS[gender]["he"])


def sample_spec(rng: random.Random, *, name: str | None = None, kind: str | None = None,
                place: str | None = None, object: str | None = None, color: str | None = None,
                ending: str | None = None, arc: str | None = None, weather: str | None = None) -> Spec:
    """Draw a story's content; any field given is kept as is (that is how prompts constrain it)."""
    _validate(kind=kind, place=place, object=object, color=color, ending=ending, arc=arc, weather=weather)
    main = _character(rng, name, kind, set())
    arc_ = ARCS_BY_NAME[arc] if arc else rng.choice(ARCS)
    friend = helper = None
    if arc_.cast == "friend":
        friend = _character(rng, None, None, {main.name})
    helper_kind = rng.choice(list(vocab.HELPERS))
    helper = Character("", helper_kind, vocab.PRONOUNS[vocab.HELPERS[helper_kind]]["he"])
    young = vocab.is_young(main.kind)
    return Spec(
        main=main, arc=arc_.name,
        place=place or rng.choice(list(vocab.PLACES)),
        object=object or rng.choice(vocab.OBJECTS),
        color=color or rng.choice(vocab.COLORS),
        weather=weather or arc_.weather or rng.choice(vocab.WEATHER),
        ending=ending or ("happy" if rng.random() < HAPPY_SHARE else "sad"),
        friend=friend, helper=helper,
        desc=rng.choice(vocab.YOUNG_ADJ if young else vocab.GROWN_ADJ),
        fdesc=rng.choice(vocab.YOUNG_ADJ if friend is None or vocab.is_young(friend.kind) else vocab.GROWN_ADJ),
    )


_CHOICES = {"kind": vocab.KINDS, "place": list(vocab.PLACES), "object": vocab.OBJECTS, "color": vocab.COLORS,
            "ending": ["happy", "sad"], "arc": list(ARCS_BY_NAME), "weather": vocab.WEATHER}


def _validate(**fixed: str | None) -> None:
    """A fixed field must be a storyworld word, or the judge could not find it in the story."""
    for key, value in fixed.items():
        if value is not None and value not in _CHOICES[key]:
            hint = closest(value, _CHOICES[key])
            raise ConfigError(f"storyworld: unknown {key} {value!r}" + (f"; did you mean {hint!r}?" if hint else
                              f"; choose one of {', '.join(_CHOICES[key][:12])}, ..."))


def _pronouns(prefix: str, ch: Character) -> dict[str, str]:
    forms = vocab.PRONOUNS["f" if ch.pronoun == "she" else "m"]
    out = {f"{prefix}{k}": v for k, v in forms.items()}
    out.update({f"{prefix.upper()}{k[0].upper()}{k[1:]}": v.capitalize() for k, v in forms.items()})
    return out


def _slots(spec: Spec, rng: random.Random) -> dict[str, str]:
    s: dict[str, str] = {
        "Name": spec.main.name, "kind": spec.main.kind, "desc": spec.desc, "hands": vocab.hands(spec.main.kind),
        "place": spec.place, "at": vocab.PLACES[spec.place], "obj": spec.object, "color": spec.color,
        "weather": spec.weather, "activity": rng.choice(vocab.ACTIVITIES), "snack": rng.choice(vocab.SNACKS),
        "spot": rng.choice(vocab.SPOTS), "sight": rng.choice(vocab.SIGHTS), "sound": rng.choice(vocab.SOUNDS),
        "mood": rng.choice(vocab.MOODS),
    }
    s.update(_pronouns("", spec.main))              # he him his himself / He Him His Himself
    if spec.friend is not None:
        s.update({"Friend": spec.friend.name, "fkind": spec.friend.kind, "fdesc": spec.fdesc})
        s.update(_pronouns("f", spec.friend))       # fhe fhim fhis / FHe FHim FHis
    if spec.helper is not None:
        s["helper"] = spec.helper.kind
        s.update(_pronouns("h", spec.helper))       # hhe hhim hhis / HHe ...
        s["Hhe"] = s["hhe"].capitalize()
    return s


def _title_slots(spec: Spec) -> dict[str, str]:
    return {
        "Name": spec.main.name, "Friend": spec.friend.name if spec.friend else "",
        "Obj": spec.object.title(), "Color": spec.color.title(), "Place": spec.place.title(),
        "At": vocab.PLACES[spec.place], "Kind": spec.main.kind.title(),  # "Lost in the Woods"
        "Helper": spec.helper.kind.title() if spec.helper else "",
    }


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def render(spec: Spec, rng: random.Random) -> Story:
    """Turn a spec into text: opening, maybe a scene detail, the arc's beats (optional ones half the time), the ending."""
    arc = ARCS_BY_NAME[spec.arc]
    slots = _slots(spec, rng)
    templates = list(rng.choice(OPENINGS))
    opening = len(templates)
    for beat in arc.beats:
        if beat[0] == "?":
            if rng.random() < 0.5:
                continue
            beat = beat[1:]
        templates.append(rng.choice(beat))
    templates.extend(rng.choice(arc.happy if spec.ending == "happy" else arc.sad))
    if len(templates) < 8 and rng.random() < 0.5:
        templates.insert(opening, rng.choice(DETAILS))
    sentences = [expand(t, slots, rng) for t in templates]
    text = " ".join(sentences)
    title = expand(rng.choice(arc.titles), _title_slots(spec), rng)
    summary = expand(arc.summary[0 if spec.ending == "happy" else 1], slots, rng)
    others = [c for c in (spec.friend, spec.helper) if c is not None and _mentions(text, c.name or c.kind)]
    return Story(
        text=text, title=title, summary=summary, sentences=sentences, main=spec.main, others=others,
        place=spec.place, object=spec.object, color=spec.color, weather=spec.weather, arc=spec.arc,
        ending=spec.ending, qa=_questions(spec, others, rng), spec=spec,
    )


def _questions(spec: Spec, others: list[Character], rng: random.Random) -> list[tuple[str, str]]:
    """Short-answer questions whose answers are stated in the story (the judge re-derives them)."""
    m = spec.main
    qa = [
        (rng.choice(["Who is the story about?", "Who is the main character?"]), m.name),
        (f"What kind of character is {m.name}?", _article(m.kind)),
        (rng.choice(["Where does the story take place?", f"Where is {m.name} in the story?"]), f"the {spec.place}"),
        (f"What color is the {spec.object}?", spec.color),
        ("What was the weather like?", spec.weather),
        (f"How does {m.name} feel at the end?", spec.ending),
    ]
    friend = next((c for c in others if c.name), None)
    if friend is not None:
        qa.append((f"Who else is in the story with {m.name}?", friend.name))
    return qa


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def generate_story(rng: random.Random | int, **fixed: str | None) -> Story:
    """One story. `rng` is a `random.Random` or an int seed; keyword args fix parts of the spec
    (`name`, `kind`, `place`, `object`, `color`, `ending`, `arc`, `weather`)."""
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    spec = sample_spec(rng, **fixed)
    return render(spec, random.Random(rng.getrandbits(64)))


def rerender(story: Story, seed: int, **changes: object) -> Story:
    """The same story with spec fields changed, phrased by the same `seed` (for preference pairs)."""
    assert story.spec is not None
    return render(replace(story.spec, **changes), random.Random(seed))
