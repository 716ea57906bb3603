"""Keys and loaders shared by `chat`, `serve` and `web`: decoding settings, persona, retrieval.

The three commands differ in how they talk to a person (terminal, HTTP, browser) but not in how
they generate, so their configs inherit the same keys: `ChatKeys` is a `lmlab.decoding.DecodingConfig`
with chat defaults, and `decoding_of(cfg, **changes)` gives the plain one `generate` takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmlab.config import fixed, opt
from lmlab.decoding import DecodingConfig


@dataclass
class ChatKeys(DecodingConfig):
    """Model, persona, retrieval and decoding keys common to chat, serve and web."""

    model: str | None = opt(None, "model folder, run folder (its final/) or hub id (required)")
    system: str = opt("", "system prompt; a persona's prompt is used when this is empty")
    persona: str | None = opt(None, "built-in persona name (pirate, teacher, storyteller, robot) or a persona YAML file")
    rag: str | None = opt(None, "index folder from `lmlab index`: answer with retrieved reference documents")
    rag_top_k: int = opt(3, "retrieve at most this many chunks per question")
    rag_threshold: float | None = opt(None, "minimum cosine similarity of a retrieved chunk; default: the index's (0.5 MiniLM, 0.2 TF-IDF)")
    max_history_tokens: int = opt(1024, "prompt budget in tokens; the oldest turns are dropped first (never the system prompt or the newest question)")
    # decoding: DecodingConfig's keys with chat defaults; one streamed reply per prompt, so no beams, n or stop
    max_new_tokens: int = opt(128, "longest reply in tokens")
    temperature: float = opt(0.7, "sampling temperature; 0 = greedy (deterministic)")
    top_k: int = opt(50, "sample among the k most likely tokens (0 = off)")
    top_p: float = opt(0.9, "nucleus sampling: smallest set of tokens with this total probability (1 = off)")
    repetition_penalty: float = opt(1.1, "divide logits of already-seen tokens by this (1 = off; Keskar et al. 2019)")
    seed: int | None = opt(None, "seed for sampling (None = random)")
    beams: int = fixed(1)
    n: int = fixed(1)
    stop: list[str] = fixed([])
    device: str = opt("auto", "auto, cpu, cuda, mps")
    threads: int | None = opt(None, "CPU threads for torch (None = torch's default); 1 is fastest on a busy shared CPU")
    trust_remote_code: bool = opt(False, "allow custom model code from the hub")

    def validate(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("missing the model: give it as the first argument (a model folder, run folder or hub id)")
        problems += super().validate()
        if self.max_history_tokens < 16:
            problems.append(f"max_history_tokens must be >= 16, got {self.max_history_tokens}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if self.rag_top_k < 1:
            problems.append(f"rag_top_k must be >= 1, got {self.rag_top_k}")
        return problems


def load_chat_model(keys: ChatKeys) -> tuple[Any, Any]:
    """Model and tokenizer through `lmlab.models.load_model`, in eval mode."""
    from lmlab.models import load_model

    if getattr(keys, "threads", None):
        import torch

        torch.set_num_threads(keys.threads)  # threads that spin-wait on an oversubscribed CPU cost 10x
    model, tokenizer = load_model(keys.model, trust_remote_code=keys.trust_remote_code, device=keys.device)
    model.eval()
    return model, tokenizer


def system_prompt(keys: ChatKeys) -> tuple[str, str | None]:
    """(system prompt, persona name): an explicit `system` wins over the persona's prompt."""
    if keys.persona:
        from lmlab.data.personas import load_persona

        persona = load_persona(keys.persona)
        return (keys.system or persona.system), persona.name
    return keys.system, None


def load_index(keys: ChatKeys) -> Any:
    if not keys.rag:
        return None
    from lmlab.chat.rag import Index

    return Index.load(keys.rag)
