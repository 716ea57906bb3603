"""The gold judge: a deterministic score of a reply to a storyworld prompt, in [0, 1].

It stands in for a human rater in tests and benchmarks, so that RM / PPO / DPO / KTO / SimPO /
ORPO runs can be measured by whether the policy got *better* at the task, not by their own loss.
Pure function of (prompt, response); no model, no randomness.

Formula (all factors in [0, 1]):

    words        lowercase alphabetic tokens of the response (chat markers such as <|im_end|>
                 removed first); none → reward 0
    repetition   1 - distinct word 3-grams / all word 3-grams          (0 = no repeated 3-gram)
    vocab_share  share of words in the storyworld vocabulary
    story tasks (write / continue / opening):
      sentence_ok  share of sentences with 3..30 words
      complete     1 if the text ends a sentence (. ! ? or a closing quote), else 0.5
      length       min(1, sentences / 3)   (continuations: min(1, sentences / 2))
      fluency      vocab_share * sentence_ok * complete * length
    other tasks: fluency = vocab_share * min(1, brief / words), brief = 40 (summary), 10 (title),
                 8 (qa) words; free prompts: vocab_share
    echo         share of the response's 3-grams that occur in the prompt (write, continue and
                 summary only; answers and titles may quote the story)
    quality      fluency * (1 - repetition) * (1 - 2 * max(0, echo - 0.5))
    constraints  parsed from the prompt (prompts.parse_constraints); each checked on the response:
                 name (exact word), kind (word, plural allowed), place (phrase), object (word,
                 plural allowed; with a colour, "colour object" must appear), ending (the
                 lexicon reading of the ending equals the asked one); summary / continuation:
                 the main character's name; qa: the expected answer appears in the reply
    constraint_rate  satisfied / asked (1.0 when nothing is asked)
    reward       quality * (0.25 + 0.75 * constraint_rate)   if any constraint was asked
                 quality                                     otherwise

So a fluent story that ignores every constraint keeps a quarter of its quality, and no amount of
keyword stuffing scores without fluent, non-repetitive sentences.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from lmlab.data.storyworld import vocab
from lmlab.data.storyworld.prompts import Constraints, detect_task, parse_constraints, split_prompt

_WORD = re.compile(r"[a-z]+")
_SENT_SPLIT = re.compile(r'(?<=[.!?])\s+(?=["A-Z])|(?<=[.!?]")\s+(?=["A-Z])')
_COMPLETE = re.compile(r'[.!?]"?\s*$')
_NGRAM = 3
_BRIEF = {"summary": 40, "title": 10, "qa": 8}  # words a reply to these tasks needs at most
_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?s>")  # chat/end markers a decoder may leave in: not words


@dataclass
class JudgeResult:
    reward: float                                   # the score, in [0, 1]
    constraints: dict[str, bool] = field(default_factory=dict)  # asked constraint → satisfied?
    constraint_rate: float = 1.0                    # satisfied / asked (1.0 if none asked)
    happy: bool | None = None                       # ending sentiment of the response (None: no cue)
    repetition: float = 0.0                         # repeated word 3-gram fraction
    fluency: float = 0.0                            # vocabulary, sentence and completeness proxy
    echo: float = 0.0                               # share of the reply's 3-grams copied from the prompt
    task: str = "free"                              # what the prompt was taken to ask


def split_sentences(text: str) -> list[str]:
    """Sentences of a storyworld text; a quote followed by a lowercase verb stays in its sentence."""
    text = text.strip()
    return [s for s in _SENT_SPLIT.split(text) if s] if text else []


def ending_sentiment(sentences: list[str]) -> bool | None:
    """True/False from the last sentence with a sentiment word (of the last two); None if neither has one."""
    for sentence in reversed(sentences[-2:]):
        words = _WORD.findall(sentence.lower())
        score = sum(w in vocab.HAPPY_WORDS for w in words) - sum(w in vocab.SAD_WORDS for w in words)
        if score:
            return score > 0
    return None


def repetition(words: list[str], n: int = _NGRAM) -> float:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every lowercase word a storyworld *reply* can hold (stories, summaries, titles, answers).

    Prompt-only words ("write", "ending", "question") are left out, so echoing the prompt back does
    not pass for fluent story text."""
    from lmlab.data.storyworld import arcs

    texts: list[str] = [*vocab.NAMES, *vocab.KINDS, *vocab.PLACES, *vocab.OBJECTS, *vocab.COLORS, *vocab.WEATHER,
                        *vocab.HELPERS, *vocab.YOUNG_ADJ, *vocab.GROWN_ADJ, *vocab.ACTIVITIES, *vocab.SNACKS,
                        *vocab.SPOTS, *vocab.SIGHTS, *vocab.SOUNDS, *vocab.MOODS, *vocab.HAPPY_WORDS,
                        *vocab.SAD_WORDS, "hands paws wings an he she him her his himself herself", *arcs.DETAILS]
    for alts in arcs.OPENINGS:
        texts.extend(alts)
    for arc in arcs.ARCS:
        for group in (*arc.beats, *arc.happy, *arc.sad, arc.summary, arc.titles):
            texts.extend(group)
    words: set[str] = set()
    for t in texts:
        words.update(_WORD.findall(re.sub(r"\{[^}]*\}", " ", t).lower()))
    return frozenset(words)


@lru_cache(maxsize=8192)
def _pattern(phrase: str, plural: bool, case: bool) -> re.Pattern[str]:
    """Compiled once per phrase: the world has a few thousand phrases, and compiling dominated judging."""
    suffix = "(?:s|es)?" if plural else ""
    return re.compile(rf"\b{re.escape(phrase)}{suffix}\b", 0 if case else re.I)


def _has(text: str, phrase: str, plural: bool = False, case: bool = False) -> bool:
    return _pattern(phrase, plural, case).search(text) is not None


def check(c: Constraints, response: str, happy: bool | None) -> dict[str, bool]:
    """Each asked constraint → whether the response meets it."""
    out: dict[str, bool] = {}
    if c.name:
        out["name"] = _has(response, c.name, case=True)
    if c.kind:
        out["kind"] = _has(response, c.kind, plural=True)
    if c.place:
        out["place"] = _has(response, c.place)
    if c.object:
        out["object"] = _has(response, f"{c.color} {c.object}" if c.color else c.object, plural=True)
    if c.ending:
        out["ending"] = happy is not None and happy == (c.ending == "happy")
    return out


def expected_answer(story: str, question: str) -> str | None:
    """The answer to one of the generator's questions, read off the story text (None: unknown question)."""
    found = parse_constraints(story)
    q = question.lower()
    if q.startswith("who is the") or q.startswith("who is the main"):
        return found.name
    if q.startswith("what kind of character"):
        return found.kind
    if q.startswith("where"):
        return found.place
    if q.startswith("what color is the"):
        obj = q.removeprefix("what color is the ").rstrip("?").strip()
        m = re.search(rf"\b(\w+) {re.escape(obj)}\b", story.lower())
        return m.group(1) if m and m.group(1) in vocab.COLORS else None
    if q.startswith("what was the weather"):
        return next((w for w in _WORD.findall(story.lower()) if w in vocab.WEATHER), None)
    if q.startswith("how does") and "feel at the end" in q:
        happy = ending_sentiment(split_sentences(story))
        return None if happy is None else ("happy" if happy else "sad")
    if q.startswith("who else is in the story"):
        main = found.name
        return next((w for w in re.findall(r"[A-Za-z]+", story) if w in _NAMES and w != main), None)
    return None


_NAMES = frozenset(vocab.NAMES)


def _task_constraints(prompt: str, task: str) -> tuple[Constraints, str | None]:
    """(constraints to check, expected qa answer)."""
    if task == "write":
        return parse_constraints(split_prompt(prompt)[0]), None
    if task in ("continue", "summary", "opening"):
        passage = split_prompt(prompt)[1] if task != "opening" else prompt
        return Constraints(name=parse_constraints(passage).name), None
    if task == "qa":
        body, _, question = prompt.rpartition("\n\nQuestion: ")
        return Constraints(), expected_answer(body.split("\n\n")[-1], question.strip())
    return Constraints(), None


def judge(prompt: str, response: str) -> JudgeResult:
    """Score `response` to `prompt`; see the module docstring for the formula."""
    task = detect_task(prompt)
    response = _SPECIAL.sub(" ", response).strip()
    words = _WORD.findall(response.lower())
    if not words:
        return JudgeResult(0.0, task=task, constraint_rate=0.0)
    sentences = split_sentences(response)
    happy = ending_sentiment(sentences)
    rep = repetition(words)
    # a story, continuation or summary should be new text; answers and titles may quote the story
    echo = _echo(words, prompt) if task in ("write", "continue", "opening", "summary") else 0.0
    vocab_share = sum(w in vocabulary() for w in words) / len(words)
    if task in ("write", "continue", "opening"):
        sentence_ok = sum(3 <= len(_WORD.findall(s.lower())) <= 30 for s in sentences) / len(sentences)
        complete = 1.0 if _COMPLETE.search(response) else 0.5
        length = min(1.0, len(sentences) / (3 if task == "write" else 2))
        fluency = vocab_share * sentence_ok * complete * length
    else:
        fluency = vocab_share * min(1.0, _BRIEF.get(task, len(words)) / len(words))
    quality = fluency * (1.0 - rep) * (1.0 - max(0.0, echo - 0.5) * 2.0)
    constraints, answer = _task_constraints(prompt, task)
    checks = check(constraints, response, happy)
    if answer is not None:
        checks["answer"] = _has(response, answer)
    rate = sum(checks.values()) / len(checks) if checks else 1.0
    reward = quality * (0.25 + 0.75 * rate) if checks else quality
    return JudgeResult(reward=reward, constraints=checks, constraint_rate=rate, happy=happy, repetition=rep,
                       fluency=fluency, echo=echo, task=task)


def _echo(words: list[str], prompt: str) -> float:
    """Share of the reply's word 3-grams that are already in the prompt."""
    grams = [tuple(words[i:i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]
    if not grams:
        return 0.0
    p = _WORD.findall(prompt.lower())
    seen = {tuple(p[i:i + _NGRAM]) for i in range(len(p) - _NGRAM + 1)}
    return sum(g in seen for g in grams) / len(grams)


def gold_reward(prompt: str, response: str) -> float:
    """`judge(prompt, response).reward`: the number RL and preference tests optimise against."""
    return judge(prompt, response).reward
