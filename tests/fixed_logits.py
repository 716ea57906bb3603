"""A model whose next-token logits are a fixed table you write: logits(next | previous token) = table[previous].

Decoding tests need the *exact* distribution a sampler should draw from (temperature, top-k,
top-p, repetition penalty) and the exact score of every sequence a beam search could return; a
trained or random network gives neither. This bigram "model" plugs into Hugging Face `generate`
(and so into `lmlab.generate`) like any causal LM, with the shared tiny tokenizer, whose single
letters "a".."f" are single tokens.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

LETTERS = "abcdef"
NEVER = -1e4  # the logit of every token the table does not name


class FixedLogitsConfig(PretrainedConfig):
    model_type = "lmlab_test_fixed_logits"


class FixedLogits(PreTrainedModel, GenerationMixin):
    """logits[b, t] = table[input_ids[b, t]]: the next token depends only on the previous one."""

    config_class = FixedLogitsConfig

    def __init__(self, table: torch.Tensor, eos_token_id: int | None = None, pad_token_id: int | None = None):
        cfg = FixedLogitsConfig(vocab_size=table.shape[0], use_cache=False, num_hidden_layers=1,
                                eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        super().__init__(cfg)
        self.register_buffer("table", table.float().clone())
        self.anchor = nn.Parameter(torch.zeros(1))  # generate() reads the device off a parameter

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object) -> CausalLMOutput:
        return CausalLMOutput(logits=self.table[input_ids])


def letter_ids(tok, letters: str = LETTERS) -> dict[str, int]:
    """Token id of each single letter (each must be one token of the tiny tokenizer)."""
    ids = {c: tok.convert_tokens_to_ids(c) for c in letters}
    assert all(tok(c, add_special_tokens=False)["input_ids"] == [i] for c, i in ids.items())
    return ids


def bigram_model(tok, rows: Mapping[str, Sequence[float]], *, eos_logits: Mapping[str, float] | None = None,
                 letters: str = LETTERS) -> FixedLogits:
    """A FixedLogits over the tokenizer's vocabulary: after letter x the logits of `letters` are rows[x]
    (and of eos eos_logits[x], if given); every other token has logit -10000 (probability exactly 0 in
    float32; finite so that a beam exploring such a token scores very low instead of NaN)."""
    ids = letter_ids(tok, letters)
    table = torch.full((len(tok), len(tok)), NEVER)
    for prev, logits in rows.items():
        table[ids[prev], [ids[c] for c in letters]] = torch.tensor([float(x) for x in logits])
        if eos_logits and prev in eos_logits:
            table[ids[prev], tok.eos_token_id] = eos_logits[prev]
    return FixedLogits(table, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).eval()
