"""`lmlab chat MODEL`: a streaming chat in the terminal, or over piped input.

    lmlab chat runs/quickstart/sft persona=pirate temperature=0.7
    printf 'hello\\n/save chat.json\\n/quit\\n' | lmlab chat runs/quickstart/sft

Replies stream token by token through the model's chat template. Input is read line by line, so
the same loop serves a person at a terminal and a script piping questions in; `/quit` or the end
of input ends the chat with exit status 0; piped output is a transcript (`user: …` /
`assistant: …` lines). With `rag=INDEX` each question retrieves reference chunks and the sources
used are printed under the reply; when no chunk passes the threshold a line says so, with the best score.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

from lmlab.chat.options import ChatKeys, load_chat_model, load_index, system_prompt
from lmlab.chat.session import ChatSession, render_prompt
from lmlab.decoding import decoding_of


@dataclass
class ChatConfig(ChatKeys):
    """Chat with a model in the terminal (type /help for commands)."""


def run_chat(cfg: ChatConfig, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    """The read–reply loop; returns the conversation (as /save would write it)."""
    from lmlab.generate import stream

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    system, persona = system_prompt(cfg)
    index = load_index(cfg)
    model, tokenizer = load_chat_model(cfg)
    session = ChatSession(tokenizer, system=system, persona=persona, max_history_tokens=cfg.max_history_tokens)
    dcfg = decoding_of(cfg)
    interactive = stdin.isatty()

    def say(text: str = "", end: str = "\n") -> None:
        stdout.write(text + end)
        stdout.flush()

    if interactive:
        say(f"lmlab chat: {cfg.model}" + (f" as {persona}" if persona else "") + " — /help for commands, /quit to leave")
    while True:
        if interactive:
            say("you> ", end="")
        line = stdin.readline()
        if not line:  # end of input
            break
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            result = session.command(line)
            say(result.output)
            if result.quit:
                break
            continue
        if not interactive:  # a transcript: who speaks, so it can be pasted as it is
            say(f"user: {line}")
        found = index.retrieve(line, k=cfg.rag_top_k, threshold=cfg.rag_threshold) if index is not None else None
        hits = found.hits if found is not None else []
        prompt = render_prompt(tokenizer, session.build_messages(line, hits))
        if session.dropped_turns:
            say(f"(history: left out the {session.dropped_turns} oldest turn(s) to fit {cfg.max_history_tokens} tokens)")
        if found is not None and not hits:
            say(f"[{found.note()}]")
        say("assistant> " if interactive else "assistant: ", end="")
        parts = []
        for delta in stream(model, tokenizer, prompt, dcfg):
            parts.append(delta)
            say(delta, end="")
        say()
        if hits:
            from lmlab.chat.rag import sources_line

            say(f"[{sources_line(hits)}]")
        session.add_exchange(line, "".join(parts))
    return session.to_dict()
