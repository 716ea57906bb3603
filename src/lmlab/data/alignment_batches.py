"""Batches for preference optimisation: DPO-style pairs and KTO-style unpaired feedback.

Every response is rendered *with its prompt* through the chat template exactly as SFT renders a
conversation (`data/chat.py`): labels are -100 on the prompt and the template's role headers and
equal `input_ids` on the reply plus the token that ends the turn, so the end of turn (eos) is part
of every log-probability and a tuned model still learns to stop (ALIGNMENT-NOTES §3.5–3.7).
Truncation keeps the start (TRL's `keep_start`): a reply cut by `max_length` loses its end, and a
pair left without any reply token on either side is dropped and counted.

- `PolicyPairBatches`: a micro-batch of B pairs is 2B right-padded rows, chosen rows first, then
  rejected ones in the same order (one forward pass for both halves), plus `lengths` (2B,) reply
  tokens per row and `index` (B,), the pairs' positions in the dataset (what a reference
  log-prob cache is keyed by).
- `FeedbackBatches`: a micro-batch of B examples is 2B rows: the B completions, then B "KL rows"
  (prompt i with the completion of another example) for KTO's reference point z0, plus
  `desirable` (B,) bool. The KL partner is fixed per example, as in TRL's preprocessing: split
  the dataset in its file order into chunks of `batch_size` and rotate each chunk by one
  (`KL_completion_ids = [c[-1]] + c[:-1]`), so example j is paired with the completion of example
  j-1 of its chunk. Fixing it per example (instead of per shuffled batch) lets the micro-batches be
  shuffled and the KL rows' reference log-probs be cached like any other row.

Both are `BatchSource`s with a deterministic `get(index)` (`data/collate.py`), so a resumed run
sees the batches an uninterrupted one would; `batch_units(batch)` is their unit count (pairs,
examples), the loop's gradient weight.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lmlab.data.chat import EncodedExample, encode_chat
from lmlab.data.collate import PaddedBatches, pad_collate
from lmlab.errors import DataError


def _conversation(prompt: Any, reply: str) -> list[Any]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return [*msgs, {"role": "assistant", "content": reply}]


@dataclass
class EncodeOptions:
    """How conversations are rendered (the same keys as SFT: template, system, max_length)."""

    template: str = "auto"
    max_length: int | None = None
    system: str | None = None


def encode_reply(tokenizer: Any, prompt: Any, reply: str, opts: EncodeOptions, where: str) -> EncodedExample:
    """prompt + one assistant reply, prompt masked, the end of turn labelled."""
    return encode_chat(tokenizer, _conversation(prompt, reply), template=opts.template, max_length=opts.max_length,
                       system=opts.system, where=where)


@dataclass
class AlignStats:
    """What rendering did to a preference or feedback set: logged and written to result.json."""

    records: int = 0
    kept: int = 0
    identical: int = 0
    """pairs whose chosen and rejected rows are the same tokens (no signal; dropped)"""
    truncated: int = 0
    """kept units with a reply cut short by max_length"""
    dropped_truncated: int = 0
    """units whose reply was truncated away completely (dropped)"""
    reply_tokens: int = 0
    total_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"records": self.records, "kept": self.kept, "identical": self.identical, "truncated": self.truncated,
                "dropped_truncated": self.dropped_truncated, "reply_tokens": self.reply_tokens,
                "total_tokens": self.total_tokens}


# -- pairs ---------------------------------------------------------------------------------------

@dataclass
class PolicyPair:
    """One preference pair, both sides rendered with the shared prompt."""

    chosen: EncodedExample
    rejected: EncodedExample

    @property
    def input_ids(self) -> list[int]:
        """The longer side (what length grouping sorts by)."""
        return max(self.chosen.input_ids, self.rejected.input_ids, key=len)


def encode_policy_pairs(tokenizer: Any, records: Iterable[Any], opts: EncodeOptions, source: str = "data"
                 ) -> tuple[list[PolicyPair], AlignStats]:
    """Render PreferenceRecords; drop (and count) identical pairs and pairs truncated away."""
    stats = AlignStats()
    out: list[PolicyPair] = []
    for i, rec in enumerate(records):
        where = f"{source}: record {i + 1}"
        stats.records += 1
        c = encode_reply(tokenizer, rec.prompt, rec.chosen, opts, where)
        r = encode_reply(tokenizer, rec.prompt, rec.rejected, opts, where)
        if c.n_trained == 0 or r.n_trained == 0:
            stats.dropped_truncated += 1
            continue
        if c.input_ids == r.input_ids:
            stats.identical += 1
            continue
        stats.truncated += int(bool(c.n_truncated_response_tokens or r.n_truncated_response_tokens))
        stats.reply_tokens += c.n_trained + r.n_trained
        stats.total_tokens += len(c) + len(r)
        out.append(PolicyPair(c, r))
    stats.kept = len(out)
    if not out:
        raise DataError(f"{source}: no usable preference pair ({stats.records} records: {stats.identical} with identical "
                        f"chosen and rejected, {stats.dropped_truncated} with no reply token within "
                        f"max_length={opts.max_length}); check the chosen/rejected columns or raise max_length")
    return out, stats


def reply_lengths(labels: Tensor) -> Tensor:
    """Trained (reply) tokens per row, (N,): the |y| of length-normalised losses."""
    return (labels != -100).sum(-1)


class TwoRowBatches(PaddedBatches):
    """Shuffled micro-batches of B units (pairs or feedback examples) as 2B padded rows: every
    unit's first row, then every unit's second row, in the same order. Adds `lengths` (2B,) reply
    tokens per row and `index` (B,) the units' dataset positions.

    `ref` (N, 2) holds cached reference log-probs of each unit's two rows; when it is set, each
    batch carries them as `ref_logps` (2B,) in row order and no reference model is needed.
    """

    ref: Tensor | None = None
    first, second = "chosen", "rejected"

    def rows(self, indices: Sequence[int]) -> dict[str, Tensor]:
        units = [self.examples[i] for i in indices]
        rows = [getattr(u, self.first) for u in units] + [getattr(u, self.second) for u in units]
        batch = pad_collate(rows, self.pad_id)  # (2B, T)
        batch["lengths"] = reply_lengths(batch["labels"])  # (2B,)
        batch["index"] = torch.tensor(list(indices), dtype=torch.long)  # (B,)
        if self.ref is not None:
            ref = self.ref[batch["index"]]  # (B, 2)
            batch["ref_logps"] = torch.cat([ref[:, 0], ref[:, 1]])  # (2B,) first rows, then second rows
        return batch

    def get(self, index: int) -> dict[str, Tensor]:
        return self.rows(self._batch_indices(index))


def batch_units(batch: dict[str, Tensor]) -> float:
    """Pairs (or feedback examples) in a micro-batch: the unit the preference losses average over,
    known before the forward pass (the loop's `weight_of`)."""
    return float(batch["index"].numel())


class PolicyPairBatches(TwoRowBatches):
    """B pairs as 2B rows: chosen rows first, rejected rows after."""


# -- unpaired feedback (KTO) ---------------------------------------------------------------------

@dataclass
class EncodedFeedback:
    """One KTO example: its completion row, its KL row (mismatched completion) and its label."""

    completion: EncodedExample
    kl: EncodedExample
    desirable: bool

    @property
    def input_ids(self) -> list[int]:
        return max(self.completion.input_ids, self.kl.input_ids, key=len)


def kl_partners(n: int, batch_size: int) -> list[int]:
    """partner[j]: whose completion example j's KL row borrows: chunks of `batch_size` in file order,
    each rotated by one (TRL `[c[-1]] + c[:-1]`); a last chunk of one joins the previous chunk so
    nobody is paired with itself."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    from lmlab.train.objectives import kl_mismatched

    ends = [*starts[1:], n]
    return [j for s, e in zip(starts, ends, strict=True) for j in kl_mismatched(range(s, e))]


def encode_feedback(tokenizer: Any, records: Sequence[Any], opts: EncodeOptions, batch_size: int, source: str = "data"
                    ) -> tuple[list[EncodedFeedback], AlignStats]:
    """Render FeedbackRecords with their KL rows; drop (and count) examples truncated away."""
    stats = AlignStats(records=len(records))
    partner = kl_partners(len(records), batch_size)
    out: list[EncodedFeedback] = []
    for j, rec in enumerate(records):
        where = f"{source}: record {j + 1}"
        row = encode_reply(tokenizer, rec.prompt, rec.completion, opts, where)
        kl = encode_reply(tokenizer, rec.prompt, records[partner[j]].completion, opts, where)
        if row.n_trained == 0 or kl.n_trained == 0:
            stats.dropped_truncated += 1
            continue
        stats.truncated += int(bool(row.n_truncated_response_tokens))
        stats.reply_tokens += row.n_trained
        stats.total_tokens += len(row)
        out.append(EncodedFeedback(row, kl, bool(rec.label)))
    stats.kept = len(out)
    if not out:
        raise DataError(f"{source}: no feedback example has a reply token within max_length={opts.max_length}; "
                        "raise max_length")
    n_good = sum(e.desirable for e in out)
    if n_good in (0, len(out)):
        stats.notes.append(f"all {len(out)} examples are {'desirable' if n_good else 'undesirable'}: KTO learns "
                           "nothing relative from one kind alone")
    return out, stats


class FeedbackBatches(TwoRowBatches):
    """B examples as 2B rows: completions first, then KL rows; plus `desirable` (B,) bool."""

    first, second = "completion", "kl"

    def rows(self, indices: Sequence[int]) -> dict[str, Tensor]:
        batch = super().rows(indices)
        batch["desirable"] = torch.tensor([self.examples[i].desirable for i in indices], dtype=torch.bool)  # (B,)
        return batch
