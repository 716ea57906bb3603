"""Preference data as tokens: a prompt plus one reply rendered through the chat template, padded batches of pairs.

A reward model (and every preference objective after it) scores exactly the text a policy produces
at inference: the conversation, the assistant header, the reply and the end of its turn. Sequences
longer than `max_length` lose tokens from the *left*: the reward is read at the end, so the end of
the reply must survive.

`PairBatches` yields B pairs as 2B rows, chosen first and rejected after, so one forward pass scores
both sides (what `lmlab.train.steps.reward_step` expects).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lmlab.data.chat import render_prompt
from lmlab.data.collate import PaddedBatches
from lmlab.errors import DataError


def render_response(tokenizer: Any, prompt: Any, response: str, template: str = "auto") -> str:
    """The conversation `prompt` + one assistant reply, as text (the RM scores exactly this)."""
    return render_prompt(tokenizer, prompt, reply=response, template=template)


def encode_response(tokenizer: Any, prompt: Any, response: str, max_length: int, template: str = "auto") -> list[int]:
    """Token ids of the rendered conversation, the last `max_length` kept (the reward is read at the end)."""
    ids = tokenizer(render_response(tokenizer, prompt, response, template), add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad token lists to one width: input_ids and attention_mask (N, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, T)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def encode_responses(tokenizer: Any, prompts: Sequence[Any], responses: Sequence[str], max_length: int,
                     template: str = "auto") -> dict[str, Tensor]:
    """A padded batch of prompt + response conversations, for scoring (N, T)."""
    rows = [encode_response(tokenizer, p, r, max_length, template) for p, r in zip(prompts, responses, strict=True)]
    return pad_rows(rows, tokenizer.pad_token_id)


@dataclass
class EncodedPair:
    """One preference pair as two token lists (each the whole prompt + reply)."""

    chosen: list[int]
    rejected: list[int]

    @property
    def input_ids(self) -> list[int]:
        """The longer side: what length grouping sorts by."""
        return self.chosen if len(self.chosen) >= len(self.rejected) else self.rejected


class PairBatches(PaddedBatches):
    """Shuffled micro-batches of B pairs as 2B padded rows, chosen rows first (what `reward_step` expects)."""

    def get(self, index: int) -> dict[str, Tensor]:
        pairs = [self.examples[i] for i in self._batch_indices(index)]
        return pad_rows([p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad_id)  # (2B, T)


def encode_pairs(tokenizer: Any, records: Sequence[Any], max_length: int, template: str, source: str) -> list[EncodedPair]:
    """Render and tokenize preference records; identical chosen/rejected texts teach nothing and are dropped."""
    pairs = []
    for rec in records:
        c = encode_response(tokenizer, rec.prompt, rec.chosen, max_length, template)
        r = encode_response(tokenizer, rec.prompt, rec.rejected, max_length, template)
        if c != r:
            pairs.append(EncodedPair(c, r))
    if len(pairs) < len(records):
        from lmlab.progress import log

        log(f"{source}: dropped {len(records) - len(pairs)} of {len(records)} pairs whose chosen and rejected "
            f"tokens are identical (within max_length={max_length})")
    if not pairs:
        raise DataError(f"{source}: no preference pair with different chosen and rejected tokens "
                        f"(within max_length={max_length}); check the data's chosen/rejected columns")
    return pairs
