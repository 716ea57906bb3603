"""Reward sources for online RL: a spec string → `f(prompts, completions, **columns) -> list[float]`.

    rewards = load_rewards("storyworld:gold")
    rewards = load_rewards("runs/imdb-rm", label="positive", output="prob")       # a classifier run
    rewards = load_rewards("mypkg.rewards:brevity,storyworld:happy", weights=[1, 0.5])
    total, per_name = rewards(prompts, completions, answer=answers)

A spec is one or several comma-separated entries, each of:

- `storyworld:gold` — the storyworld gold judge (lmlab.data.storyworld.judge.gold_reward): the
  number RL is measured against, never trained on by a learned RM;
- `storyworld:happy` — 1 when the completion's ending reads happy (the judge's sentiment cue), else 0;
- `storyworld:qa_exact` — 1 when the completion, normalised, equals the reference answer (the
  `answer` column, else the answer read off the story in the prompt), else 0;
- a reward-model or classifier folder (a run folder of `lmlab train rm`, with or without
  `kind=classifier`, or any HF sequence-classification folder): one output → the Bradley–Terry
  reward of the chat-rendered prompt + reply; several outputs → a classifier of the plain text
  prompt + completion, reward = the chosen label's logit or probability;
- `package.module:function` — any Python callable with the signature above (extra dataset columns
  arrive as keyword lists; accept `**kwargs`).

The weighted sum is the reward RL optimises; each part is also returned so it is logged on its
own (reward hacking shows up as one part rising while another falls). `shaping_penalties` are the
optional penalties for a missing stop token, repetition and length.
"""
from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import ConfigError, DataError

RewardFn = Callable[..., Sequence[float]]


# -- storyworld built-ins ----------------------------------------------------------------------

def _prompt_text(prompt: Any) -> str:
    """The text of a prompt: a string, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    last = prompt[-1]
    return last["content"] if isinstance(last, dict) else last.content


def storyworld_gold(prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
    """The gold judge's reward in [0, 1] (judge.py's formula: quality × constraint rate)."""
    from lmlab.data.storyworld.judge import gold_reward

    return [gold_reward(_prompt_text(p), c) for p, c in zip(prompts, completions, strict=True)]


def storyworld_happy(prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
    """1.0 when the completion's last sentiment cue is happy, else 0.0 (an easy target to hack:
    "happy." alone scores 1, which the gold judge's fluency term does not)."""
    from lmlab.data.storyworld.judge import ending_sentiment, split_sentences

    return [1.0 if ending_sentiment(split_sentences(c)) else 0.0 for c in completions]


_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def normalise_answer(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed, a leading article dropped."""
    words = _NON_WORD.sub(" ", text.lower()).split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def qa_reference(prompt: Any) -> str | None:
    """The answer to a storyworld QA prompt ("STORY\\n\\nQuestion: Q"), read off the story."""
    from lmlab.data.storyworld.judge import expected_answer

    body, _, question = _prompt_text(prompt).rpartition("\n\nQuestion: ")
    return expected_answer(body.split("\n\n")[-1], question.strip()) if body else None


def storyworld_qa_exact(prompts: Sequence[Any], completions: Sequence[str], answer: Sequence[str] | None = None,
                        **_: Any) -> list[float]:
    """Exact match of the normalised completion and the reference answer (1.0 / 0.0)."""
    refs = list(answer) if answer is not None else [qa_reference(p) for p in prompts]
    return [float(r is not None and normalise_answer(c) == normalise_answer(r)) for c, r in zip(completions, refs, strict=True)]


BUILTINS: dict[str, RewardFn] = {
    "storyworld:gold": storyworld_gold,
    "storyworld:happy": storyworld_happy,
    "storyworld:qa_exact": storyworld_qa_exact,
}


# -- learned rewards: reward models and classifiers --------------------------------------------

class ModelReward:
    """A sequence-classification model as a reward, scored in batches without gradients.

    One output (a Bradley–Terry RM): the reply is rendered with its prompt through the chat
    template the RM was trained on, right-padded, and the score read at the last real token
    (Huang et al. 2024, N+ details 4). Several outputs (a classifier): the plain text prompt +
    completion, reward = the `label` logit, or its softmax probability with `output="prob"`.
    """

    def __init__(self, spec: str, *, label: str | int | None = None, output: str = "logit", max_length: int = 512,
                 template: str = "auto", batch_size: int = 16, device: str | torch.device | None = None):
        from transformers import AutoConfig

        from lmlab.models.load import load_model, resolve_model_dir

        folder = resolve_model_dir(spec)
        config = AutoConfig.from_pretrained(str(folder) if folder is not None else spec)
        self.num_labels = int(getattr(config, "num_labels", 1))
        self.model, self.tokenizer = load_model(spec, kind="sequence-classification", num_labels=self.num_labels,
                                                device=device)
        self.model.requires_grad_(False)
        self.label = self._label_index(spec, config, label)
        if output not in ("logit", "prob"):
            raise ConfigError(f"reward_output={output!r}: use logit or prob")
        self.output, self.max_length, self.template, self.batch_size = output, max_length, template, batch_size
        self.__name__ = Path(spec).name or spec

    def _label_index(self, spec: str, config: Any, label: str | int | None) -> int:
        if self.num_labels == 1 or label is None:
            return self.num_labels - 1  # the RM's only output; a classifier's last label (IMDB: positive)
        names = {str(v).lower(): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if isinstance(label, int) or str(label).isdigit():
            index = int(label)
        elif str(label).lower() in names:
            index = names[str(label).lower()]
        else:
            raise ConfigError(f"reward_label={label!r}: {spec} has labels {sorted(names)}; pick one of them or an index")
        if not 0 <= index < self.num_labels:
            raise ConfigError(f"reward_label={label!r}: {spec} has {self.num_labels} labels (0..{self.num_labels - 1})")
        return index

    def _batch(self, prompts: Sequence[Any], completions: Sequence[str]) -> dict[str, torch.Tensor]:
        from lmlab.data.preference import encode_responses, pad_rows

        if self.num_labels == 1:
            return encode_responses(self.tokenizer, prompts, completions, self.max_length, self.template)
        texts = [_prompt_text(p) + c for p, c in zip(prompts, completions, strict=True)]
        rows = [self.tokenizer(t, add_special_tokens=True)["input_ids"][-self.max_length:] for t in texts]
        return pad_rows(rows, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
        dev = next(self.model.parameters()).device
        out: list[float] = []
        for s in range(0, len(completions), self.batch_size):
            batch = self._batch(prompts[s:s + self.batch_size], completions[s:s + self.batch_size])
            logits = self.model(**{k: v.to(dev) for k, v in batch.items()}).logits.float()  # (b, labels)
            picked = logits.softmax(-1)[:, self.label] if self.output == "prob" else logits[:, self.label]
            out += picked.cpu().tolist()
        return out


def _python_callable(entry: str) -> RewardFn:
    module, _, attr = entry.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"reward={entry}: cannot import module {module!r} ({exc}); check the name and that it is on PYTHONPATH") from None
    except AttributeError:
        raise ConfigError(f"reward={entry}: module {module!r} has no function {attr!r}") from None
    if not callable(fn):
        raise ConfigError(f"reward={entry}: {module}.{attr} is not callable")
    return fn


# -- the set of rewards ------------------------------------------------------------------------

@dataclass
class Reward:
    name: str
    fn: RewardFn
    weight: float = 1.0


class RewardSet:
    """Several rewards with weights; calling it checks every function's output."""

    def __init__(self, rewards: Sequence[Reward]):
        self.rewards = list(rewards)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """(weighted total (N,), {name: the N values}) for N completions."""
        parts: dict[str, list[float]] = {}
        total = torch.zeros(len(completions), dtype=torch.float64)
        for r in self.rewards:
            values = call_reward(r, prompts, completions, columns)
            parts[r.name] = values
            total += r.weight * torch.tensor(values, dtype=torch.float64)
        return total, parts


def call_reward(r: Reward, prompts: Sequence[Any], completions: Sequence[str], columns: dict[str, Any]) -> list[float]:
    """`r.fn(...)`, checked: N finite numbers, else a DataError naming the function and what it returned."""
    try:
        values = r.fn(list(prompts), list(completions), **columns)
    except Exception as exc:  # a user's function: report which one failed and how
        raise DataError(f"reward function {r.name} raised {type(exc).__name__}: {exc}") from exc
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"reward function {r.name} must return a list of numbers, returned {_show(values)}") from None
    if len(values) != len(completions):
        raise DataError(f"reward function {r.name} returned {len(values)} values for {len(completions)} completions: {_show(values)}")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise DataError(f"reward function {r.name} returned non-finite values {bad[:3]}")
    return values


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _looks_like_folder(entry: str) -> bool:
    return Path(entry).is_dir() or entry.startswith((".", "/", "~")) or ("/" in entry and ":" not in entry)


def load_reward(entry: str, **model_kw: Any) -> Reward:
    """One spec entry → Reward (see the module docstring)."""
    entry = entry.strip()
    if entry in BUILTINS:
        return Reward(entry, BUILTINS[entry])
    if _looks_like_folder(entry):
        if not Path(entry).expanduser().is_dir():
            raise ConfigError(f"reward={entry}: no such folder (a reward-model or classifier run, e.g. runs/imdb-rm)")
        return Reward(Path(entry).name or entry, ModelReward(str(Path(entry).expanduser()), **model_kw))
    prefix, sep, attr = entry.partition(":")
    if sep and prefix != "storyworld" and attr.isidentifier() and all(p.isidentifier() for p in prefix.split(".")):
        return Reward(entry, _python_callable(entry))
    from lmlab.config import closest

    guess = closest(entry, BUILTINS)
    raise ConfigError(f"reward={entry}: unknown reward" + (f"; did you mean {guess}?" if guess else "")
                      + f" (built-ins: {', '.join(BUILTINS)}; or a reward-model folder, or package.module:function)")


def load_rewards(spec: str | Sequence[str | RewardFn], weights: Sequence[float] | None = None, **model_kw: Any) -> RewardSet:
    """A spec string (comma-separated entries) or a list of entries / callables → RewardSet."""
    entries = [e for e in spec.split(",") if e.strip()] if isinstance(spec, str) else list(spec)
    if not entries:
        raise ConfigError("reward= is empty: name at least one reward (e.g. reward=storyworld:gold)")
    rewards = [load_reward(e, **model_kw) if isinstance(e, str) else Reward(getattr(e, "__name__", "reward"), e) for e in entries]
    if weights:
        if len(weights) != len(rewards):
            raise ConfigError(f"reward_weights has {len(weights)} values for {len(rewards)} rewards ({', '.join(r.name for r in rewards)})")
        for r, w in zip(rewards, weights, strict=True):
            r.weight = float(w)
    return RewardSet(rewards)


# -- shaping against reward hacking ------------------------------------------------------------

def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams that already occurred earlier in the text (0 = no repetition)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def shaping_penalties(completions: Sequence[str], ended: Sequence[bool], lengths: Sequence[int], *,
                      missing_eos: float = 0.0, repetition: float = 0.0, length: float = 0.0,
                      target_length: int = 0) -> list[float]:
    """Non-positive shaping terms added to the reward:

    − `missing_eos` when the completion did not stop by itself (TRL's missing_eos_penalty;
      torchtune's reward_penalty), − `repetition` × the repeated word 3-gram share, and
    − `length` × the tokens beyond `target_length` (0 = every token counts).
    """
    out = []
    for text, stop, n in zip(completions, ended, lengths, strict=True):
        p = 0.0
        if missing_eos and not stop:
            p -= missing_eos
        if repetition:
            p -= repetition * repeated_ngram_share(text)
        if length:
            p -= length * max(0, n - target_length)
        out.append(p)
    return out
