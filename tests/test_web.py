"""`lmlab web`: the page's reply logic, and the real page in headless Chromium.

Browser tests need a chromium on PATH (`make browser` installs Debian's) and the `playwright` Python
package; they are marked `browser` and skipped, with the reason, when either is missing — except
with CI=true, where that skip fails the run (tests/conftest.py).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from chat_model import start_server
from lmlab.chat.engine import BatchEngine
from lmlab.chat.rag import Index, IndexConfig, augment_messages, build_index
from lmlab.chat.web import WebChat, WebConfig
from lmlab.data.personas import load_persona

# `make browser` accepts any chromium on PATH, so the test looks there first
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
QUESTION = "What is the password of the Zorblax vault?"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("webdocs")
    (d / "vault.md").write_text("The Zorblax vault opens only with the password plumtree.\n")
    (d / "other.txt").write_text("Tom and Mia played with a red ball in the park near the river.\n")
    build_index(IndexConfig(docs=[str(d)], out=str(d / "idx"), embedder="tfidf"))
    return d / "idx"


def _knobs(persona="(none)", system="", rag=False):
    return [persona, system, rag, 0.0, 1.0, 0, 10, 1.0]


def test_reply_streams_the_oracle_answer_with_persona_and_sources(model_dir, oracle, index_dir):
    engine = BatchEngine(oracle.model, oracle.tok)
    try:
        chat = WebChat(engine, WebConfig(model=str(model_dir)), index=Index.load(index_dir))
        history = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]  # Gradio 6 content parts
        steps = list(chat.reply(history, *_knobs(persona="pirate", rag=True)))
        final, sources = steps[-1]
        system = {"role": "system", "content": load_persona("pirate").system}
        hits = Index.load(index_dir).search(QUESTION)
        prompt = oracle.chat_prompt(augment_messages([system, {"role": "user", "content": QUESTION}], hits))
        assert final[-1] == {"role": "assistant", "content": oracle.reply(prompt, 10)}
        assert len(steps) > 2 and all(len(h[-1]["content"]) <= len(final[-1]["content"]) for h, _ in steps)
        assert sources.startswith("sources: ") and "vault.md#0" in sources and "other.txt" not in sources
        # an explicit system prompt overrides the persona; RAG off sends the bare question
        final, sources = list(chat.reply(history, *_knobs(persona="pirate", system="be brief")))[-1]
        bare = oracle.chat_prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}])
        assert final[-1]["content"] == oracle.reply(bare, 10) and sources == ""
    finally:
        engine.stop()


def _browser_ready() -> str | None:
    if not Path(CHROMIUM).exists():
        return "no chromium on PATH nor /usr/bin/chromium (make browser, or apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


@pytest.mark.browser
def test_page_in_headless_chromium(model_dir, oracle, index_dir):
    reason = _browser_ready()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # a question whose greedy answer shows some letters (the tiny random model often says only bytes)
    index = Index.load(index_dir)
    candidates = [QUESTION, "What is the password of the vault?", "Which password opens the Zorblax vault?",
                  "Tell me the vault password, please."]
    for question in candidates:
        hits = index.search(question)
        expected = oracle.reply(oracle.chat_prompt(augment_messages([{"role": "user", "content": question}], hits)), 24)
        letters = re.sub("[^A-Za-z]", "", expected)
        if len(letters) >= 3 and hits:
            break
    assert len(letters) >= 3, "no candidate question gives a visible answer; change the candidates"
    proc, url = start_server(["web", str(model_dir), "port=0", "temperature=0", "max_new_tokens=24",
                              "repetition_penalty=1", "threads=1", f"rag={index_dir}"])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            page.fill("#message textarea", question, timeout=120_000)
            page.keyboard.press("Enter")
            page.wait_for_function(
                "() => document.querySelector('#sources') && document.querySelector('#sources').innerText.includes('vault.md')",
                timeout=120_000)
            bot = page.locator("#chatbot .message.bot").last
            bot.wait_for(timeout=60_000)
            page.wait_for_function(
                "(want) => { const b = [...document.querySelectorAll('#chatbot .message.bot')].pop();"
                " return b && b.innerText.replace(/[^A-Za-z]/g, '') === want; }", arg=letters, timeout=60_000)
            assert question in page.inner_text("#chatbot")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
            # regenerate (greedy): the same answer again, still one exchange
            page.click("#regenerate")
            page.wait_for_timeout(1500)
            page.wait_for_function(
                "(want) => { const b = [...document.querySelectorAll('#chatbot .message.bot')];"
                " return b.length === 1 && b[0].innerText.replace(/[^A-Za-z]/g, '') === want; }", arg=letters,
                timeout=60_000)
            page.click("#clear")
            page.wait_for_function("() => document.querySelectorAll('#chatbot .message').length === 0", timeout=30_000)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
