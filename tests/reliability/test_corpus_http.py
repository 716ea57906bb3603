"""Bad-input corpus, HTTP bodies: every bad request to `lmlab serve` is a 4xx in OpenAI's error shape
naming the field, never a 500 or a traceback, and the server keeps answering good requests."""
from __future__ import annotations

import json

import httpx
import pytest

from chat_model import start_server

KEY = "sk-corpus"
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def url(model_dir):
    proc, base = start_server(["serve", str(model_dir), "port=0", "name=tiny", f"api_key={KEY}",
                               "max_tokens_limit=64", "max_request_bytes=200000", "batch_wait_ms=5", "threads=1"])
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def msg(content="hi", role="user"):
    return [{"role": role, "content": content}]


# name: (path, body change or raw bytes, headers, status, param or words of the message)
CASES: dict[str, tuple[str, object, dict, int, str]] = {
    "role robot": ("chat", {"messages": msg(role="robot")}, {}, 400, "messages[0].role"),
    "role missing": ("chat", {"messages": [{"content": "hi"}]}, {}, 400, "messages[0].role"),
    "role a number": ("chat", {"messages": msg(role=3)}, {}, 400, "messages[0].role"),
    "last message from assistant": ("chat", {"messages": msg(role="assistant")}, {}, 400, "messages"),
    "message a string": ("chat", {"messages": ["hi"]}, {}, 400, "messages[0]"),
    "messages a string": ("chat", {"messages": "hi"}, {}, 400, "messages"),
    "messages empty": ("chat", {"messages": []}, {}, 400, "messages"),
    "messages missing": ("chat", {"messages": None}, {}, 400, "messages"),
    "content a number": ("chat", {"messages": msg(3)}, {}, 400, "messages[0].content"),
    "content an object": ("chat", {"messages": msg({"text": "hi"})}, {}, 400, "messages[0].content"),
    "content null": ("chat", {"messages": msg(None)}, {}, 400, "messages[0].content"),
    "content image part": ("chat", {"messages": msg([{"type": "image_url", "image_url": {"url": "x"}}])}, {}, 400,
                           "messages[0].content"),
    "temperature NaN": ("chat", {"temperature": NAN}, {}, 400, "temperature"),
    "temperature inf": ("chat", {"temperature": INF}, {}, 400, "temperature"),
    "top_p NaN": ("chat", {"top_p": NAN}, {}, 400, "top_p"),
    "repetition_penalty inf": ("chat", {"repetition_penalty": INF}, {}, 400, "repetition_penalty"),
    "max_tokens inf": ("chat", {"max_tokens": INF}, {}, 400, "max_tokens"),
    "seed NaN": ("chat", {"seed": NAN}, {}, 400, "seed"),
    "temperature -1": ("chat", {"temperature": -1}, {}, 400, "temperature"),
    "temperature 2.5": ("chat", {"temperature": 2.5}, {}, 400, "temperature"),
    "temperature text": ("chat", {"temperature": "hot"}, {}, 400, "temperature"),
    "temperature true": ("chat", {"temperature": True}, {}, 400, "temperature"),
    "top_p 0": ("chat", {"top_p": 0}, {}, 400, "top_p"),
    "top_p 1.5": ("chat", {"top_p": 1.5}, {}, 400, "top_p"),
    "top_k -1": ("chat", {"top_k": -1}, {}, 400, "top_k"),
    "top_k 2.5": ("chat", {"top_k": 2.5}, {}, 400, "top_k"),
    "repetition_penalty 0": ("chat", {"repetition_penalty": 0}, {}, 400, "repetition_penalty"),
    "n 0": ("chat", {"n": 0}, {}, 400, "n"),
    "n 100": ("chat", {"n": 100}, {}, 400, "n"),
    "max_tokens 0": ("chat", {"max_tokens": 0}, {}, 400, "max_tokens"),
    "max_tokens over limit": ("chat", {"max_tokens": 10_000}, {}, 400, "max_tokens"),
    "max_tokens text": ("chat", {"max_tokens": "ten"}, {}, 400, "max_tokens"),
    "max_completion_tokens -3": ("chat", {"max_completion_tokens": -3}, {}, 400, "max_completion_tokens"),
    "seed text": ("chat", {"seed": "x"}, {}, 400, "seed"),
    "stop a number": ("chat", {"stop": 3}, {}, 400, "stop"),
    "stop list of numbers": ("chat", {"stop": [1, 2]}, {}, 400, "stop"),
    "stop five strings": ("chat", {"stop": ["a", "b", "c", "d", "e"]}, {}, 400, "stop"),
    "stop an object": ("chat", {"stop": {"a": 1}}, {}, 400, "stop"),
    "stream text": ("chat", {"stream": "yes"}, {}, 400, "stream"),
    "unknown model": ("chat", {"model": "gpt-4"}, {}, 404, "model"),
    "model missing": ("chat", {"model": None}, {}, 400, "model"),
    "model a number": ("chat", {"model": 7}, {}, 404, "model"),
    "oversize body": ("chat", {"messages": msg("x" * 300_000)}, {}, 413, "max_request_bytes"),
    "oversize declared 100 MB": ("chat", b"{}", {"content-length": str(100 * 2**20)}, 413, "max_request_bytes"),
    "deep nesting": ("chat", b'{"model": "tiny", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", {}, 400,
                     "nested too deeply"),
    "content type xml": ("chat", b"<messages/>", {"content-type": "application/xml"}, 415, "Content-Type"),
    "content type multipart": ("chat", b"--b\r\n\r\nx\r\n--b--", {"content-type": "multipart/form-data; boundary=b"},
                               415, "Content-Type"),
    "content type octet-stream": ("chat", b"\x00\x01", {"content-type": "application/octet-stream"}, 415, "Content-Type"),
    "JSON truncated": ("chat", b'{"model": "tiny", "messages": [', {}, 400, "not valid JSON"),
    "JSON trailing garbage": ("chat", b'{"model": "tiny"} xx', {}, 400, "not valid JSON"),
    "body empty": ("chat", b"", {}, 400, "not valid JSON"),
    "body not UTF-8": ("chat", b'{"model": "\xff\xfe"}', {}, 400, "not valid JSON"),
    "body a list": ("chat", b"[1, 2]", {}, 400, "JSON object"),
    "body a string": ("chat", b'"hi"', {}, 400, "JSON object"),
    "body NaN literal": ("chat", b"NaN", {}, 400, "JSON object"),
    "chat prompt over the context": ("chat", {"messages": msg("the cat ran " * 5000)}, {}, 400, "context"),
    "completion prompt over the context": ("text", {"prompt": "the cat ran " * 5000}, {}, 400, "context"),
    "completion prompt missing": ("text", {"prompt": None}, {}, 400, "prompt"),
    "completion prompt a number": ("text", {"prompt": 5}, {}, 400, "prompt"),
    "completion prompt empty": ("text", {"prompt": ""}, {}, 400, "prompt"),
    "completion temperature NaN": ("text", {"temperature": NAN}, {}, 400, "temperature"),
    "API key missing": ("chat", {}, {"authorization": None}, 401, "API key"),
    "API key wrong": ("chat", {}, {"authorization": "Bearer nope"}, 401, "API key"),
    "API key not bearer": ("chat", {}, {"authorization": f"Basic {KEY}"}, 401, "API key"),
}


def send(url: str, case: str) -> httpx.Response:
    path, change, headers, _, _ = CASES[case]
    endpoint = url + ("/v1/chat/completions" if path == "chat" else "/v1/completions")
    if isinstance(change, bytes):
        content = change
    else:
        body = {"model": "tiny", "max_tokens": 4, **({"messages": msg()} if path == "chat" else {"prompt": "the"}),
                **change}
        content = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    h = {"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers}
    h = {k: v for k, v in h.items() if v is not None}
    if "content-length" in headers:  # announces 100 MB, sends 2 bytes: over a raw socket (clients refuse to)
        return raw_post(endpoint, content, h)
    return httpx.post(endpoint, content=content, headers=h, timeout=60)


def raw_post(endpoint: str, content: bytes, headers: dict) -> httpx.Response:
    import socket

    u = httpx.URL(endpoint)
    head = f"POST {u.raw_path.decode()} HTTP/1.1\r\nhost: {u.host}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((u.host, u.port), timeout=30) as sock:
        sock.sendall(head.encode() + content)
        data = b""
        while chunk := sock.recv(65536):  # the server answers, then closes: the body never came
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return httpx.Response(int(status_line.split()[1]), content=body)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_a_clean_4xx(url, case):
    status, where = CASES[case][3], CASES[case][4]
    r = send(url, case)
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert err["param"] == where or where.lower() in err["message"].lower(), err
    assert "Traceback" not in r.text and len(r.content) < 2000


def test_server_still_answers_after_the_corpus(url):
    for case in ("deep nesting", "oversize body", "temperature NaN"):
        send(url, case)
    ok = {"model": "tiny", "messages": msg("the dog"), "max_tokens": 4, "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=ok, headers={"authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert httpx.get(url + "/health").json()["status"] == "ok"
