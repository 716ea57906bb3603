"""Built-in chat templates (Jinja, the format `tokenizer.apply_chat_template` runs).

Each template wraps assistant turns in `{% generation %}` … `{% endgeneration %}` so that
`apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly the tokens the model
must learn to produce (the reply and its end-of-turn token) — the basis of prompt masking in SFT.

Templates produce text only; the end-of-turn marker each one uses is listed in `END_OF_TURN` so
generation can stop on it (`stop_token_ids`).
"""
from __future__ import annotations

import contextlib
from typing import Any

# A system message, if any, must come first. `bos_token`/`eos_token` are the tokenizer's.
CHATML = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5's layout: ChatML with a default system prompt when none is given.
QWEN = (
    "{% if messages and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}" + CHATML
)

ALPACA = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
    "{% else %}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}{{ '\\n\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'user' %}{{ '### Response:\\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

PLAIN = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\\nAssistant: ' }}"
    "{% else %}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "qwen": QWEN,
    "alpaca": ALPACA,
    "llama3": LLAMA3,
    "plain": PLAIN,
}

# The text that closes an assistant turn in each template (besides the tokenizer's eos).
END_OF_TURN: dict[str, str] = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "llama3": "<|eot_id|>"}
KNOWN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>")


def get_template(name: str) -> str:
    from lmlab.config import closest
    from lmlab.errors import ConfigError

    if name not in CHAT_TEMPLATES:
        hint = closest(name, CHAT_TEMPLATES)
        raise ConfigError(
            f"unknown chat template '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
            + f" (built-in: {', '.join(CHAT_TEMPLATES)})"
        )
    return CHAT_TEMPLATES[name]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a reply: eos plus any known end-of-turn token in the vocabulary.

    Cached on the tokenizer (keyed by its eos id and size): SFT encoding asks once per example, and
    `get_vocab()` builds the whole vocabulary dict each time (151k entries for Qwen2.5)."""
    key = (tokenizer.eos_token_id, len(tokenizer))
    cached = getattr(tokenizer, "_lmlab_stop_ids", None)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in KNOWN_END_TOKENS:
        if tok in vocab and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    with contextlib.suppress(AttributeError, TypeError):  # a tokenizer that refuses new attributes: no cache
        tokenizer._lmlab_stop_ids = (key, tuple(ids))
    return ids
