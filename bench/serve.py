"""Serving throughput and time to first token: `lmlab serve` (dynamic batching) vs plain sequential generate.

    .venv/bin/python bench/serve.py [clients=1,8,32 requests=64 max_tokens=32 max_batch_size=32 hidden=256 layers=4]

One small Qwen2 (~5 M parameters, random weights, a BPE tokenizer trained on storyworld) is built
and saved once. The reference is the same model answering the same chat prompts one after another
in this process through `lmlab.generate.generate` (greedy), which is what a naive server does.
Both arms use `threads` torch CPU threads (default 1: on a shared, oversubscribed CPU, OpenMP
threads that spin-wait for a descheduled sibling make every matmul ~10x slower).
Then `lmlab serve` runs as a subprocess and 1, 8 and 32 concurrent clients stream
`/v1/chat/completions` (greedy, `max_tokens` each); a client sends its next request as soon as
the last one finishes. Per concurrency level: requests/s, completion tokens/s, time to first
token (first content chunk) p50/p95 and mean latency. Greedy decoding means every arm does the
same work, and the served replies are checked to equal the sequential ones (`outputs_match`).

Headline: `requests_per_s_vs_sequential_32` = requests/s with 32 clients / sequential requests/s.
The clients share the machine with the server; on a 2-core CPU that costs the server a little.
Prints one JSON object last.

`mode=load` is the reliability load test instead (docs/reliability.md):

    .venv/bin/python bench/serve.py mode=load [load_clients=64 per_client=10 hidden=64 layers=2]

`load_clients` clients each send `per_client` requests back to back, alternating streaming and
non-streaming chat completions (sampled, so replies differ in length); every `disconnect_every`-th
streaming request hangs up after its first chunk. Reported: well-formed requests answered / sent
(a hang-up counts as answered once its first chunk came), p50/p99 latency of the completed ones,
the server's RSS after warm-up and after the load, and whether it still answers afterwards (the
hung-up requests' slots were freed). Loopback only; bounded by count and by `load_timeout_s`.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, options, table

DEFAULTS = {"clients": "1,8,32", "requests": 64, "max_tokens": 32, "max_batch_size": 32, "batch_wait_ms": 5.0,
            "hidden": 256, "layers": 4, "vocab_size": 4096, "device": "auto", "threads": 1, "seed": 0,
            "mode": "throughput", "load_clients": 64, "per_client": 10, "disconnect_every": 5, "load_timeout_s": 600}
TOPICS = ["a cat", "a lost ball", "a rainy day", "two friends", "a trip to the sea", "a brave dog", "a red kite",
          "a quarrel", "a birthday", "the forest", "a small boat", "a big tree", "a new school", "the moon"]


def build_model(folder: Path, opts: dict[str, Any]) -> int:
    """A random Qwen2 + storyworld BPE tokenizer saved in `folder`; returns its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lmlab.data.storyworld import make_dataset
    from lmlab.tokenizers import train_tokenizer

    texts = [r["text"] for r in make_dataset("pretrain", 2000, seed=opts["seed"])]
    tok = train_tokenizer(texts, vocab_size=opts["vocab_size"], out=folder)
    torch.manual_seed(opts["seed"])
    h = opts["hidden"]
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=h, intermediate_size=3 * h, num_hidden_layers=opts["layers"],
                      num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128),
                      max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True, initializer_range=0.2)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def questions(n: int) -> list[str]:
    return [f"Tell me a short story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]


def sequential(folder: Path, qs: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    """The reference: one request at a time through lmlab.generate, in this process."""
    import torch

    from lmlab.data.chat import render_prompt
    from lmlab.generate import DecodingConfig, generate
    from lmlab.models import load_model

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    model, tok = load_model(str(folder), device=opts["device"])
    cfg = DecodingConfig(max_new_tokens=opts["max_tokens"], temperature=0)
    prompts = [render_prompt(tok, q) for q in qs]
    generate(model, tok, prompts[:2], cfg)  # warm-up
    replies, latencies = [], []
    start = time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        replies.append(generate(model, tok, [p], cfg)[0][0])
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    tokens = sum(len(tok(r, add_special_tokens=False)["input_ids"]) for r in replies)
    return {"replies": replies, "requests_per_s": len(qs) / seconds, "tokens_per_s": tokens / seconds,
            "latency_mean_s": statistics.mean(latencies), "ttft_p50_s": statistics.median(latencies)}


def start_server(folder: Path, opts: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LMLAB_QUIET": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [sys.executable, "-m", "lmlab", "serve", str(folder), "port=0", "name=bench", "temperature=0",
            f"max_batch_size={opts['max_batch_size']}", f"batch_wait_ms={opts['batch_wait_ms']}",
            f"device={opts['device']}", "max_concurrency=256"] + ([f"threads={opts['threads']}"] if opts["threads"] else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    m = re.fullmatch(r"lmlab serve: listening on (http://\S+)\n", line)
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, m.group(1)


async def load_test(url: str, qs: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    """`clients` concurrent streaming clients working through `qs`; per-request TTFT and latency."""
    import httpx

    todo = list(enumerate(qs))
    replies: dict[int, str] = {}
    ttft: list[float] = []
    latency: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while todo:
            i, q = todo.pop(0)
            body = {"model": "bench", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True}
            t0 = time.perf_counter()
            first = None
            parts = []
            async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"][0].get("delta", {}).get("content")
                    if delta:
                        first = first or time.perf_counter()
                        parts.append(delta)
                        tokens += 1  # ~ one chunk per token (a split UTF-8 character waits a token)
            end = time.perf_counter()
            ttft.append((first or end) - t0)
            latency.append(end - t0)
            replies[i] = "".join(parts)

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    ttft.sort()
    return {"replies": [replies[i] for i in range(len(qs))], "requests_per_s": len(qs) / seconds,
            "chunks_per_s": tokens / seconds, "ttft_p50_s": statistics.median(ttft),
            "ttft_p95_s": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], "latency_mean_s": statistics.mean(latency)}


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def mixed_load(url: str, clients: int, per_client: int, max_tokens: int, disconnect_every: int,
                     timeout_s: float) -> dict[str, Any]:
    """`clients` × `per_client` chat requests, streaming and not, some hung up mid-stream."""
    import httpx

    latency: list[float] = []
    counts = {"sent": 0, "answered": 0, "disconnected": 0, "failed": 0}
    errors: list[str] = []

    async def one(http: httpx.AsyncClient, c: int, k: int) -> None:
        stream = (c + k) % 2 == 0
        hang_up = stream and (c * per_client + k) % disconnect_every == 0
        body = {"model": "bench", "messages": [{"role": "user", "content": questions(c + k + 1)[-1]}],
                "max_tokens": max_tokens, "temperature": 1.0, "seed": c * 1000 + k, "stream": stream}
        counts["sent"] += 1
        t0 = time.perf_counter()
        try:
            if not stream:
                r = await http.post(url + "/v1/chat/completions", json=body)
                ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
            else:
                ok = False
                async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                    if r.status_code == 200:
                        async for line in r.aiter_lines():
                            if line.startswith("data: ") and hang_up:
                                counts["disconnected"] += 1
                                ok = True
                                break  # leaving the block closes the connection mid-stream
                            if line == "data: [DONE]":
                                ok = True
            if ok and not hang_up:
                latency.append(time.perf_counter() - t0)
            counts["answered" if ok else "failed"] += 1
        except httpx.HTTPError as exc:
            counts["failed"] += 1
            errors.append(f"{type(exc).__name__}: {exc}")

    async def client(http: httpx.AsyncClient, c: int) -> None:
        for k in range(per_client):
            await one(http, c, k)

    # keep-alive expiry under uvicorn's 5 s: a pooled connection the server is closing is never reused
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http, c) for c in range(clients))), timeout_s)
        seconds = time.perf_counter() - start
    return {**counts, "seconds": seconds, "latency_p50_s": percentile(latency, 0.5),
            "latency_p99_s": percentile(latency, 0.99), "errors": errors[:5]}


def run_load(opts: dict[str, Any]) -> dict[str, Any]:
    """The reliability load test against a real `lmlab serve` subprocess on 127.0.0.1."""
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        params = build_model(folder, opts)
        proc, url = start_server(folder, opts)
        try:
            asyncio.run(mixed_load(url, 4, 2, opts["max_tokens"], opts["disconnect_every"], 120))  # warm-up
            rss_before = rss_mb(proc.pid)
            res = asyncio.run(mixed_load(url, opts["load_clients"], opts["per_client"], opts["max_tokens"],
                                         opts["disconnect_every"], opts["load_timeout_s"]))
            time.sleep(1.0)
            rss_after = rss_mb(proc.pid)
            after = httpx.post(url + "/v1/chat/completions", timeout=120, json={
                "model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
            health = httpx.get(url + "/health", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"answered {res['answered']}/{res['sent']} ({res['disconnected']} hung up mid-stream), "
          f"p50 {res['latency_p50_s']:.2f} s, p99 {res['latency_p99_s']:.2f} s, "
          f"RSS {rss_before:.0f} MB -> {rss_after:.0f} MB", file=sys.stderr)
    for e in res["errors"]:
        print("  error:", e, file=sys.stderr)
    return {"mode": "load", "params": params, "clients": opts["load_clients"], "per_client": opts["per_client"],
            "max_tokens": opts["max_tokens"], "sent": res["sent"], "answered": res["answered"],
            "disconnected": res["disconnected"], "failed": res["failed"], "seconds": round(res["seconds"], 2),
            "latency_p50_s": round(res["latency_p50_s"], 3), "latency_p99_s": round(res["latency_p99_s"], 3),
            "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
            "rss_after_vs_before": round(rss_after / rss_before, 3), "largest_batch": health["largest_batch"],
            "answers_after_load": after.status_code == 200}


def main() -> None:
    opts = options(DEFAULTS)
    if opts["mode"] == "load":
        emit(run_load(opts))
        return
    levels = [int(c) for c in str(opts["clients"]).split(",")]
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        params = build_model(folder, opts)
        qs = questions(opts["requests"])
        ref = sequential(folder, qs, opts)
        proc, url = start_server(folder, opts)
        try:
            asyncio.run(load_test(url, qs[:4], 4, opts["max_tokens"]))  # warm-up
            rows = [{"arm": "sequential generate", "clients": 1, **{k: v for k, v in ref.items() if k != "replies"}}]
            served: dict[int, dict[str, Any]] = {}
            for c in levels:
                res = asyncio.run(load_test(url, qs, c, opts["max_tokens"]))
                served[c] = res
                rows.append({"arm": "lmlab serve", "clients": c, **{k: v for k, v in res.items() if k != "replies"}})
            import httpx

            health = httpx.get(url + "/health").json()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(table(rows, ["arm", "clients", "requests_per_s", "ttft_p50_s", "ttft_p95_s", "latency_mean_s"]), file=sys.stderr)
    result: dict[str, Any] = {
        "device": "cuda" if torch.cuda.is_available() and opts["device"] != "cpu" else "cpu",
        "params": params, "threads": opts["threads"], "requests": opts["requests"], "max_tokens": opts["max_tokens"],
        "max_batch_size": opts["max_batch_size"], "largest_batch": health["largest_batch"],
        "sequential_requests_per_s": round(ref["requests_per_s"], 3),
        "sequential_latency_mean_s": round(ref["latency_mean_s"], 4),
        "outputs_match": all(served[c]["replies"] == ref["replies"] for c in levels),
    }
    for c in levels:
        r = served[c]
        result[f"requests_per_s_{c}"] = round(r["requests_per_s"], 3)
        result[f"ttft_p50_s_{c}"] = round(r["ttft_p50_s"], 4)
        result[f"ttft_p95_s_{c}"] = round(r["ttft_p95_s"], 4)
        result[f"latency_mean_s_{c}"] = round(r["latency_mean_s"], 4)
        result[f"requests_per_s_vs_sequential_{c}"] = round(r["requests_per_s"] / ref["requests_per_s"], 3)
    emit(result)


if __name__ == "__main__":
    main()
