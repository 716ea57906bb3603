"""A batching generation engine: many callers, one model, one `generate` call per batch.

The server (and the web page) receive requests one at a time from many clients. Running each on
its own wastes the hardware: a decoding step of a small model costs about the same for 1 row as
for 32. A background worker therefore collects requests that arrive together (up to
`max_batch_size`, waiting at most `batch_wait_ms` for company), left-pads them into one batch and
runs one Hugging Face `generate` (dynamic batching). Each row keeps its own token budget, stop
strings and cancel flag; a per-row stopping criterion sees every new token, emits the row's text
delta to its caller and marks the row finished, so short requests do not wait for long ones to
*stream*, and a batch ends as soon as every row is done.

Rows in one batch must share the sampling settings (temperature, top-k, top-p, repetition
penalty): HF applies one logits-processor chain per call. Requests with other settings wait for
the next batch. `max_new_tokens` and `stop` may differ per row. A per-request `seed` cannot be
honoured inside a shared batch and is ignored here (use `lmlab generate` for reproducible
sampling).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from lmlab.templates import stop_token_ids

OnDelta = Callable[[str], None]
OnDone = Callable[["Completion"], None]


@dataclass
class Completion:
    """What a finished request produced (for usage accounting and `finish_reason`)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end token / stop string), "length", "cancelled" or "error"
    error: str | None = None
    queued_s: float = 0.0
    """Seconds between submit and the start of the batch that served it."""


@dataclass
class _Request:
    ids: list[int]
    max_new_tokens: int
    sampling: tuple[Any, ...]
    stop: list[str]
    on_delta: OnDelta | None
    on_done: OnDone | None
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Handle:
    """A submitted request: `cancel()` it (client went away) or `wait()` for its Completion."""

    def __init__(self, request: _Request):
        self._request = request
        self._done = threading.Event()
        self.completion: Completion | None = None

    def cancel(self) -> None:
        self._request.cancelled.set()

    def wait(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        assert self.completion is not None
        return self.completion


def batch_key(model: Any, tokenizer: Any, cfg: Any) -> tuple[Any, ...]:
    """The sampling settings a request shares with its batch: `lmlab.generate.generation_kwargs`
    of its DecodingConfig, less what the engine handles per row (length, stop strings, end ids)."""
    from lmlab.generate import check, decoding_of, generation_kwargs

    single = check(decoding_of(cfg, n=1, beams=1, stop=[]))
    kwargs = generation_kwargs(model, tokenizer, single)
    for key in ("max_new_tokens", "stop_strings", "tokenizer", "eos_token_id", "pad_token_id"):
        kwargs.pop(key, None)
    return tuple(sorted(kwargs.items()))


class _RowTracker(StoppingCriteria):
    """Per-row bookkeeping run by HF after every decoding step: deltas, budgets, stop strings.

    Returns a (B,) bool tensor, which HF uses to finish rows individually (their later tokens
    become padding) and to end the whole call once every row is finished.
    """

    def __init__(self, engine: BatchEngine, requests: list[_Request], prompt_len: int):
        self.engine = engine
        self.requests = requests
        self.prompt_len = prompt_len
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.sent: list[str] = ["" for _ in requests]
        self.reason: list[str | None] = [None for _ in requests]

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()  # (B,)
        for i, req in enumerate(self.requests):
            if self.reason[i] is not None:
                continue
            tok = int(last[i])
            if tok in self.engine.stop_ids:
                self.reason[i] = "stop"
            else:
                self.tokens[i].append(tok)
                self._emit(i)
                if self.reason[i] is None and len(self.tokens[i]) >= req.max_new_tokens:
                    self.reason[i] = "length"
            if self.reason[i] is None and req.cancelled.is_set():
                self.reason[i] = "cancelled"
        done = [r is not None for r in self.reason]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _emit(self, i: int) -> None:
        """Send the new text of row i; hold back a partial stop string or a split UTF-8 character."""
        req = self.requests[i]
        text = self.engine.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
        for s in req.stop:
            cut = text.find(s)
            if cut != -1:
                text = text[:cut]
                self.reason[i] = "stop"
        if self.reason[i] is None:
            if text.endswith("\ufffd"):
                return  # a multi-byte character not finished yet
            hold = max((len(s) - 1 for s in req.stop), default=0)
            for k in range(min(hold, len(text)), 0, -1):
                if any(s.startswith(text[-k:]) for s in req.stop):
                    text = text[:-k]
                    break
        if len(text) > len(self.sent[i]) and text.startswith(self.sent[i]):
            delta = text[len(self.sent[i]):]
            self.sent[i] = text
            if req.on_delta is not None:
                req.on_delta(delta)

    def final_text(self, i: int) -> str:
        text = self.engine.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
        for s in self.requests[i].stop:
            cut = text.find(s)
            if cut != -1:
                text = text[:cut]
        return text


class BatchEngine:
    """Dynamic batching over one model. `submit()` from any thread; callbacks run on the worker.

    `max_batch_size` bounds rows per `generate` call (memory); `batch_wait_ms` is how long the
    worker waits for more requests after the first one arrives (latency traded for throughput).
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, batch_wait_ms: float = 10.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max(1, int(max_batch_size))
        self.batch_wait_s = max(0.0, batch_wait_ms / 1000.0)
        self.stop_ids = set(stop_token_ids(tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._inbox: queue.Queue[_Request | None] = queue.Queue()
        self._pending: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        self.batches_run = 0
        self.largest_batch = 0

    # -- public -----------------------------------------------------------------------------
    def start(self) -> BatchEngine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lmlab-batch-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._closing = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt; bos is added only if the text does not already start with it
        (a chat template writes its own), the rule `lmlab.generate` follows."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def submit(self, prompt: str, cfg: Any, *, on_delta: OnDelta | None = None, on_done: OnDone | None = None) -> Handle:
        """Queue `prompt` for generation with DecodingConfig `cfg`; returns at once."""
        sampling = batch_key(self.model, self.tokenizer, cfg)
        stop = [s for s in (cfg.stop or []) if s]
        req = _Request(self.encode(prompt), int(cfg.max_new_tokens), sampling, stop, on_delta, None)
        handle = Handle(req)

        def done(result: Completion) -> None:
            handle.completion = result
            handle._done.set()
            if on_done is not None:
                on_done(result)

        req.on_done = done
        self.start()
        self._inbox.put(req)
        return handle

    def generate(self, prompt: str, cfg: Any) -> Completion:
        """Blocking convenience: submit and wait."""
        return self.submit(prompt, cfg).wait()

    # -- worker -----------------------------------------------------------------------------
    def _next_batch(self) -> list[_Request]:
        """The oldest pending request plus compatible ones arriving within the wait window."""
        if not self._pending:
            first = self._inbox.get()
            if first is None:
                return []
            self._pending.append(first)
        key = self._pending[0].sampling
        deadline = time.perf_counter() + self.batch_wait_s
        while len([r for r in self._pending if r.sampling == key]) < self.max_batch_size:
            left = deadline - time.perf_counter()
            try:
                item = self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._closing = True
                break
            self._pending.append(item)
        batch = [r for r in self._pending if r.sampling == key][: self.max_batch_size]
        self._pending = [r for r in self._pending if r not in batch]
        return batch

    def _loop(self) -> None:
        while not self._closing or self._pending:
            batch = self._next_batch()
            if not batch:
                if self._closing:
                    break
                continue
            live = [r for r in batch if not r.cancelled.is_set()]
            for r in batch:
                if r.cancelled.is_set() and r.on_done:
                    r.on_done(Completion("", 0, 0, "cancelled"))
            if not live:
                continue
            try:
                self._run(live)
            except Exception as exc:  # a failing batch must not kill the server's only worker
                for r in live:
                    if r.on_done:
                        r.on_done(Completion("", 0, 0, "error", error=f"{type(exc).__name__}: {exc}"))

    @torch.inference_mode()
    def _run(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        width = max(len(r.ids) for r in batch)
        # left padding: decoder-only models continue from the right end of every row
        ids = torch.tensor([[self.pad_id] * (width - len(r.ids)) + r.ids for r in batch], device=device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in batch], device=device)  # (B, T)
        prompt_tokens = [len(r.ids) for r in batch]
        tracker = _RowTracker(self, batch, width)
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            **dict(batch[0].sampling),
            max_new_tokens=max(r.max_new_tokens for r in batch),
            stopping_criteria=StoppingCriteriaList([tracker]),
            eos_token_id=sorted(self.stop_ids) or None,
            pad_token_id=self.pad_id,
        )
        for i, r in enumerate(batch):
            reason = tracker.reason[i] or "length"
            text = tracker.final_text(i)
            if len(text) > len(tracker.sent[i]) and text.startswith(tracker.sent[i]) and r.on_delta:
                r.on_delta(text[len(tracker.sent[i]):])  # flush text held back for a stop-string check
            if r.on_done:
                r.on_done(Completion(text, int(prompt_tokens[i]), len(tracker.tokens[i]), reason,
                                     queued_s=started - r.submitted))
