"""`lmlab serve MODEL`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with dynamic batching.

    lmlab serve runs/quickstart/sft port=8000 api_key=secret max_batch_size=16
    # then, from any OpenAI client:
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret").chat.completions.create(...)

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
(both with `stream: true` as server-sent events in OpenAI's chunk format, ending `data: [DONE]`).
Bad requests get a 4xx JSON body in OpenAI's error shape, `{"error": {"message", "type", "param",
"code"}}`, naming the field and the allowed values. Requests run concurrently up to
`max_concurrency`; more wait in a queue of at most `max_queue` (then 429). Generation goes through
one `BatchEngine` (lmlab/chat/engine.py), which merges requests that arrive together into one
batched `generate`. Extensions beyond OpenAI's fields: `top_k`, `repetition_penalty` in requests;
`sources` (retrieved chunks) in responses when the server runs with `rag=INDEX`.

Robustness: a body over `max_request_bytes` is answered 413 before any parsing (it is read in
chunks and thrown away, never held); JSON parsing, validation, chat-template rendering and
tokenizing run in a worker thread, so one huge or slow request cannot stall `/health` or other
clients; a prompt whose byte length already proves it longer than the context is refused without
being tokenized at all. NaN/inf numbers, too-deep nesting and wrong content types are 4xx answers.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmlab.chat.engine import BatchEngine, Completion
from lmlab.chat.options import ChatKeys, load_chat_model, load_index, system_prompt
from lmlab.chat.session import render_prompt
from lmlab.config import opt
from lmlab.decoding import decoding_of

ROLES = ("system", "user", "assistant", "developer")


@dataclass
class ServeConfig(ChatKeys):
    """Serve a model over an OpenAI-compatible HTTP API."""

    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0 = every interface)")
    port: int = opt(8000, "TCP port; 0 picks a free one (printed on start)")
    api_key: str | None = opt(None, "require `Authorization: Bearer KEY` on /v1 endpoints (None = open)")
    name: str | None = opt(None, "model id reported by /v1/models and required in requests; default: the model folder's name")
    max_concurrency: int = opt(64, "requests generating at once; more wait in the queue")
    max_queue: int = opt(256, "requests allowed to wait; beyond this the server answers 429")
    max_batch_size: int = opt(8, "rows per batched generate call (memory bound)")
    batch_wait_ms: float = opt(10.0, "how long the batcher waits for more requests after the first (ms)")
    max_tokens_limit: int = opt(2048, "largest max_tokens a request may ask for")
    temperature: float = opt(1.0, "default sampling temperature when a request gives none (OpenAI's default 1)")
    top_p: float = opt(1.0, "default nucleus top_p when a request gives none")
    top_k: int = opt(0, "default top-k when a request gives none (0 = off)")
    repetition_penalty: float = opt(1.0, "default repetition penalty when a request gives none")
    max_request_bytes: int = opt(1_000_000, "largest request body in bytes; larger ones get 413 before parsing")

    def validate(self) -> list[str]:
        problems = super().validate()
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be in 0..65535, got {self.port}")
        for key in ("max_concurrency", "max_batch_size", "max_tokens_limit", "max_request_bytes"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_queue < 0:
            problems.append(f"max_queue must be >= 0, got {self.max_queue}")
        return problems


class ApiError(Exception):
    """A request problem, answered as OpenAI's error object with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -- request validation ---------------------------------------------------------------------------
def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float, *, integer: bool = False,
            lo_open: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return default
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ApiError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}", key)
    if not math.isfinite(value):
        raise ApiError(400, f"'{key}' must be a finite number, got {value!r}", key)
    if value < lo or value > hi or (lo_open and value == lo):
        lo_s = f"({lo}" if lo_open else f"[{lo}"
        raise ApiError(400, f"'{key}' must be in {lo_s}, {hi}], got {value!r}", key)
    return value


def _short(value: Any, n: int = 80) -> str:
    """repr(value), cut to n characters: error messages name the value without echoing megabytes."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"… ({len(text)} chars)"


def _text_content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported, got {_short(part)}",
                               f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"messages[{i}].content must be a string, got {_short(content)}", f"messages[{i}].content")


def parse_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            from lmlab.config import closest

            hint = closest(str(role), ROLES)
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got {_short(role)}"
                           + (f"; did you mean '{hint}'?" if hint else ""), f"messages[{i}].role")
        out.append({"role": "system" if role == "developer" else role, "content": _text_content(m.get("content"), i)})
    if out[-1]["role"] == "assistant":
        raise ApiError(400, "the last message must be from the user (or system), not the assistant", "messages")
    return out


JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")
"""Content types taken as JSON: the right one, plus what curl -d and some clients send by default."""
DRAIN_LIMIT = 64 * 2**20
"""An oversize body up to this size is read (and dropped) so the client gets its 413 cleanly."""


def check_content_type(header: str | None) -> None:
    media = (header or "").split(";")[0].strip().lower()
    if media and media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type {media!r} is not supported; send the body as JSON with "
                       "'Content-Type: application/json'", code="unsupported_media_type")


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, read in chunks; 413 once it passes `limit` (the rest is drained, never kept)."""
    too_big = ApiError(413, f"the request body is larger than this server's limit of {limit} bytes "
                       "(max_request_bytes); send a shorter prompt or fewer messages", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            chunks.clear()
            if size > DRAIN_LIMIT:
                break
            continue
        chunks.append(chunk)
    if size > limit:
        raise too_big
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object, or an ApiError that says what is wrong with the body."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be a chat or completion request") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def max_token_bytes(tokenizer: Any) -> int:
    """The most UTF-8 bytes one token can stand for (an upper bound), so that a prompt's byte length
    divided by it is a lower bound on its token count."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # no vocabulary to inspect: no bound
        return 0
    return max((len(str(t).encode("utf-8")) for t in vocab), default=0)


class Server:
    """The app's state: engine, defaults, persona, retrieval, concurrency bounds."""

    def __init__(self, engine: BatchEngine, cfg: ServeConfig, *, model_name: str, system: str = "",
                 index: Any = None):
        self.engine, self.cfg, self.model_name = engine, cfg, model_name
        self.system, self.index = system, index
        self.context = int(getattr(engine.model.config, "max_position_embeddings", 0) or 0) or None
        self.slots = asyncio.Semaphore(cfg.max_concurrency)
        self.waiting = 0
        self.created = int(time.time())
        self.token_bytes = max_token_bytes(engine.tokenizer) if self.context else 0

    # -- checks -----------------------------------------------------------------------------
    def authorize(self, header: str | None) -> None:
        if self.cfg.api_key is None:
            return
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        if header[len("Bearer "):].strip() != self.cfg.api_key:
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    def check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if name is None:
            raise ApiError(400, f"'model' is required (this server serves '{self.model_name}')", "model")
        if name != self.model_name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                           "model", code="model_not_found")

    def decoding(self, body: dict[str, Any]) -> tuple[Any, int]:
        c = self.cfg
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        max_tokens = _number({key: max_tokens}, key, c.max_new_tokens, 1, c.max_tokens_limit, integer=True)
        stop = body.get("stop")
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, f"'stop' must be a string or a list of at most 4 strings, got {_short(stop)}", "stop")
        n = _number(body, "n", 1, 1, 16, integer=True)
        dcfg = decoding_of(
            c,
            max_new_tokens=max_tokens,
            temperature=float(_number(body, "temperature", c.temperature, 0, 2)),
            top_p=float(_number(body, "top_p", c.top_p, 0, 1, lo_open=True)),
            top_k=int(_number(body, "top_k", c.top_k, 0, 10**6, integer=True)),
            repetition_penalty=float(_number(body, "repetition_penalty", c.repetition_penalty, 0, 10, lo_open=True)),
            seed=_number(body, "seed", c.seed, -(2**63), 2**63 - 1, integer=True),
            stop=stop,
        )
        return dcfg, n

    def count_prompt(self, prompt: str, max_tokens: int) -> int:
        """Prompt tokens, checked against the context; a prompt whose bytes alone prove it too long
        is refused without tokenizing it (a 1 MB prompt takes seconds to tokenize)."""
        if self.context and self.token_bytes:
            at_least = math.ceil(len(prompt.encode("utf-8")) / self.token_bytes)
            if at_least + max_tokens > self.context:
                self.check_length(at_least, max_tokens, at_least=True)
        prompt_tokens = self.engine.count_tokens(prompt)
        self.check_length(prompt_tokens, max_tokens)
        return prompt_tokens

    def check_length(self, prompt_tokens: int, max_tokens: int, at_least: bool = False) -> None:
        if self.context and prompt_tokens + max_tokens > self.context:
            raise ApiError(400, f"this model's context is {self.context} tokens; the prompt has {'at least ' if at_least else ''}"
                           f"{prompt_tokens} and "
                           f"max_tokens asks for {max_tokens}: shorten the messages or lower max_tokens",
                           "messages", code="context_length_exceeded")

    # -- generation -------------------------------------------------------------------------
    def check_queue(self) -> None:
        if self.slots.locked() and self.waiting >= self.cfg.max_queue:
            raise ApiError(429, f"server busy: {self.cfg.max_concurrency} requests running and {self.waiting} "
                           "waiting; retry later", kind="rate_limit_error", code="queue_full")

    async def admit(self) -> None:
        """Wait for a generation slot; refuse when the queue is full."""
        self.check_queue()
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1

    def start(self, prompt: str, dcfg: Any, n: int) -> tuple[list[asyncio.Queue], list[Any]]:
        """Submit `n` copies of the prompt; each queue receives ("delta", str) … ("done", Completion)."""
        loop = asyncio.get_running_loop()
        queues: list[asyncio.Queue] = []
        handles = []
        for _ in range(n):
            q: asyncio.Queue = asyncio.Queue()

            def put(item: tuple[str, Any], q: asyncio.Queue = q) -> None:
                loop.call_soon_threadsafe(q.put_nowait, item)

            handles.append(self.engine.submit(prompt, dcfg, on_delta=lambda d, put=put: put(("delta", d)),
                                              on_done=lambda c, put=put: put(("done", c))))
            queues.append(q)
        return queues, handles


def _sources(hits: list[Any]) -> list[dict[str, Any]]:
    return [{"source": h.source, "chunk": h.chunk, "score": round(h.score, 4)} for h in hits]


def _check_completion(c: Completion) -> None:
    if c.finish_reason == "error":
        raise ApiError(500, f"generation failed: {c.error}", kind="server_error")


def create_app(state: Server) -> Any:
    """The FastAPI app over a `Server` (tests may build one around any engine)."""
    app = FastAPI(title="lmlab serve", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        err = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=None)
        return JSONResponse(err.body(), status_code=exc.status_code)

    async def read(request: Request) -> bytes:
        """Checks that need no parsing (key, content type, size), on the event loop."""
        state.authorize(request.headers.get("authorization"))
        check_content_type(request.headers.get("content-type"))
        return await read_limited(request, state.cfg.max_request_bytes)

    def parse(raw: bytes) -> dict[str, Any]:
        body = parse_json(raw)
        state.check_model(body)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, f"'stream' must be true or false, got {stream!r}", "stream")
        return body

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": state.model_name, "batches": state.engine.batches_run,
                "largest_batch": state.engine.largest_batch}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        state.authorize(request.headers.get("authorization"))
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "lmlab"}]}

    def prepare(body: dict[str, Any], prompt: str) -> tuple[Any, int, int]:
        dcfg, n = state.decoding(body)
        return dcfg, n, state.count_prompt(prompt, dcfg.max_new_tokens)

    async def respond(body: dict[str, Any], prompt: str, prepared: tuple[Any, int, int], *, chat: bool,
                      extra: dict[str, Any]) -> Any:
        dcfg, n, prompt_tokens = prepared
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        if body.get("stream"):
            # admission happens inside the stream, so a client that leaves before it starts holds no slot
            state.check_queue()
            return StreamingResponse(_events(prompt, dcfg, n, rid, created, obj, chat, extra),
                                     media_type="text/event-stream")
        await state.admit()
        queues, handles = state.start(prompt, dcfg, n)
        try:
            results: list[Completion] = []
            for q in queues:
                while True:
                    kind, item = await q.get()
                    if kind == "done":
                        results.append(item)
                        break
        finally:
            for h in handles:
                h.cancel()
            state.slots.release()
        for c in results:
            _check_completion(c)
        choices = [
            {"index": i, "finish_reason": c.finish_reason, "logprobs": None,
             **({"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text})}
            for i, c in enumerate(results)
        ]
        completion_tokens = sum(c.completion_tokens for c in results)
        return {"id": rid, "object": obj, "created": created, "model": state.model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}, **extra}

    async def _events(prompt: str, dcfg: Any, n: int, rid: str, created: int, obj: str, chat: bool,
                      extra: dict[str, Any]) -> AsyncIterator[str]:
        kind_name = obj + (".chunk" if chat else "")

        def chunk(i: int, delta: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                d: dict[str, Any] = {"role": "assistant", "content": ""} if first else ({} if delta is None else {"content": delta})
                choice: dict[str, Any] = {"index": i, "delta": d, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": i, "text": delta or "", "finish_reason": finish, "logprobs": None}
            payload = {"id": rid, "object": kind_name, "created": created, "model": state.model_name,
                       "choices": [choice], **(extra if first else {})}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        await state.admit()
        queues, handles = state.start(prompt, dcfg, n)
        pending: dict[asyncio.Future, int] = {}
        try:
            if chat:
                for i in range(n):
                    yield chunk(i, None, None, first=True)
            # merge the choices' event queues in arrival order
            pending = {asyncio.ensure_future(q.get()): i for i, q in enumerate(queues)}
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    kind, item = fut.result()
                    if kind == "delta":
                        yield chunk(i, item, None)
                        pending[asyncio.ensure_future(queues[i].get())] = i
                    elif item.finish_reason == "error":
                        err = ApiError(500, f"generation failed: {item.error}", kind="server_error")
                        yield f"data: {json.dumps(err.body())}\n\n"
                    else:
                        yield chunk(i, None, item.finish_reason)
            yield "data: [DONE]\n\n"
        finally:
            for fut in pending:
                fut.cancel()
            for h in handles:
                h.cancel()  # client went away: free its batch rows
            state.slots.release()

    def chat_request(raw: bytes) -> tuple[dict[str, Any], str, tuple[Any, int, int], dict[str, Any]]:
        """Everything between the bytes and generation (runs in a worker thread)."""
        body = parse(raw)
        messages = parse_messages(body.get("messages"))
        if state.system and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": state.system}, *messages]
        extra: dict[str, Any] = {}
        if state.index is not None:
            from lmlab.chat.rag import augment_messages

            question = next(m["content"] for m in reversed(messages) if m["role"] == "user") if any(
                m["role"] == "user" for m in messages) else ""
            hits = state.index.search(question, k=state.cfg.rag_top_k, threshold=state.cfg.rag_threshold)
            messages = augment_messages(messages, hits)
            extra["sources"] = _sources(hits)
        prompt = render_prompt(state.engine.tokenizer, messages)
        return body, prompt, prepare(body, prompt), extra

    def completion_request(raw: bytes) -> tuple[dict[str, Any], str, tuple[Any, int, int], dict[str, Any]]:
        body = parse(raw)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, f"'prompt' must be a non-empty string, got {_short(prompt)}", "prompt")
        return body, prompt, prepare(body, prompt), {}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body, prompt, prepared, extra = await asyncio.to_thread(chat_request, await read(request))
        return await respond(body, prompt, prepared, chat=True, extra=extra)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body, prompt, prepared, extra = await asyncio.to_thread(completion_request, await read(request))
        return await respond(body, prompt, prepared, chat=False, extra=extra)

    return app


def serve(cfg: ServeConfig) -> dict[str, Any]:
    """Load the model, start the batching engine and run uvicorn until Ctrl-C."""
    import uvicorn

    system, _persona = system_prompt(cfg)
    index = load_index(cfg)
    model, tokenizer = load_chat_model(cfg)
    name = cfg.name or Path(str(cfg.model).rstrip("/")).name
    if name == "final":
        name = Path(str(cfg.model).rstrip("/")).parent.name
    engine = BatchEngine(model, tokenizer, max_batch_size=cfg.max_batch_size, batch_wait_ms=cfg.batch_wait_ms).start()
    app = create_app(Server(engine, cfg, model_name=name, system=system, index=index))

    class _Uvicorn(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # now accepting connections: tell the caller where
                port = self.servers[0].sockets[0].getsockname()[1]
                print(f"lmlab serve: listening on http://{cfg.host}:{port}", flush=True)

    server = _Uvicorn(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False))
    try:
        server.run()
    finally:
        engine.stop()
    return {"model": name, "batches": engine.batches_run, "largest_batch": engine.largest_batch}
