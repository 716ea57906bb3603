"""A hand-written Elman RNN language model, and the recurrent-LM shell LSTM/GRU share.

The recurrence is ours (no `nn.RNN`): for each layer,

    h_t = tanh(W_x x_t + b + W_h h_{t-1})          (Elman 1990, "Finding structure in time")

The input projection `W_x x_t + b` of every timestep is one matmul before the loop; only the
`W_h h_{t-1}` product runs step by step. Dropout sits between layers (Zaremba et al. 2014).

The model is a `PreTrainedModel` + `GenerationMixin`: the per-layer hidden state is its generation
cache (`RecurrentState`), returned as `cache` and passed back by `generate`, so each new token
costs one step, not a re-run of the prompt. Padding positions (attention_mask == 0) leave the state
unchanged, so a left-padded prompt gives exactly the state of the unpadded one.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast, SequenceClassifierOutputWithPast


class RecurrentState:
    """The generation cache of a recurrent LM: one batch-first state tensor per layer.

    `states[i]` is (B, S, H): S = 1 (h) for RNN/GRU, 2 (h, c) for LSTM. `reorder_cache` is what
    beam search calls to follow the surviving beams.
    """

    is_compileable = False
    is_croppable = False  # a state cannot be rolled back a token (HF's deferred stop check asks)

    def __init__(self, states: list[torch.Tensor], seen_tokens: int):
        self.states = states
        self.seen_tokens = seen_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.states = [s.index_select(0, beam_idx.to(s.device)) for s in self.states]

    def __len__(self) -> int:
        return len(self.states)


class RNNConfig(PreTrainedConfig):
    """Elman RNN LM. `num_hidden_layers` stacked tanh layers of width `hidden_size`."""

    model_type = "lmlab_rnn"

    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 2
    dropout: float = 0.1
    tie_word_embeddings: bool = True
    # std of the (tied) embedding init; larger than a transformer's 0.02 because the tanh/sigmoid
    # cells squash their input: with 0.02 a 32-wide LSTM needs ~4x the steps to leave the unigram
    # plateau (tests/test_models.py::test_a_repeated_sequence_is_learned)
    initializer_range: float = 0.3
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None


class ElmanLayer(nn.Module):
    """One tanh recurrence; `mask` (B, T) freezes the state at padding positions."""

    def __init__(self, size: int):
        super().__init__()
        self.input = nn.Linear(size, size)
        self.recurrent = nn.Linear(size, size, bias=False)
        # read by RecurrentLMBase._init_weights (HF initialises children before parents)
        self.input.lmlab_init = "uniform"
        self.recurrent.lmlab_init = "orthogonal"

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.input(x)  # (B, T, H): all timesteps in one matmul
        h = state[:, 0]  # (B, H)
        outputs = []
        for t in range(x.shape[1]):
            new = torch.tanh(projected[:, t] + self.recurrent(h))
            h = new if mask is None else torch.where(mask[:, t, None], new, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h[:, None]  # (B, T, H), (B, 1, H)


class RecurrentLMBase(PreTrainedModel, GenerationMixin):
    """Embedding → stacked recurrent layers (with dropout) → linear head over the vocabulary.

    Subclasses say how to build a layer, run it and shape its zero state; everything else
    (cache handling, masking, loss, tying, generation) is shared.
    """

    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    state_slots = 1  # tensors per layer state: 1 (h) or 2 (h, c)

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(self.make_layer(config) for _ in range(config.num_hidden_layers))
        self.drop = nn.Dropout(config.dropout)
        self.make_head(config)
        self.post_init()

    def make_head(self, config: PreTrainedConfig) -> None:
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    # -- what a subclass defines ------------------------------------------------------------------
    def make_layer(self, config: PreTrainedConfig) -> nn.Module:
        raise NotImplementedError

    def run_layer(
        self, layer: nn.Module, x: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H), state (B, S, H), mask (B, T) bool or None → output (B, T, H), new state (B, S, H)."""
        raise NotImplementedError

    # -- HF contract -----------------------------------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # Our cache is a RecurrentState the forward creates; generate must not make a KV cache.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        bound = 1.0 / math.sqrt(self.config.hidden_size)
        kind = getattr(module, "lmlab_init", None)
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif kind == "orthogonal":
            # Orthogonal recurrence keeps the state's norm over time at init (Saxe et al. 2014).
            init.orthogonal_(module.weight)
        elif kind == "uniform":
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            for _, param in module.named_parameters():
                init.uniform_(param, -bound, bound)  # PyTorch's / cuDNN's usual recurrent init
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)

    def zero_state(self, batch: int, ref: torch.Tensor) -> list[torch.Tensor]:
        shape = (batch, self.state_slots, self.config.hidden_size)
        return [ref.new_zeros(shape) for _ in self.layers]

    def encode(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        cache: RecurrentState | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Top-layer outputs (B, T, H) and the new per-layer states.

        `position_ids` restarting at 0 inside a row mark packed examples (padding-free SFT): each
        example then starts from a zero state, exactly as if it were alone.
        """
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        # generate() also passes position_ids, but always with an attention_mask; packed batches have none
        packed = cache is None and attention_mask is None and position_ids is not None
        if packed and bool((position_ids[:, 1:] == 0).any()):
            return self._encode_packed(x, position_ids), []
        batch, length = x.shape[:2]
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -length:].bool()  # generate passes the whole history's mask
            if bool(mask.all()):
                mask = None
        states = cache.states if cache is not None else self.zero_state(batch, x)
        x = self.drop(x)
        new_states = []
        for layer, state in zip(self.layers, states, strict=True):
            x, state = self.run_layer(layer, x, state, mask)
            x = self.drop(x)
            new_states.append(state)
        return x, new_states

    def _encode_packed(self, x: torch.Tensor, position_ids: torch.LongTensor) -> torch.Tensor:
        """Unpack rows of several examples into one right-padded batch of examples, run, repack."""
        batch, length = position_ids.shape
        steps = torch.arange(length, device=x.device).expand(batch, length)  # (B, T)
        starts = position_ids == 0
        starts[:, 0] = True
        start_at = torch.cummax(torch.where(starts, steps, 0), dim=1).values  # (B, T)
        offset = steps - start_at  # position inside its example
        per_row = starts.sum(1)  # (B,)
        example = starts.long().cumsum(1) - 1 + (per_row.cumsum(0) - per_row)[:, None]  # (B, T) global example id
        n, width = int(per_row.sum()), int(offset.max()) + 1
        seg = x.new_zeros(n, width, x.shape[-1])  # (N, L, H)
        seg[example, offset] = x
        lengths = torch.bincount(example.flatten(), minlength=n)  # (N,)
        mask = torch.arange(width, device=x.device)[None, :] < lengths[:, None]  # (N, L)
        h = self.drop(seg)
        for layer, state in zip(self.layers, self.zero_state(n, h), strict=True):
            h, _ = self.run_layer(layer, h, state, None if bool(mask.all()) else mask)
            h = self.drop(h)
        return h[example, offset]  # (B, T, H)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: RecurrentState | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits for every position; with `cache`, continue from the state it holds."""
        x, new_states = self.encode(input_ids, attention_mask, cache, inputs_embeds, position_ids)
        length = x.shape[1]
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        seen = (cache.seen_tokens if cache is not None else 0) + length
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=RecurrentState(new_states, seen) if use_cache and new_states else None
        )


class RecurrentClassifier:
    """Mixin: a recurrent LM with a `score` head read at each row's last real token (reward models).

    Loads from a causal-LM checkpoint of the same architecture (embeddings and layers match by
    name; `score` is new), like HF's `…ForSequenceClassification`.
    """

    _tied_weights_keys = None

    def make_head(self, config: PreTrainedConfig) -> None:
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def get_output_embeddings(self) -> None:
        return None

    def can_generate(self) -> bool:
        return False

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        x, _ = self.encode(input_ids, attention_mask, None, inputs_embeds)
        logits = self.score(x)  # (B, T, L)
        batch, length = logits.shape[:2]
        if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if attention_mask is None:
            last = torch.full((batch,), length - 1, device=logits.device)
        else:  # right-most real token, whichever side the padding is on
            positions = torch.arange(length, device=logits.device)
            last = (attention_mask.to(logits.device).bool() * positions).amax(dim=1)
        pooled = logits[torch.arange(batch, device=logits.device), last]  # (B, L)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled, config=self.config)
        return SequenceClassifierOutputWithPast(loss=loss, logits=pooled)


class RNNForCausalLM(RecurrentLMBase):
    """Elman RNN language model (`model=rnn`)."""

    config_class = RNNConfig

    def make_layer(self, config: PreTrainedConfig) -> nn.Module:
        return ElmanLayer(config.hidden_size)

    def run_layer(self, layer, x, state, mask):
        return layer(x, state, mask)


class RNNForSequenceClassification(RecurrentClassifier, RNNForCausalLM):
    """Elman RNN with a scalar/label head (`load_model(..., kind="sequence-classification")`)."""


PRESETS: dict[str, dict] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 1},
    "small": {"hidden_size": 256, "num_hidden_layers": 2},
    "base": {"hidden_size": 512, "num_hidden_layers": 2},
    "medium": {"hidden_size": 1024, "num_hidden_layers": 3},
}


# Checkpoints carry this file, and config.json an `auto_map` (the hub's custom-code convention):
# plain transformers loads them with trust_remote_code=True, lmlab not installed. This module
# therefore imports only torch and transformers.
RNNConfig.register_for_auto_class()
RNNForCausalLM.register_for_auto_class("AutoModelForCausalLM")
RNNForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
