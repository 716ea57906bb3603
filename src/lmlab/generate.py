"""Decoding: one interface for every model (RNN, LSTM, GRU, Transformer, seq2seq, any HF causal LM).

    lmlab generate runs/quickstart/pt prompt="Once upon a time" temperature=0.7 n=3 seed=0

    from lmlab.generate import DecodingConfig, generate
    generate(model, tokenizer, ["Tom found"], DecodingConfig(temperature=0, max_new_tokens=20))

Everything runs through Hugging Face `generate`, so our recurrent models decode incrementally with
their state cache and beams, top-k / nucleus sampling and repetition penalty mean the same for
every model. Decoder-only batches are left-padded (new tokens then line up at the right edge);
continuations exclude the prompt, end at eos or a chat end-of-turn token
(`lmlab.templates.stop_token_ids`) and are cut at the first `stop` string.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria

from lmlab.config import opt
from lmlab.decoding import DecodingConfig, check, decoding_of


def generation_kwargs(model: Any, tokenizer: Any, cfg: DecodingConfig) -> dict[str, Any]:
    """Arguments for HF `generate`. Every sampling knob is explicit, so a hub model's own
    generation_config (e.g. Qwen's temperature 0.7, top_k 20) never silently changes results."""
    from lmlab.templates import stop_token_ids

    eos = stop_token_ids(tokenizer) or None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
    kwargs: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "do_sample": cfg.do_sample,
        "num_beams": cfg.beams,
        "num_return_sequences": cfg.n,
        "repetition_penalty": cfg.repetition_penalty,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    if cfg.do_sample:  # greedy/beam search never reads the sampling knobs
        kwargs.update(top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature)
    if cfg.beams > 1:  # HF's default 1.0 would otherwise come from the model's generation_config
        kwargs["length_penalty"] = cfg.length_penalty
    kwargs["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size  # explicit (0 = off), like the sampling knobs
    return kwargs


class StopOnText(StoppingCriteria):
    """A `StoppingCriteria` that finishes a row once its *generated* text contains a stop string.

    HF's own `stop_strings` also matches across the prompt boundary (prompt "the" + token "he"
    stops on "eh"), which would end a continuation before the stop string is in it. Only a tail
    window of tokens is decoded each step, so the cost does not grow with the length.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length
        self.window = 4 * max((len(s) for s in self.stops), default=1) + 8

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stopping(tokenizer: Any, cfg: DecodingConfig, prompt_length: int) -> dict[str, Any]:
    """`stopping_criteria` for HF generate when `cfg.stop` is set (prompt_length: 0 for seq2seq)."""
    if not any(cfg.stop):
        return {}
    from transformers import StoppingCriteriaList

    return {"stopping_criteria": StoppingCriteriaList([StopOnText(tokenizer, cfg.stop, prompt_length)])}


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def _encode(tokenizer: Any, prompts: list[str], device: torch.device, left: bool) -> dict[str, torch.Tensor]:
    """Batch-encode with left padding (decoder-only); empty prompts start from bos (or eos)."""
    start = tokenizer.bos_token or tokenizer.eos_token or ""
    texts = [p if p else start for p in prompts]
    bos = tokenizer.bos_token
    # chat prompts rendered by a template already begin with bos; don't add a second one
    add_special = not (bos and all(t.startswith(bos) for t in texts))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if left else "right"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def generate_with_stats(
    model: Any, tokenizer: Any, prompts: str | Sequence[str], cfg: DecodingConfig | None = None, *, batch_size: int = 16
) -> tuple[list[list[str]], dict[str, float]]:
    """`generate` plus {"new_tokens", "seconds", "tokens_per_s"}."""
    cfg = check(cfg or DecodingConfig())
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(cfg.seed)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    device = _device(model)
    kwargs = generation_kwargs(model, tokenizer, cfg)
    pad = kwargs["pad_token_id"]
    was_training = model.training
    model.eval()
    results: list[list[str]] = []
    new_tokens = 0
    started = time.perf_counter()
    try:
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i : i + batch_size]
            enc = _encode(tokenizer, batch, device, left=not encoder_decoder)
            prompt_length = 0 if encoder_decoder else enc["input_ids"].shape[1]
            out = model.generate(**enc, **kwargs, **stopping(tokenizer, cfg, prompt_length))  # (B * n, L)
            new = out if encoder_decoder else out[:, enc["input_ids"].shape[1] :]
            if pad is not None:
                new_tokens += int((new != pad).sum())
            else:
                new_tokens += new.numel()
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            texts = [cut_at_stop(t, cfg.stop) for t in texts]
            results.extend(texts[j * cfg.n : (j + 1) * cfg.n] for j in range(len(batch)))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    return results, {"new_tokens": new_tokens, "seconds": seconds, "tokens_per_s": new_tokens / max(seconds, 1e-9)}


def generate(
    model: Any, tokenizer: Any, prompts: str | Sequence[str], cfg: DecodingConfig | None = None, *, batch_size: int = 16
) -> list[list[str]]:
    """`cfg.n` continuations (prompt excluded) for each prompt, in order."""
    return generate_with_stats(model, tokenizer, prompts, cfg, batch_size=batch_size)[0]


def stream(model: Any, tokenizer: Any, prompt: str, cfg: DecodingConfig | None = None) -> Iterator[str]:
    """Text deltas of one continuation as they are produced (n and beams are ignored).

    HF `generate` runs in a thread feeding a `TextIteratorStreamer`; text that could be the start
    of a stop string is held back until it is clear it is not, so no stop string ever leaks out.
    """
    from transformers import TextIteratorStreamer

    cfg = check(cfg or DecodingConfig())
    single = decoding_of(cfg, n=1, beams=1)
    if single.seed is not None:
        torch.manual_seed(single.seed)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    enc = _encode(tokenizer, [prompt], _device(model), left=not encoder_decoder)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=not encoder_decoder, skip_special_tokens=True)
    kwargs = generation_kwargs(model, tokenizer, single)
    extra = stopping(tokenizer, single, 0 if encoder_decoder else enc["input_ids"].shape[1])
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(**enc, **kwargs, **extra, streamer=streamer)
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
            streamer.end()

    model.eval()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text, sent, stopped = "", 0, False
    stops = [s for s in single.stop if s]
    for piece in streamer:
        text += piece
        cut = cut_at_stop(text, stops)
        if len(cut) < len(text):  # a stop string appeared
            if len(cut) > sent:
                yield cut[sent:]
            sent, stopped = len(text), True
            break
        # hold back a tail that may be the beginning of a stop string
        hold = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        if len(text) - hold > sent:
            yield text[sent : len(text) - hold]
            sent = len(text) - hold
    else:
        if len(text) > sent:
            yield text[sent:]
    if stopped:
        for _ in streamer:  # drain so the generating thread can finish
            pass
    thread.join()
    if failure:
        raise failure[0]


# -- the `lmlab generate` command -------------------------------------------------------------------


@dataclass(kw_only=True)
class GenerateConfig(DecodingConfig):
    """`lmlab generate MODEL`: sample continuations of prompts and print them."""

    model: str = opt(help="a run folder, a model folder, a LoRA adapter folder or a HF hub id")
    prompt: str = opt("Once upon a time", "the prompt text")
    prompts: str | None = opt(None, "a file of prompts, one per line (.txt) or {'prompt': ...} per line (.jsonl); overrides prompt")
    chat: bool = opt(False, "wrap each prompt as a user message in the model's chat template")
    system: str | None = opt(None, "system message for chat=true")
    out: str | None = opt(None, "folder for samples.jsonl and metrics.json")
    batch_size: int = opt(8, "prompts per generate call")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    dtype: str | None = opt(None, "float32, bfloat16 or float16 (default: the checkpoint's)")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    def validate(self) -> list[str]:
        problems = super().validate()
        # here, unlike chat / serve (which stream one row and ignore beams), beams are in the user's hands
        if self.length_penalty != 1.0 and self.beams == 1:
            problems.append(f"length_penalty={self.length_penalty} only changes beam search; set beams > 1 (or drop length_penalty)")
        return problems


def read_prompts(path: str, *, strip: bool = False) -> list[str]:
    """Prompts from a file: each non-blank line of a text file (`strip`: without surrounding
    whitespace), or the 'prompt' string of each object of a .jsonl file."""
    import json

    from lmlab.errors import DataError

    file = Path(path)
    if not file.exists():
        raise DataError(f"prompts={path}: no such file")
    lines = file.read_text(encoding="utf-8").splitlines()
    if file.suffix != ".jsonl":
        return [line.strip() if strip else line for line in lines if line.strip()]
    prompts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f"{path}:{i}: expected an object with a 'prompt' string, got {line[:80]!r}")
        prompts.append(row["prompt"])
    return prompts


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Load the model, generate, print, and (with out=DIR) write samples.jsonl + metrics.json."""
    from lmlab.data.chat import render_prompt
    from lmlab.models.load import load_model
    from lmlab.runs import atomic_write_json, atomic_write_text
    from lmlab.templates import END_OF_TURN

    model, tokenizer = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    raw = read_prompts(cfg.prompts) if cfg.prompts else [cfg.prompt]
    decoding = decoding_of(cfg)
    texts = raw
    if cfg.chat:
        texts = [render_prompt(tokenizer, p, system=cfg.system) for p in raw]
        decoding.stop = [*decoding.stop, *sorted(set(END_OF_TURN.values()))]
    samples, stats = generate_with_stats(model, tokenizer, texts, decoding, batch_size=cfg.batch_size)
    rows = [{"prompt": p, "sample": i, "text": t} for p, outs in zip(raw, samples, strict=True) for i, t in enumerate(outs)]
    for p, outs in zip(raw, samples, strict=True):
        print(f"\n>>> {p}")
        for i, t in enumerate(outs):
            print(f"[{i}] {t}" if len(outs) > 1 else t)
    metrics = {
        "prompts": len(raw), "samples": len(rows), "new_tokens": stats["new_tokens"],
        "tokens_per_s": round(stats["tokens_per_s"], 2), "seconds": round(stats["seconds"], 3),
        "mean_chars": sum(len(r["text"]) for r in rows) / max(len(rows), 1),
    }
    if cfg.out:
        import dataclasses
        import json

        from lmlab.runs import atomic_write_yaml

        out = Path(cfg.out)
        atomic_write_yaml(out / "config.yaml", dataclasses.asdict(cfg))  # the report headlines prompt + decoding from it
        atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_json(out / "metrics.json", metrics)
    return {"samples": rows, "metrics": metrics}
