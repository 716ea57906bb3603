"""LSTM and GRU language models: the recurrent-LM shell of `rnn.py` around `nn.LSTM` / `nn.GRU`.

Each layer is its own single-layer `nn.LSTM`/`nn.GRU` (cuDNN on a GPU), so layers are a plain
`ModuleList` like a transformer's blocks (freezing "the last N layers" works the same way) and the
state of each layer is cached separately for incremental generation.

Padding: a batch with padding (attention_mask == 0) is rotated so every row's tokens start at
position 0, run as a `PackedSequence` (which stops each row at its own length, so its final state
is the state after its last real token), and rotated back. A left-padded prompt therefore gives
exactly the state of the unpadded one, as in the hand-written RNN.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedConfig

# relative, not `lmlab.models.rnn`: saved beside the weights, this file must import without lmlab
from .rnn import PRESETS as RNN_PRESETS
from .rnn import RecurrentClassifier, RecurrentLMBase

# Same widths and depths as the Elman RNN, so the three recurrent cells compare like for like.
PRESETS: dict[str, dict] = RNN_PRESETS


class LSTMConfig(PreTrainedConfig):
    """LSTM LM (Hochreiter & Schmidhuber 1997): `num_hidden_layers` layers of width `hidden_size`."""

    model_type = "lmlab_lstm"

    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 2
    dropout: float = 0.1
    tie_word_embeddings: bool = True
    initializer_range: float = 0.3  # embedding init std; see RNNConfig
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None


class GRUConfig(LSTMConfig):
    """GRU LM (Cho et al. 2014): `num_hidden_layers` layers of width `hidden_size`."""

    model_type = "lmlab_gru"


def _rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row b of (B, T, ...) rolled left by shift[b] (negative: right)."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device)[None, :] + shift[:, None]) % length  # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def run_packed(
    rnn: nn.LSTM | nn.GRU, x: torch.Tensor, hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
):
    """Run a batch-first torch RNN, skipping padding; returns (output (B, T, H), final hx)."""
    if mask is None:
        return rnn(x, hx)
    lengths = mask.sum(1).clamp(min=1)  # (B,)
    leading = (mask.long().cumsum(1) == 0).sum(1)  # (B,) left-padding width of each row
    packed = pack_padded_sequence(_rotate(x, leading), lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, hx = rnn(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return _rotate(out, -leading), hx


class LSTMForCausalLM(RecurrentLMBase):
    """LSTM language model (`model=lstm`); a layer's cached state is (h, c)."""

    config_class = LSTMConfig
    state_slots = 2

    def make_layer(self, config: PreTrainedConfig) -> nn.Module:
        return nn.LSTM(config.hidden_size, config.hidden_size, batch_first=True)

    def run_layer(self, layer, x, state, mask):
        h0 = state[:, 0][None].contiguous()  # (1, B, H): torch's layout
        c0 = state[:, 1][None].contiguous()
        out, (h, c) = run_packed(layer, x, (h0, c0), mask)
        return out, torch.stack([h[0], c[0]], dim=1)  # (B, 2, H)


class GRUForCausalLM(RecurrentLMBase):
    """GRU language model (`model=gru`)."""

    config_class = GRUConfig

    def make_layer(self, config: PreTrainedConfig) -> nn.Module:
        return nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)

    def run_layer(self, layer, x, state, mask):
        out, h = run_packed(layer, x, state[:, 0][None].contiguous(), mask)
        return out, h[0][:, None]  # (B, 1, H)


class LSTMForSequenceClassification(RecurrentClassifier, LSTMForCausalLM):
    """LSTM with a scalar/label head (reward models)."""


class GRUForSequenceClassification(RecurrentClassifier, GRUForCausalLM):
    """GRU with a scalar/label head (reward models)."""


# Checkpoints carry this file and rnn.py, and config.json an `auto_map` (the hub's custom-code
# convention): plain transformers loads them with trust_remote_code=True, lmlab not installed.
for _cls, _auto in ((LSTMForCausalLM, "AutoModelForCausalLM"), (GRUForCausalLM, "AutoModelForCausalLM"),
                    (LSTMForSequenceClassification, "AutoModelForSequenceClassification"),
                    (GRUForSequenceClassification, "AutoModelForSequenceClassification")):
    _cls.config_class.register_for_auto_class()
    _cls.register_for_auto_class(_auto)
