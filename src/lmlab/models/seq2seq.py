"""The encoder-decoder Transformer: a standard Hugging Face BART config, trained from scratch.

`seq2seq:small` builds a `BartConfig` and a `BartForConditionalGeneration` (learned positions,
post-LayerNorm, GELU, tied embeddings; Lewis et al. 2020), so checkpoints load with
`AutoModelForSeq2SeqLM` anywhere. The decoder starts from the tokenizer's bos (or eos) token, and
BART's hub defaults that force special tokens at generation time are switched off: a model of
ours emits exactly what it learned.
"""
from __future__ import annotations

from transformers import BartConfig, BartForConditionalGeneration

CONFIG_CLASS = BartConfig
MODEL_CLASS = BartForConditionalGeneration

DEFAULTS: dict = {
    "max_position_embeddings": 1024,
    "forced_eos_token_id": None,
    "forced_bos_token_id": None,
    "dropout": 0.1,
    "activation_function": "gelu",
    "tie_word_embeddings": True,
}


def _size(d: int, layers: int, heads: int) -> dict:
    return {
        "d_model": d, "encoder_layers": layers, "decoder_layers": layers,
        "encoder_attention_heads": heads, "decoder_attention_heads": heads,
        "encoder_ffn_dim": 4 * d, "decoder_ffn_dim": 4 * d,
    }


PRESETS: dict[str, dict] = {
    "tiny": _size(64, 2, 4),
    "small": _size(256, 3, 8),
    "base": _size(512, 4, 8),
    "medium": _size(768, 6, 12),
}
