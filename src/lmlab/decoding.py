"""`DecodingConfig`: the decoding keys every generating command shares, and their checks.

Kept apart from `lmlab.generate` (which imports torch and transformers) so that command configs
extending it stay cheap to import: `--help` and key errors come before any heavy import.
`lmlab.generate` re-exports all three names.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from lmlab.config import opt
from lmlab.errors import ConfigError


@dataclass
class DecodingConfig:
    """How to pick each next token (temperature 0 = greedy)."""

    max_new_tokens: int = opt(64, "tokens to generate at most per continuation")
    temperature: float = opt(1.0, "softmax temperature; lower = safer and blander, 0 = greedy (argmax)")
    top_k: int = opt(0, "sample only among the k most likely tokens (0 = off)")
    top_p: float = opt(1.0, "nucleus sampling: smallest set of tokens with this much probability (1 = off; Holtzman et al. 2020)")
    repetition_penalty: float = opt(1.0, "divide logits of tokens already present by this (>1 discourages loops; Keskar et al. 2019)")
    beams: int = opt(1, "beam search width (1 = no beam search; with temperature > 0 the beams are sampled, temperature=0 for plain beam search)")
    length_penalty: float = opt(1.0, "beam search ranks a finished beam by log-probability / length**length_penalty (Hugging Face's beam score: > 0 favours longer, < 0 shorter, 0 = raw log-probability)")
    no_repeat_ngram_size: int = opt(0, "never generate an n-gram of this size twice, prompt included (0 = off; Paulus et al. 2018)")
    n: int = opt(1, "continuations per prompt (at most `beams` with beam search)")
    seed: int | None = opt(None, "seed for sampling; the same seed gives the same samples")
    stop: list[str] = opt([], "cut each continuation at the first of these strings (generation also stops there)")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def validate(self) -> list[str]:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if not math.isfinite(self.length_penalty):
            problems.append(f"length_penalty must be a finite number (1 = HF's default, 0 = off), got {self.length_penalty}")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}")
        if self.beams < 1 or self.n < 1:
            problems.append(f"beams and n must be >= 1, got beams={self.beams} n={self.n}")
        if self.beams > 1 and self.n > self.beams:
            problems.append(f"n={self.n} continuations need beams >= n with beam search (beams={self.beams}); raise beams")
        if self.n > 1 and self.beams == 1 and not self.do_sample:
            problems.append(f"n={self.n} greedy continuations would all be identical; set temperature > 0 or beams >= n")
        return problems


def decoding_of(cfg: DecodingConfig, **changes: Any) -> DecodingConfig:
    """A plain DecodingConfig with the decoding keys of `cfg` (a command config that extends it),
    `changes` applied: what `generate` and `stream` take."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DecodingConfig)}
    values["stop"] = list(values["stop"])  # never share the list with the command's config
    values.update(changes)
    return DecodingConfig(**values)


def check(cfg: DecodingConfig) -> DecodingConfig:
    problems = cfg.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg
