"""Render conversations through a chat template into `input_ids` + `labels` with exact prompt masks.

SFT learns only what the assistant says: labels equal `input_ids` on every assistant turn (its
reply *and* the token that ends the turn, so the model learns to stop) and are -100 elsewhere
(system, user, the template's role headers). Two ways to find the assistant tokens:

1. **generation markers** (preferred): our built-in templates (`lmlab.templates`) and many modern
   hub templates wrap assistant text in `{% generation %}…{% endgeneration %}`; with a *fast*
   tokenizer, `apply_chat_template(..., return_assistant_tokens_mask=True)` maps those character
   spans to tokens through the offsets. The text is tokenized in one piece, exactly as at inference.
2. **incremental rendering** (fallback, for templates without markers or slow tokenizers): render
   each prefix of the conversation (with `add_generation_prompt` before an assistant turn) and
   take the text between successive renders as one segment, prompt or reply. Segments are
   tokenized separately and concatenated, so the mask is exact by construction (a token can never
   straddle a prompt/reply boundary); the price is that a merge across a boundary is lost, which
   never happens for templates whose role headers end in a special token or a newline.

If the template closes a reply with something that is not a stop token (an `eos` or a known
end-of-turn token such as `<|im_end|>`), the tokenizer's eos is appended to the reply and learned,
otherwise the tuned model would never stop.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmlab.errors import DataError
from lmlab.templates import CHAT_TEMPLATES, get_template, stop_token_ids

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


@dataclass
class EncodedExample:
    """One rendered conversation; `labels[i] == -100` where the model is not trained."""

    input_ids: list[int]
    labels: list[int]
    n_truncated_tokens: int = 0
    """tokens cut off the end by max_length"""
    n_truncated_response_tokens: int = 0
    """of those, tokens that would have been trained on (lost supervision)"""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class EncodeStats:
    """What rendering did to a dataset: reported in the log and in result.json."""

    examples: int = 0
    truncated_examples: int = 0
    truncated_response_tokens: int = 0
    dropped_examples: int = 0
    """examples with no trainable token left after truncation (skipped)"""
    trained_tokens: int = 0
    total_tokens: int = 0
    path: str = ""
    """'markers' or 'incremental': how the assistant mask was found"""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "truncated_examples": self.truncated_examples,
            "truncated_response_tokens": self.truncated_response_tokens,
            "dropped_examples": self.dropped_examples,
            "trained_tokens": self.trained_tokens,
            "total_tokens": self.total_tokens,
            "mask_path": self.path,
        }


def resolve_template(tokenizer: Any, template: str = "auto") -> str:
    """The Jinja text to render with: 'auto' = the tokenizer's own template, else ChatML."""
    if template == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):  # several named templates: the default one
            own = own.get("default")
        return own or CHAT_TEMPLATES["chatml"]
    if template in CHAT_TEMPLATES:
        return get_template(template)
    if "{%" in template or "{{" in template:
        return template  # an inline Jinja template
    return get_template(template)  # raises with the closest name


def has_generation_markers(template_text: str) -> bool:
    return "{% generation %}" in template_text.replace("{%- generation", "{% generation").replace(
        "{%generation", "{% generation"
    )


def normalize_messages(messages: Iterable[Any], *, system: str | None = None, where: str = "example") -> list[dict[str, str]]:
    """Messages (dicts or `Message` records) as plain dicts; checks roles and the turn order."""
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role = m["role"] if isinstance(m, dict) else getattr(m, "role", None)
        content = m["content"] if isinstance(m, dict) else getattr(m, "content", None)
        if role not in ROLES:
            from lmlab.config import closest

            hint = closest(str(role), ROLES)
            raise DataError(
                f"{where}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}"
                + (f" (did you mean '{hint}'?)" if hint else "")
            )
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} ({role}) has content {content!r}; expected text")
        out.append({"role": role, "content": content})
    if system and (not out or out[0]["role"] != "system"):
        out.insert(0, {"role": "system", "content": system})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: no assistant message, nothing to train on (roles: {[m['role'] for m in out]})")
    return out


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not messages:
        return ""
    return render_prompt(tokenizer, messages, template=template, add_generation_prompt=add_generation_prompt)


def _encode_markers(tokenizer: Any, template: str, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    out = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def _encode_incremental(
    tokenizer: Any, template: str, messages: list[dict[str, str]], end_tokens: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Segment the rendered text by rendering growing prefixes; see the module docstring."""
    segments: list[tuple[str, bool]] = []  # (text, is_reply)
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _render(tokenizer, template, messages[:i], add_generation_prompt=True)
        full = _render(tokenizer, template, messages[: i + 1], add_generation_prompt=False)
        if not head.startswith(done) or not full.startswith(head):
            raise DataError(
                "chat template is not prefix-stable (rendering a conversation prefix is not a prefix of "
                f"rendering the whole; turn {i}), so reply tokens cannot be located; "
                "use a template with {% generation %} markers (template=chatml|qwen|llama3|alpaca|plain)"
            )
        reply = full[len(head):]
        # Whitespace after the turn's end marker belongs to the template, not to the reply.
        stripped = reply.rstrip()
        if stripped != reply and any(stripped.endswith(t) for t in end_tokens):
            reply = stripped
        segments.append((head[len(done):], False))
        segments.append((reply, True))
        done = head + reply
    whole = _render(tokenizer, template, messages, add_generation_prompt=False)
    if not whole.startswith(done):
        raise DataError("chat template is not prefix-stable; use a template with {% generation %} markers")
    segments.append((whole[len(done):], False))
    ids: list[int] = []
    mask: list[int] = []
    for text, is_reply in segments:
        if not text:
            continue
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([int(is_reply)] * len(piece))
    return ids, mask


def _ensure_stop(ids: list[int], mask: list[int], stops: set[int], eos: int | None) -> tuple[list[int], list[int]]:
    """Append eos to every reply span that does not end in a stop token."""
    if eos is None:
        return ids, mask
    out_ids: list[int] = []
    out_mask: list[int] = []
    n = len(ids)
    for i in range(n):
        out_ids.append(ids[i])
        out_mask.append(mask[i])
        span_ends = mask[i] == 1 and (i + 1 == n or mask[i + 1] == 0)
        if span_ends and ids[i] not in stops:
            out_ids.append(eos)
            out_mask.append(1)
    return out_ids, out_mask


def encode_chat(
    tokenizer: Any,
    messages: Iterable[Any],
    *,
    template: str = "auto",
    max_length: int | None = None,
    train_on_prompt: bool = False,
    system: str | None = None,
    path: str = "auto",
    where: str = "example",
) -> EncodedExample:
    """Tokenize one conversation with labels on assistant tokens only.

    `path`: 'auto' (markers when the template has them and the tokenizer is fast, else
    incremental), 'markers' or 'incremental' (forced; used by tests to compare the two).
    Truncation keeps the first `max_length` tokens and counts what was cut.
    """
    msgs = normalize_messages(messages, system=system, where=where)
    text = resolve_template(tokenizer, template)
    chosen = choose_path(tokenizer, text) if path == "auto" else path
    if chosen == "markers":
        ids, mask = _encode_markers(tokenizer, text, msgs)
    else:
        ends = _end_texts(tokenizer)
        ids, mask = _encode_incremental(tokenizer, text, msgs, ends)
    ids, mask = _ensure_stop(ids, mask, set(stop_token_ids(tokenizer)), tokenizer.eos_token_id)
    labels = list(ids) if train_on_prompt else [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    cut = cut_resp = 0
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        cut_resp = sum(1 for x in labels[max_length:] if x != IGNORE_INDEX)
        ids, labels = ids[:max_length], labels[:max_length]
    return EncodedExample(ids, labels, cut, cut_resp)


def choose_path(tokenizer: Any, template_text: str) -> str:
    fast = bool(getattr(tokenizer, "is_fast", False))
    return "markers" if fast and has_generation_markers(template_text) else "incremental"


def _end_texts(tokenizer: Any) -> list[str]:
    vocab = tokenizer.get_vocab()
    texts = [tokenizer.decode([i]) for i in stop_token_ids(tokenizer) if i is not None]
    return [t for t in texts if t and (t in vocab or t == tokenizer.eos_token)]


def encode_dataset(
    tokenizer: Any,
    conversations: Iterable[Any],
    *,
    template: str = "auto",
    max_length: int | None = None,
    train_on_prompt: bool = False,
    system: str | None = None,
    source: str = "data",
) -> tuple[list[EncodedExample], EncodeStats]:
    """Encode many conversations (ChatRecords or message lists); drop those left with nothing to learn."""
    stats = EncodeStats(path=choose_path(tokenizer, resolve_template(tokenizer, template)))
    out: list[EncodedExample] = []
    for i, conv in enumerate(conversations):
        messages = getattr(conv, "messages", conv)
        ex = encode_chat(
            tokenizer, messages, template=template, max_length=max_length, train_on_prompt=train_on_prompt,
            system=system, where=f"{source}: record {i + 1}",
        )
        stats.examples += 1
        if ex.n_truncated_tokens:
            stats.truncated_examples += 1
            stats.truncated_response_tokens += ex.n_truncated_response_tokens
        if ex.n_trained == 0 or len(ex) < 2:
            stats.dropped_examples += 1
            continue
        stats.trained_tokens += ex.n_trained
        stats.total_tokens += len(ex)
        out.append(ex)
    if not out:
        raise DataError(
            f"{source}: no example has a response token within max_length={max_length} "
            f"({stats.examples} examples, {stats.truncated_examples} truncated); raise max_length"
        )
    return out, stats


def render_prompt(
    tokenizer: Any,
    prompt: str | Sequence[Any],
    *,
    reply: str | None = None,
    template: str = "auto",
    system: str | None = None,
    add_generation_prompt: bool | None = None,
) -> str:
    """The one place a conversation becomes text: what a model reads at inference, or is scored on.

    `prompt` is one user turn (a string) or messages (dicts or `Message` records); `system` is put
    first unless the conversation opens with one. Without `reply` the text ends with the assistant
    header, where generation starts; with `reply` it ends after that assistant turn (what a reward
    model scores). `template` goes through `resolve_template` ('auto': the tokenizer's own, else
    ChatML), so training, chat, serve, eval and the reward model read the same text.
    """
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs = [m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in prompt]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    if reply is not None:
        msgs.append({"role": "assistant", "content": reply})
    if add_generation_prompt is None:
        add_generation_prompt = reply is None
    return tokenizer.apply_chat_template(
        msgs, chat_template=resolve_template(tokenizer, template), tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
