"""The decoder-only Transformer: a standard Hugging Face Llama config, not a class of ours.

`transformer:small` builds a `LlamaConfig` (RoPE positions, RMSNorm, SwiGLU MLP, sdpa attention,
tied input/output embeddings) and a `LlamaForCausalLM` from it, so a checkpoint trained here
loads in any tool that reads Llama: transformers, vLLM, llama.cpp converters, lm-eval-harness.

Sizes are table entries. The MLP width is ≈ 8/3 × hidden (SwiGLU's three matrices then cost about
what a 4 × hidden GELU MLP does; Shazeer 2020), rounded to a multiple of 32.
"""
from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

CONFIG_CLASS = LlamaConfig
MODEL_CLASS = LlamaForCausalLM

DEFAULTS: dict = {
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
}

PRESETS: dict[str, dict] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 192},
    "small": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 704},
    "base": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 1376},
    "medium": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 2560},
}
