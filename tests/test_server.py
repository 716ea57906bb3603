"""`lmlab serve` as a real subprocess, answered through the official `openai` client.

Greedy replies are compared with plain one-prompt-at-a-time HF `generate` (the oracle), so a
batching, padding or streaming bug that changes a single token fails here.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import httpx
import pytest

from chat_model import GreedyOracle, start_server
from lmlab.chat.engine import BatchEngine
from lmlab.generate import DecodingConfig

KEY = "sk-test"


@pytest.fixture(scope="module")
def server(model_dir):
    proc, url = start_server(["serve", str(model_dir), "port=0", f"api_key={KEY}", "name=tiny",
                              "max_batch_size=8", "batch_wait_ms=50", "max_tokens_limit=64", "threads=1"])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_listening_line_and_health(server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server) and not server.endswith(":0")
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_models_and_chat_completion_equal_plain_generate(client, oracle):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat ran to the park"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    expected = oracle.reply(oracle.chat_prompt(messages), 12)
    assert expected.strip()  # the check is not vacuous: the model says something
    assert r.choices[0].message.content == expected and r.choices[0].message.role == "assistant"
    prompt_tokens = len(oracle.tok(oracle.chat_prompt(messages), add_special_tokens=False)["input_ids"])
    assert r.usage.prompt_tokens == prompt_tokens
    assert r.usage.total_tokens == prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == ("length" if r.usage.completion_tokens == 12 else "stop")


def test_streaming_chunks_concatenate_to_the_plain_reply(client, server, oracle):
    messages = [{"role": "user", "content": "tell me about the dog"}]
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == oracle.reply(oracle.chat_prompt(messages), 12)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    raw = httpx.post(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "tiny", "messages": messages, "max_tokens": 4, "stream": True}, timeout=60)
    events = [e for e in raw.text.split("\n\n") if e]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_text_completions_plain_and_streaming(client, oracle):
    r = client.completions.create(model="tiny", prompt="the dog found", max_tokens=8, temperature=0)
    expected = oracle.reply("the dog found", 8)
    assert r.choices[0].text == expected and r.object == "text_completion"
    streamed = client.completions.create(model="tiny", prompt="the dog found", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_stop_string_cuts_the_reply(client, oracle):
    full = oracle.reply("the cat", 16)
    stop = full[3:5]
    assert len(stop) == 2 and full.find(stop) >= 1
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.find(stop)] and r.choices[0].finish_reason == "stop"


BAD = {
    "empty messages": ({"messages": []}, 400, "messages"),
    "bad role": ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    "max_tokens 0": ({"max_tokens": 0}, 400, "max_tokens"),
    "max_tokens over limit": ({"max_tokens": 65}, 400, "max_tokens"),
    "temperature 5": ({"temperature": 5}, 400, "temperature"),
    "temperature text": ({"temperature": "hot"}, 400, "temperature"),
    "top_p 0": ({"top_p": 0}, 400, "top_p"),
    "unknown model": ({"model": "gpt-4"}, 404, "model"),
    "no model": ({"model": None}, 400, "model"),
    "content not text": ({"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content"),
    "stream not bool": ({"stream": "yes"}, 400, "stream"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_error_objects(server, case):
    change, status, param = BAD[case]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = httpx.post(server + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_api_key_required_and_checked(server, client):
    import openai

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert httpx.get(server + "/v1/nothing").json()["error"]["message"].startswith("GET /v1/nothing")


def test_32_concurrent_requests_all_answered_correctly_in_batches(client, server, oracle):
    before = httpx.get(server + "/health").json()["batches"]
    questions = [f"question {i}: " + "the cat ran " * (i % 4) for i in range(32)]
    answers: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": questions[i]}],
                                               max_tokens=10, temperature=0)
            answers[i] = r.choices[0].message.content
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(answers) == 32
    for i, q in enumerate(questions):
        assert answers[i] == oracle.reply(oracle.chat_prompt([{"role": "user", "content": q}]), 10), i
    health = httpx.get(server + "/health").json()
    assert health["largest_batch"] > 1 and health["batches"] - before < 32  # really batched


def test_engine_rows_keep_their_own_budget_and_stop(oracle):
    engine = BatchEngine(oracle.model, oracle.tok, max_batch_size=4, batch_wait_ms=200)
    try:
        prompts = ["the cat", "a dog ran to", "mia"]
        full = [oracle.reply(p, 12) for p in prompts]
        cfgs = [DecodingConfig(max_new_tokens=12, temperature=0), DecodingConfig(max_new_tokens=3, temperature=0),
                DecodingConfig(max_new_tokens=12, temperature=0, stop=[full[2][4:6]])]
        deltas: dict[int, list[str]] = {0: [], 1: [], 2: []}
        handles = [engine.submit(p, c, on_delta=deltas[i].append) for i, (p, c) in enumerate(zip(prompts, cfgs, strict=True))]
        results = [h.wait(120) for h in handles]
        assert engine.batches_run == 1  # one generate call served all three
        assert results[0].text == full[0]
        assert results[1].text == oracle.reply(prompts[1], 3) and results[1].completion_tokens == 3
        assert results[1].finish_reason == "length"
        assert results[2].text == full[2][: full[2].find(full[2][4:6])] and results[2].finish_reason == "stop"
        assert ["".join(deltas[i]) for i in range(3)] == [r.text for r in results]
    finally:
        engine.stop()


def test_persona_and_rag_reach_the_prompt(model_dir, tmp_path):
    """The served prompt carries the persona's system prompt and the retrieved reference block."""
    from lmlab.chat.options import ChatKeys
    from lmlab.chat.rag import IndexConfig, build_index
    from lmlab.chat.server import ServeConfig, Server, create_app

    (tmp_path / "vault.md").write_text("The Zorblax vault opens only with the password plumtree.")
    build_index(IndexConfig(docs=[str(tmp_path / "vault.md")], out=str(tmp_path / "idx"), embedder="tfidf"))
    seen: list[str] = []

    class Recorder:
        """Stands in for the engine: records the prompt, answers 'ok'."""

        model = type("M", (), {"config": type("C", (), {"max_position_embeddings": 4096})()})()
        tokenizer = GreedyOracle(model_dir).tok
        batches_run = largest_batch = 0

        def count_tokens(self, text: str) -> int:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        def submit(self, prompt, cfg, *, on_delta=None, on_done=None):
            from lmlab.chat.engine import Completion

            seen.append(prompt)
            on_delta("ok")
            on_done(Completion("ok", 1, 1, "stop"))
            return type("H", (), {"cancel": lambda self: None})()

    from fastapi.testclient import TestClient

    from lmlab.chat.options import load_index, system_prompt

    cfg = ServeConfig(model=str(model_dir), persona="pirate", rag=str(tmp_path / "idx"))
    system, _ = system_prompt(cfg)
    app = create_app(Server(Recorder(), cfg, model_name="tiny", system=system, index=load_index(cfg)))
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": [
            {"role": "user", "content": "What is the password of the Zorblax vault?"}]})
        assert r.status_code == 200, r.text
        assert [s["source"].rsplit("/", 1)[-1] for s in r.json()["sources"]] == ["vault.md"]
        assert "Captain Salt" in seen[0] and "Reference documents:" in seen[0] and "plumtree" in seen[0]
        r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": [
            {"role": "system", "content": "You are terse."}, {"role": "user", "content": "How do I bake bread?"}]})
        assert r.json()["sources"] == [] and "Captain Salt" not in seen[1] and "Reference documents" not in seen[1]
    assert isinstance(cfg, ChatKeys) and json.loads(r.text)["choices"][0]["message"]["content"] == "ok"


def test_n_choices_and_usage(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       temperature=1.0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    lengths = [c.finish_reason == "length" for c in r.choices]
    assert sum(lengths) * 5 <= r.usage.completion_tokens <= 15  # each "length" choice used all 5 tokens


def test_full_queue_answers_429_and_slots_are_released(model_dir):
    """max_concurrency=1, max_queue=0: a second request while one runs is refused, then accepted."""
    from fastapi.testclient import TestClient

    from lmlab.chat.engine import Completion
    from lmlab.chat.server import ServeConfig, Server, create_app

    release = threading.Event()
    started = threading.Event()

    class Slow:
        model = type("M", (), {"config": type("C", (), {"max_position_embeddings": 4096})()})()
        tokenizer = GreedyOracle(model_dir).tok
        batches_run = largest_batch = 0

        def count_tokens(self, text: str) -> int:
            return 1

        def submit(self, prompt, cfg, *, on_delta=None, on_done=None):
            def work():
                started.set()
                release.wait(30)
                on_done(Completion("done", 1, 1, "stop"))

            threading.Thread(target=work, daemon=True).start()
            return type("H", (), {"cancel": lambda self: None})()

    cfg = ServeConfig(model=str(model_dir), max_concurrency=1, max_queue=0)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(create_app(Server(Slow(), cfg, model_name="tiny"))) as http:
        first: list = []
        t = threading.Thread(target=lambda: first.append(http.post("/v1/chat/completions", json=body)))
        t.start()
        assert started.wait(30)
        busy = http.post("/v1/chat/completions", json=body)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "queue_full"
        release.set()
        t.join(30)
        assert first[0].status_code == 200 and first[0].json()["choices"][0]["message"]["content"] == "done"
        again = http.post("/v1/chat/completions", json=body)  # the slot was given back
        assert again.status_code == 200


# -- hardening: oversize, slow and malformed bodies (issue 13) -----------------------------------------
@pytest.fixture(scope="module")
def guarded(model_dir):
    """A server of its own (its pid is needed for RSS), 1 MB body limit, no API key."""
    proc, url = start_server(["serve", str(model_dir), "port=0", "name=tiny", "max_request_bytes=1000000",
                              "max_tokens_limit=64", "batch_wait_ms=5", "threads=1"])
    yield proc, url
    proc.terminate()
    proc.wait(timeout=30)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


HARD = {  # body (dict or raw bytes), content type, status, param or message part
    "temperature NaN": ({"temperature": float("nan")}, None, 400, "temperature"),
    "top_p inf": ({"top_p": float("inf")}, None, 400, "top_p"),
    "repetition_penalty -inf": ({"repetition_penalty": float("-inf")}, None, 400, "repetition_penalty"),
    "stop number": ({"stop": 3}, None, 400, "stop"),
    "stop list of numbers": ({"stop": [1, 2]}, None, 400, "stop"),
    "deep nesting": (b'{"model": "tiny", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", None, 400,
                     "nested too deeply"),
    "xml content type": (b"<messages/>", "application/xml", 415, "Content-Type"),
    "multipart": (b"--x\r\n\r\nhi\r\n--x--", "multipart/form-data; boundary=x", 415, "Content-Type"),
    "prompt over context": ({"messages": [{"role": "user", "content": "the cat ran " * 60_000}]}, None, 400,
                            "context"),
}


@pytest.mark.parametrize("case", list(HARD))
def test_malformed_bodies_are_4xx_naming_the_field(guarded, case):
    change, ctype, status, where = HARD[case]
    if isinstance(change, bytes):
        content = change
    else:
        content = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                              **change}).encode()
    r = httpx.post(guarded[1] + "/v1/chat/completions", content=content,
                   headers={"content-type": ctype or "application/json"}, timeout=60)
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == where or where in err["message"]
    assert len(r.content) < 2000  # the answer does not echo the body back


def test_20mb_body_in_flight_does_not_stall_health_or_other_clients(guarded):
    """A 20 MB body sent slowly gets 413; meanwhile /health answers in < 100 ms and every
    well-formed request is answered; the server's memory returns to its baseline."""
    import time

    proc, url = guarded
    ok = {"model": "tiny", "messages": [{"role": "user", "content": "the dog"}], "max_tokens": 4, "temperature": 0}
    for _ in range(3):  # warm-up: first requests allocate the batcher's buffers
        assert httpx.post(url + "/v1/chat/completions", json=ok, timeout=60).status_code == 200
    base = _rss_mb(proc.pid)
    answers: dict[str, list] = {"big": [], "ok": [], "health": []}
    sending = threading.Event()

    def slow_body():
        sending.set()
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(40):  # 20 MB in 512 KB chunks over ~1 s
            yield b"a" * (512 * 1024)
            time.sleep(0.025)
        yield b'"}]}'

    def big(declared: bool) -> None:
        headers = {"content-type": "application/json"}
        body = b"".join(slow_body()) if declared else slow_body()
        r = httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=120)
        answers["big"].append((r.status_code, r.json()["error"]["code"]))

    def well_formed() -> None:
        r = httpx.post(url + "/v1/chat/completions", json=ok, timeout=120)
        answers["ok"].append(r.status_code)

    threads = [threading.Thread(target=big, args=(d,)) for d in (False, True, False)]
    threads += [threading.Thread(target=well_formed) for _ in range(8)]
    with httpx.Client() as c:
        c.get(url + "/health")  # the connection is open before timing starts
        for t in threads:
            t.start()
        sending.wait(10)
        while any(t.is_alive() for t in threads[:3]):
            t0 = time.perf_counter()
            assert c.get(url + "/health").status_code == 200
            answers["health"].append(time.perf_counter() - t0)
            time.sleep(0.01)
    for t in threads:
        t.join(120)
    assert answers["big"] == [(413, "request_too_large")] * 3
    assert answers["ok"] == [200] * 8
    # The old server answered /health after ~55 s here (the body was tokenized on the event loop).
    # On a quiet machine every check is < 100 ms; on a shared, oversubscribed CI box single checks
    # can wait for a CPU, so the median is held to 100 ms and the worst to 1 s.
    health = sorted(answers["health"])
    assert len(health) >= 10 and health[len(health) // 2] < 0.1 and health[-1] < 1.0, health[-3:]
    junk = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 900_000}]})
    for _ in range(10):  # bodies under the limit but refused: parsed, then dropped
        assert httpx.post(url + "/v1/chat/completions", content=junk, timeout=60).status_code == 400
    time.sleep(0.5)
    after = _rss_mb(proc.pid)
    figures = os.environ.get("LMLAB_RELIABILITY_FIGURES")  # tests/reliability/figures.py collects these
    if figures:
        Path(figures, "big_body.json").write_text(json.dumps({
            "health_max_ms": 1000 * health[-1], "health_median_ms": 1000 * health[len(health) // 2],
            "health_checks": len(health),
            "well_formed_answered": answers["ok"].count(200), "well_formed_sent": len(answers["ok"]),
            "rss_before_mb": base, "rss_after_mb": after}))
    assert after <= base * 1.10, (base, after)


# -- the real server with a persona, an index and one generation slot ----------------------------------
# (the in-process tests above swap the engine for a recorder; these run `lmlab serve` itself)

WAIT_MS = 2000  # the batcher waits this long for company: a window in which the single slot is held


@pytest.fixture(scope="module")
def persona_rag_server(model_dir, tmp_path_factory):
    from lmlab.chat.rag import IndexConfig, build_index

    docs = tmp_path_factory.mktemp("serve_docs")
    (docs / "vault.md").write_text("The Zorblax vault opens only with the password plumtree.\n")
    (docs / "park.txt").write_text("Tom and Mia played with a red ball in the park near the river.\n")
    build_index(IndexConfig(docs=[str(docs)], out=str(docs / "idx"), embedder="tfidf"))
    proc, url = start_server(["serve", str(model_dir), "port=0", "name=tiny", "persona=pirate", f"rag={docs / 'idx'}",
                              "max_concurrency=1", "max_queue=0", f"batch_wait_ms={WAIT_MS}", "threads=1"])
    yield url, docs / "idx"
    proc.terminate()
    proc.wait(timeout=30)


def _expected(oracle, model_dir, index_dir, question: str, max_tokens: int) -> tuple[str, str, list[str]]:
    """(prompt, reply, sources) the served answer must have: the persona's system prompt, the
    retrieved reference block, then plain one-prompt HF greedy generate."""
    from lmlab.chat.options import system_prompt
    from lmlab.chat.rag import Index, augment_messages
    from lmlab.chat.server import ServeConfig

    cfg = ServeConfig(model=str(model_dir), persona="pirate", rag=str(index_dir))
    system, _ = system_prompt(cfg)
    hits = Index.load(index_dir).search(question, k=cfg.rag_top_k, threshold=cfg.rag_threshold)
    prompt = oracle.chat_prompt(augment_messages([{"role": "system", "content": system},
                                                  {"role": "user", "content": question}], hits))
    return prompt, oracle.reply(prompt, max_tokens), [h.source for h in hits]


@pytest.mark.slow  # its own server process (~20 s to start on 2 cores)
def test_real_server_persona_and_rag_reach_the_model(persona_rag_server, model_dir, oracle):
    from openai import OpenAI

    url, index_dir = persona_rag_server
    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    question = "What is the password of the Zorblax vault?"
    prompt, reply, sources = _expected(oracle, model_dir, index_dir, question, 10)
    assert "Captain Salt" in prompt and "plumtree" in prompt and sources[0].endswith("vault.md")  # the oracle's prompt
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}], max_tokens=10,
                                       temperature=0)
    assert r.choices[0].message.content == reply
    assert r.usage.prompt_tokens == len(oracle.tok(prompt, add_special_tokens=False)["input_ids"])
    assert [s["source"] for s in r.model_extra["sources"]] == sources
    # nothing retrieved: the persona alone, no reference block, no sources
    question = "How do I bake bread?"
    prompt, reply, sources = _expected(oracle, model_dir, index_dir, question, 10)
    assert sources == [] and "Reference documents" not in prompt
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}], max_tokens=10,
                                       temperature=0)
    assert r.choices[0].message.content == reply and r.model_extra["sources"] == []
    assert r.usage.prompt_tokens == len(oracle.tok(prompt, add_special_tokens=False)["input_ids"])


@pytest.mark.slow  # its own server process (~20 s to start on 2 cores)
def test_real_server_answers_429_while_its_one_slot_is_busy(persona_rag_server):
    """max_concurrency=1, max_queue=0: while the first request holds the slot (the batcher waits
    WAIT_MS for company), a second is refused with 429 queue_full; once it is done, the slot is free."""
    import time

    import openai
    from openai import OpenAI

    url, _ = persona_rag_server
    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    first: list = []
    worker = threading.Thread(target=lambda: first.append(client.chat.completions.create(**body)))
    started = time.monotonic()
    worker.start()
    time.sleep(WAIT_MS / 4000)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**body)
    assert time.monotonic() - started < WAIT_MS / 1000  # refused inside the busy window, not after it
    assert refused.value.status_code == 429 and refused.value.body["code"] == "queue_full"
    worker.join(timeout=120)
    assert first and first[0].choices[0].finish_reason in ("stop", "length")
    again = client.chat.completions.create(**body)  # the slot was given back
    assert again.choices[0].message.content == first[0].choices[0].message.content


@pytest.mark.slow  # its own server process (~20 s to start on 2 cores)
def test_real_server_refuses_a_prompt_over_the_context(persona_rag_server):
    import openai
    from openai import OpenAI

    url, _ = persona_rag_server
    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as err:  # the tiny model's context is 512 tokens
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=600)
    assert err.value.status_code == 400 and err.value.body["code"] == "context_length_exceeded"
    assert err.value.body["param"] == "messages"
    assert re.search(r"context is 512 tokens; the prompt has (at least )?\d+ and max_tokens asks for 600",
                     err.value.body["message"])
    with pytest.raises(openai.BadRequestError) as err:  # a long prompt with a small max_tokens
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "the cat ran " * 200}],
                                       max_tokens=8)
    assert err.value.body["code"] == "context_length_exceeded" and "max_tokens asks for 8" in err.value.body["message"]


def test_sampled_choices_differ(client):
    """n=3 at a high temperature from a 300-token vocabulary: three identical replies would mean the
    rows were not sampled independently (or not sampled at all)."""
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                       temperature=1.5, n=3)
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) == 3, texts
