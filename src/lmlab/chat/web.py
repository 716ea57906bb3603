"""`lmlab web MODEL`: a Gradio chat page — history, clear, regenerate, stop, sampling, personas, RAG.

    lmlab web runs/quickstart/sft port=7860 rag=my-index
    # open http://127.0.0.1:7860

The page runs offline: no share link, no analytics, nothing fetched at launch. Replies stream
through the same `BatchEngine` as `lmlab serve`, so several open tabs are served in one batch.
The history trimming, persona and retrieval rules are the terminal chat's (`ChatSession`): the
prompt is rebuilt from the visible history on every turn, so editing or clearing the page is
exactly what the model sees next.
"""
from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmlab.chat.engine import BatchEngine
from lmlab.chat.options import ChatKeys, load_chat_model, load_index, system_prompt
from lmlab.chat.session import ChatSession, render_prompt
from lmlab.config import opt
from lmlab.decoding import decoding_of

NO_PERSONA = "(none)"


@dataclass
class WebConfig(ChatKeys):
    """Chat with a model in the browser (Gradio)."""

    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0 = every interface)")
    port: int = opt(7860, "TCP port; 0 picks a free one (printed on start)")
    max_batch_size: int = opt(8, "rows per batched generate call when several tabs chat at once")


def _text(content: Any) -> str:
    """Message content as plain text (Gradio 6 hands back a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return "".join(_text(c) for c in content)
    return ""


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class WebChat:
    """What the page's buttons call; kept apart from the layout so it can be tested directly."""

    def __init__(self, engine: BatchEngine, cfg: WebConfig, *, index: Any = None):
        self.engine, self.cfg, self.index = engine, cfg, index

    def reply(self, history: list[dict[str, Any]], persona: str, system: str, use_rag: bool,
              temperature: float, top_p: float, top_k: int, max_new_tokens: int,
              repetition_penalty: float) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Stream the assistant's answer to the last user message: yields (history, sources)."""
        if not history or history[-1].get("role") != "user":
            yield history, ""
            return
        if persona and persona != NO_PERSONA and not system.strip():
            from lmlab.data.personas import load_persona

            system = load_persona(persona).system
        session = ChatSession(self.engine.tokenizer, system=system.strip(),
                              max_history_tokens=self.cfg.max_history_tokens)
        session.turns = [{"role": m["role"], "content": _text(m.get("content"))}
                         for m in history[:-1] if m.get("role") in ("user", "assistant")]
        question = _text(history[-1].get("content"))
        hits = []
        if use_rag and self.index is not None:
            hits = self.index.search(question, k=self.cfg.rag_top_k, threshold=self.cfg.rag_threshold)
        prompt = render_prompt(self.engine.tokenizer, session.build_messages(question, hits))
        dcfg = decoding_of(self.cfg, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                               max_new_tokens=int(max_new_tokens), repetition_penalty=float(repetition_penalty))
        from lmlab.chat.rag import sources_line

        sources = sources_line(hits) if hits else ("no reference document matched" if use_rag and self.index else "")
        events: queue.Queue = queue.Queue()
        handle = self.engine.submit(prompt, dcfg, on_delta=lambda d: events.put(("delta", d)),
                                    on_done=lambda c: events.put(("done", c)))
        history = [*history, {"role": "assistant", "content": ""}]
        text = ""
        try:
            while True:
                kind, item = events.get()
                if kind == "done":
                    if item.finish_reason == "error":
                        text += f"\n\n[error: {item.error}]"
                    history[-1] = {"role": "assistant", "content": text}
                    yield history, sources
                    return
                text += item
                history[-1] = {"role": "assistant", "content": text}
                yield history, sources
        finally:
            handle.cancel()  # Stop pressed or tab closed: free the batch row


def build_app(chat: WebChat, *, title: str) -> Any:
    """The Gradio Blocks page."""
    import gradio as gr

    from lmlab.data.personas import builtin_personas

    cfg = chat.cfg
    with gr.Blocks(title=f"lmlab chat — {title}", analytics_enabled=False) as demo:
        gr.Markdown(f"### lmlab chat — `{title}`")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="conversation", height=420, elem_id="chatbot", buttons=["copy"])
                box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, elem_id="message")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    stop = gr.Button("Stop", elem_id="stop")
                    regen = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
                sources = gr.Markdown(elem_id="sources")
            with gr.Column(scale=1):
                persona = gr.Dropdown([NO_PERSONA, *builtin_personas()], label="persona",
                                      value=cfg.persona if cfg.persona in builtin_personas() else NO_PERSONA)
                system = gr.Textbox(label="system prompt (overrides the persona's)", value=cfg.system, lines=3)
                use_rag = gr.Checkbox(label="answer with reference documents (RAG)", value=chat.index is not None,
                                      interactive=chat.index is not None)
                temperature = gr.Slider(0.0, 2.0, value=cfg.temperature, step=0.05, label="temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=cfg.top_p, step=0.05, label="top-p")
                top_k = gr.Slider(0, 200, value=cfg.top_k, step=1, label="top-k (0 = off)")
                max_new = gr.Slider(1, 1024, value=cfg.max_new_tokens, step=1, label="max new tokens")
                rep = gr.Slider(1.0, 2.0, value=cfg.repetition_penalty, step=0.05, label="repetition penalty")
        knobs = [persona, system, use_rag, temperature, top_p, top_k, max_new, rep]

        def add_user(message: str, history: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
            if not message.strip():
                return message, history
            return "", [*history, {"role": "user", "content": message}]

        def drop_reply(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
            while history and history[-1].get("role") == "assistant":
                history = history[:-1]
            return history

        events = []
        for trigger in (box.submit, send.click):
            ev = trigger(add_user, [box, chatbot], [box, chatbot], queue=False)
            events.append(ev.then(chat.reply, [chatbot, *knobs], [chatbot, sources]))
        events.append(regen.click(drop_reply, [chatbot], [chatbot], queue=False)
                      .then(chat.reply, [chatbot, *knobs], [chatbot, sources]))
        stop.click(None, None, None, cancels=events)
        clear.click(lambda: ([], ""), None, [chatbot, sources], queue=False)
    return demo


def launch(cfg: WebConfig) -> dict[str, Any]:
    """Load the model and serve the page until Ctrl-C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from lmlab.data.personas import builtin_personas

    system, _ = system_prompt(cfg)  # a bad persona fails here, before the model loads
    if cfg.persona and cfg.persona not in builtin_personas():
        cfg.system = system  # a persona file: the page's dropdown lists built-ins only
    index = load_index(cfg)
    model, tokenizer = load_chat_model(cfg)
    engine = BatchEngine(model, tokenizer, max_batch_size=cfg.max_batch_size).start()
    demo = build_app(WebChat(engine, cfg, index=index), title=str(cfg.model))
    port = cfg.port or _free_port(cfg.host)
    demo.queue(default_concurrency_limit=None)
    demo.launch(server_name=cfg.host, server_port=port, share=False, inbrowser=False, quiet=True,
                prevent_thread_lock=True, footer_links=[])
    print(f"lmlab web: listening on http://{cfg.host}:{port}", flush=True)
    try:
        demo.block_thread()
    finally:
        engine.stop()
    return {"url": f"http://{cfg.host}:{port}"}
