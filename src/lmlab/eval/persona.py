"""`lmlab eval persona`: does the model stay in character? Keyword hit rate per persona.

    lmlab eval persona model=runs/quickstart/sft personas=pirate,robot prompts=questions.txt out=runs/persona

Each prompt is answered twice: once with the persona's system prompt and once with no system
prompt (the baseline). A reply is *in character* when it contains at least one of the persona's
keywords (whole words, any case; `lmlab.data.personas.keyword_hit`). The baseline rate tells how
often those words appear anyway, so `lift = hit_rate - baseline_hit_rate` is the persona's effect.
Keyword matching is a cheap proxy: it rewards vocabulary, not tone, and a model can game it; read
`samples.jsonl` before trusting a number.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import fixed, opt
from lmlab.decoding import DecodingConfig
from lmlab.errors import DataError

DEFAULT_PROMPTS = [
    "Tell me about your day.",
    "What is your favourite food?",
    "How do I make a friend?",
    "Describe the weather today.",
    "Give me some advice for a long trip.",
    "What should I name my cat?",
    "Explain why the sky is blue.",
    "Tell me a short story about a dog.",
]


@dataclass
class PersonaEvalConfig(DecodingConfig):
    """Keyword hit rate of replies given each persona, against the same prompts without one."""

    model: str | None = opt(None, "model folder, run folder or hub id (required)")
    personas: list[str] = opt([], "persona names or YAML files, comma-separated (default: every built-in)")
    prompts: str | None = opt(None, "file of prompts: .txt one per line, or .jsonl with a 'prompt' field (default: 8 built-in)")
    out: str | None = opt(None, "folder for metrics.json, table.md, samples.jsonl (default: print only)")
    # decoding: DecodingConfig's keys with this command's defaults; one reply per prompt
    max_new_tokens: int = opt(64, "longest reply in tokens")
    temperature: float = opt(0.0, "0 = greedy: the same model gives the same score")
    top_k: int = opt(0, "top-k when sampling (0 = off)")
    top_p: float = opt(1.0, "nucleus top-p when sampling (1 = off)")
    repetition_penalty: float = opt(1.1, "penalise repeated tokens (1 = off)")
    seed: int = opt(0, "sampling seed")
    beams: int = fixed(1)
    n: int = fixed(1)
    stop: list[str] = fixed([])
    baseline: bool = opt(True, "also answer without a system prompt, to report the persona's lift")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    trust_remote_code: bool = opt(False, "allow custom model code from the hub")

    def validate(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("missing required key 'model' (a model folder, run folder or hub id)")
        if self.prompts and not Path(self.prompts).is_file():
            problems.append(f"prompts={self.prompts}: no such file")
        return problems + super().validate()


def read_prompts(path: str | None) -> list[str]:
    """The prompts of file `path` (`lmlab.generate.read_prompts`, lines stripped), or the built-in ones."""
    if not path:
        return list(DEFAULT_PROMPTS)
    from lmlab.generate import read_prompts as read_prompt_file

    prompts = read_prompt_file(path, strip=True)
    if not prompts:
        raise DataError(f"{path}: holds no prompts (one per line, or JSONL with a 'prompt' field)")
    return prompts


def score(replies: list[str], keywords: list[str]) -> dict[str, Any]:
    """Hit rate and per-keyword counts of a persona's keywords over replies."""
    from lmlab.data.personas import keyword_hits

    found = [keyword_hits(r, keywords) for r in replies]
    counts = {k: sum(k in f for f in found) for k in keywords}
    return {"hit_rate": sum(bool(f) for f in found) / max(1, len(replies)),
            "keyword_counts": {k: v for k, v in counts.items() if v}}


def run(cfg: PersonaEvalConfig) -> dict[str, Any]:
    from lmlab.data.chat import render_prompt
    from lmlab.data.personas import builtin_personas, load_persona
    from lmlab.eval.common import print_table, split_list
    from lmlab.generate import decoding_of, generate
    from lmlab.runs import atomic_write_json, atomic_write_text

    personas = [load_persona(p) for p in (split_list(cfg.personas) or builtin_personas())]
    prompts = read_prompts(cfg.prompts)
    from lmlab.models.load import load_model

    model, tok = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, device=cfg.device)
    dcfg = decoding_of(cfg)

    def answer(system: str) -> list[str]:
        head = [{"role": "system", "content": system}] if system else []
        texts = [render_prompt(tok, [*head, {"role": "user", "content": q}]) for q in prompts]
        return [outs[0] for outs in generate(model, tok, texts, dcfg)]

    base_replies = answer("") if cfg.baseline else []
    metrics: dict[str, Any] = {"model": cfg.model, "prompts": len(prompts), "personas": {}}
    samples = []
    rows = []
    for p in personas:
        replies = answer(p.system)
        s = score(replies, p.keywords)
        entry: dict[str, Any] = {"hit_rate": s["hit_rate"], "keyword_counts": s["keyword_counts"]}
        if cfg.baseline:
            entry["baseline_hit_rate"] = score(base_replies, p.keywords)["hit_rate"]
            entry["lift"] = entry["hit_rate"] - entry["baseline_hit_rate"]
        metrics["personas"][p.name] = entry
        rows.append([p.name, entry["hit_rate"], entry.get("baseline_hit_rate"), entry.get("lift"), len(replies)])
        samples += [{"persona": p.name, "prompt": q, "reply": r} for q, r in zip(prompts, replies, strict=True)]
    samples += [{"persona": None, "prompt": q, "reply": r} for q, r in zip(prompts, base_replies, strict=True)]
    table = print_table(f"persona keyword hit rate — {cfg.model}", ["persona", "hit rate", "baseline", "lift", "n"], rows)
    if cfg.out:
        out = Path(cfg.out)
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_text(out / "table.md", table)
        atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples))
    return metrics
