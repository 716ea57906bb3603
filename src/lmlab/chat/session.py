"""One conversation: history within a token budget, the chat template, and slash commands.

A small model has a short context, and a long chat overflows it. Before every reply the session
builds the prompt from: the system prompt (always kept), as many *recent* whole turns (a user
message and its reply) as fit in `max_history_tokens`, and the newest user message (always kept).
Turns are dropped oldest first, so the model keeps the freshest context. Tokens are counted on
the rendered chat template, i.e. exactly what the model will read.

Commands (the same in the terminal and in piped input)::

    /quit  /new  /system TEXT  /persona NAME  /save FILE  /load FILE  /help
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import closest
from lmlab.data.chat import render_prompt
from lmlab.errors import DataError, LmlabError
from lmlab.runs import atomic_write_json

COMMAND_HELP = {
    "/quit": "end the chat (Ctrl-D too)",
    "/new": "start a new conversation (keeps the system prompt)",
    "/system": "/system TEXT: set the system prompt (empty TEXT removes it)",
    "/persona": "/persona NAME: take on a built-in persona or a persona YAML file",
    "/save": "/save FILE: write the conversation as JSON",
    "/load": "/load FILE: continue a conversation saved with /save",
    "/help": "show this list",
}
ROLES = ("system", "user", "assistant")


@dataclass
class CommandResult:
    output: str
    quit: bool = False


class ChatSession:
    """History, system prompt and persona of one conversation, trimmed to a token budget."""

    def __init__(self, tokenizer: Any, *, system: str = "", persona: str | None = None,
                 max_history_tokens: int = 1024):
        self.tokenizer = tokenizer
        self.system = system
        self.persona = persona
        self.max_history_tokens = max_history_tokens
        self.turns: list[dict[str, str]] = []  # user, assistant, user, assistant, ...
        self.dropped_turns = 0
        """How many old turns the last `build_messages` left out to fit the budget."""

    # -- prompt -----------------------------------------------------------------------------
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False)["input_ids"])

    def _head(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def build_messages(self, user_text: str, hits: list[Any] | None = None) -> list[dict[str, str]]:
        """System + the most recent turns that fit + the new user message (with retrieved context).

        Whole turns are dropped from the oldest; if even system + question exceed the budget,
        they are sent alone (cutting either would change what was asked).
        """
        from lmlab.chat.rag import augment_messages

        newest = augment_messages([{"role": "user", "content": user_text}], hits or [])
        history = list(self.turns)
        dropped = 0
        while True:
            messages = self._head() + history + newest
            if not history or self.count_tokens(messages) <= self.max_history_tokens:
                break
            # drop the oldest user message and everything up to the next user message
            cut = next((i for i in range(1, len(history)) if history[i]["role"] == "user"), len(history))
            history = history[cut:]
            dropped += 1
        self.dropped_turns = dropped
        return messages

    def add_exchange(self, user_text: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "persona": self.persona, "messages": list(self.turns)}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def load(self, path: str | Path) -> None:
        """Replace the conversation with one saved by /save (or any {"messages": [...]} JSON)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, list):
            data = {"messages": data}
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise DataError(f"{path}: expected an object with a 'messages' list (as written by /save)")
        system = data.get("system") or ""
        turns = []
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ROLES or not isinstance(m.get("content"), str):
                hint = closest(str(role), ROLES) if role else None
                raise DataError(
                    f"{path}: messages[{i}] must be {{'role': system|user|assistant, 'content': text}}, got {m!r}"
                    + (f"; did you mean role '{hint}'?" if hint else "")
                )
            if role == "system":
                system = m["content"]
            else:
                turns.append({"role": role, "content": m["content"]})
        self.system, self.persona, self.turns = system, data.get("persona"), turns

    # -- commands ---------------------------------------------------------------------------
    def command(self, line: str) -> CommandResult:
        """Run one slash command; user mistakes come back as text, the chat goes on."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        try:
            if name == "/quit":
                return CommandResult("bye", quit=True)
            if name == "/new":
                self.turns = []
                return CommandResult("new conversation")
            if name == "/system":
                self.system, self.persona = arg, None
                return CommandResult(f"system prompt set ({len(arg)} characters)" if arg else "system prompt removed")
            if name == "/persona":
                from lmlab.data.personas import builtin_personas, load_persona

                if not arg:
                    return CommandResult(f"usage: /persona NAME (built-in: {', '.join(builtin_personas())})")
                persona = load_persona(arg)
                self.system, self.persona = persona.system, persona.name
                return CommandResult(f"persona: {persona.name}")
            if name in ("/save", "/load") and not arg:
                return CommandResult(f"usage: {name} FILE")
            if name == "/save":
                return CommandResult(f"saved {len(self.turns)} messages to {self.save(arg)}")
            if name == "/load":
                self.load(arg)
                return CommandResult(f"loaded {len(self.turns)} messages from {arg}")
            if name == "/help":
                return CommandResult("\n".join(f"  {k:<9} {v}" for k, v in COMMAND_HELP.items()))
        except LmlabError as exc:
            return CommandResult(f"error: {exc}")
        hint = closest(name, COMMAND_HELP)
        return CommandResult(f"unknown command {name}" + (f"; did you mean {hint}?" if hint else "") + " (/help lists them)")
