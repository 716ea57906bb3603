"""A hand-written KV-cache sampling loop for Llama-family decoders: what RL rollouts run on.

Online RL spends most of a step generating (GRPO on a small model: about 70 % of it), and for a
small model HF `generate` is mostly Python around tiny matmuls: per new token it rebuilds a 4-D
attention mask, runs the logits-processor and stopping-criteria lists, updates a generic cache and
passes every layer through several decorator wrappers. This loop keeps what a decode step needs:

1. *prefill* once per distinct prompt with the model's own forward (HF code, padding mask and all),
   then repeat each prompt's keys/values `n` times: the `n` samples of a GRPO group share a prompt;
2. per new token, for each layer: norm → q/k/v → rotary → write k/v into preallocated buffers →
   `scaled_dot_product_attention` with a boolean padding mask → o-proj → norm → MLP, calling the
   model's own submodules (so LoRA / quantised linears work unchanged) and its rotary embedding
   (so RoPE scaling variants are the model's own);
3. pick the token from softmax(logits / T) after top-k / top-p by inverting the CDF: one
   uniform u per row, the first token whose cumulative probability exceeds u (16 rows × 1,024 on
   CPU: 34 µs, against 470 µs for `torch.multinomial`, 390 µs for an exponential race and 160 µs
   for a Gumbel one, which draw a random number per vocabulary entry); rows that have stopped get
   pad; stop when every row has.

It covers the architectures whose decoder layer is exactly that (`SUPPORTED`: Llama — lmlab's
`transformer:*` — Qwen2 and Qwen3, full attention only). Anything else (recurrent models, GPT-2,
sliding windows, dropout in training mode, weights sharded by FSDP2 or ZeRO-3) goes through HF
`generate`. Greedy decoding gives HF's
tokens exactly (tests/test_sampler.py), so the loop is checked against HF on every step it takes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED = ("llama", "qwen2", "qwen3")
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)
"""`scaled_dot_product_attention(enable_gqa=)` exists (torch >= 2.5; pyproject allows 2.4)."""


def decoder_of(model: nn.Module) -> nn.Module | None:
    """The `*ForCausalLM` inside `model` (through PEFT, compile, DDP and value-head wrappers) when
    this loop can run it, else None (the caller uses HF `generate`)."""
    from lmlab.train.forward import innermost

    inner = innermost(model)
    cfg = getattr(inner, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED or getattr(cfg, "is_encoder_decoder", False):
        return None
    if getattr(cfg, "use_sliding_window", False) or any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return None
    if inner.training and float(getattr(cfg, "attention_dropout", 0.0) or 0.0) > 0:
        return None  # the loop applies no attention dropout; HF's generate does in train mode
    if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") for p in inner.parameters()):
        return None  # FSDP2 / ZeRO-3 shards gather in the wrapped modules' forward hooks, which this loop skips
    base = getattr(inner, "model", None)
    need = ("embed_tokens", "layers", "norm", "rotary_emb")
    if base is None or not all(hasattr(base, a) for a in need) or not hasattr(inner, "lm_head"):
        return None
    return inner


def pick(logits: Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """One token per row of `logits` (B, V): greedy at temperature 0, else a sample of
    softmax(logits / T) restricted to the top-k tokens and then to the smallest set holding `top_p`
    of the probability (Holtzman et al. 2020), in that order, as HF's warpers apply them."""
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    if 0 < top_k < scores.size(-1):
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
        drop = before >= top_p  # never the top token: its `before` is 0
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    cdf = scores.softmax(-1).cumsum(-1)  # (B, V); filtered tokens add nothing, so they are never first past u
    u = torch.rand(cdf.size(0), 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


@torch.no_grad()
def sample_tokens(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, *, n: int = 1, max_new_tokens: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, stop_ids: Sequence[int] = (),
                  pad_id: int = 0) -> Tensor:
    """New tokens (B·n, C) for left-padded prompts (B, P), rows grouped by prompt like HF's
    `num_return_sequences`; after a row's first stop token the rest is `pad_id`. C is the number
    of steps taken: `max_new_tokens`, or fewer when every row stopped early.

    `model` must be one `decoder_of` accepts (pass its result)."""
    base = model.model
    cfg = model.config
    B, P = input_ids.shape
    N, S = B * n, P + max_new_tokens
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    from transformers import DynamicCache

    from lmlab.train.forward import accepts

    cache = DynamicCache()
    cache_key = "cache" if accepts(model, "cache") else "past_key_values"  # transformers 5.2x renamed it
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{cache_key: cache})
    keys, values = [], []
    for layer in cache.layers:  # prompt keys/values into (N, heads, P + C, d) buffers, one copy per sample
        k, v = layer.keys.repeat_interleave(n, dim=0), layer.values.repeat_interleave(n, dim=0)
        kbuf = k.new_empty(N, k.size(1), S, k.size(3))
        vbuf = v.new_empty(N, v.size(1), S, v.size(3))
        kbuf[:, :, :P], vbuf[:, :, :P] = k, v
        keys.append(kbuf)
        values.append(vbuf)
    del cache
    visible = torch.zeros(N, 1, 1, S, dtype=torch.bool, device=input_ids.device)  # which cache slots a query sees
    visible[:, 0, 0, :P] = attention_mask.bool().repeat_interleave(n, dim=0)
    position = positions[:, -1].repeat_interleave(n)
    logits = out.logits[:, -1].repeat_interleave(n, dim=0)
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=input_ids.device)
    done = torch.zeros(N, dtype=torch.bool, device=input_ids.device)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    tokens: list[Tensor] = []
    for t in range(max_new_tokens):
        token = pick(logits, temperature, top_k, top_p).masked_fill(done, pad_id)
        tokens.append(token)
        if stops.numel():
            done |= torch.isin(token, stops)
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        slot = P + t
        visible[:, 0, 0, slot] = True
        position = position + 1
        x = base.embed_tokens(token)[:, None]  # (N, 1, H)
        cos, sin = base.rotary_emb(x, position[:, None])
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        for i, layer in enumerate(base.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(N, 1, heads, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(N, 1, kv_heads, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(N, 1, kv_heads, attn.head_dim).transpose(1, 2)
            if hasattr(attn, "q_norm"):  # Qwen3 normalises q and k per head before the rotation
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            keys[i][:, :, slot:slot + 1] = k * cos + _rotate_half(k) * sin
            values[i][:, :, slot:slot + 1] = v
            k_seen, v_seen = keys[i][:, :, :slot + 1], values[i][:, :, :slot + 1]
            gqa = {}
            if heads != kv_heads:  # grouped-query attention: SDPA shares k/v heads itself from torch 2.5
                if _SDPA_GQA:
                    gqa = {"enable_gqa": True}
                else:
                    k_seen = k_seen.repeat_interleave(heads // kv_heads, dim=1)
                    v_seen = v_seen.repeat_interleave(heads // kv_heads, dim=1)
            o = F.scaled_dot_product_attention(q, k_seen, v_seen, attn_mask=visible[..., :slot + 1],
                                               scale=attn.scaling, **gqa)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(N, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = model.lm_head(base.norm(x))[:, -1]
    return torch.stack(tokens, dim=1)


def generate_tokens(model: nn.Module, enc: dict[str, Tensor], kwargs: dict[str, Any], n: int) -> Tensor:
    """(B·n, P + C) like `model.generate(**enc, **kwargs)` for sampling kwargs from
    `lmlab.generate.generation_kwargs`: this loop when the model allows, else HF `generate`."""
    inner = decoder_of(model)
    if inner is None:
        return model.generate(**enc, **kwargs)
    eos = kwargs.get("eos_token_id") or []
    new = sample_tokens(inner, enc["input_ids"], enc["attention_mask"], n=n, max_new_tokens=kwargs["max_new_tokens"],
                        temperature=kwargs.get("temperature", 1.0) if kwargs.get("do_sample") else 0.0,
                        top_k=kwargs.get("top_k") or 0, top_p=kwargs.get("top_p") or 1.0,
                        stop_ids=[eos] if isinstance(eos, int) else eos, pad_id=kwargs["pad_token_id"])
    return torch.cat([enc["input_ids"].repeat_interleave(n, dim=0), new], dim=1)
