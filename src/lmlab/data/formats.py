"""Records, and the normalisers that turn raw rows of every common dataset layout into them.

Every loader yields plain dicts (one per JSON line, CSV row, paragraph …); `to_record(row, kind)`
turns one into a typed record, so the rest of lmlab sees five shapes only:

    text        TextRecord(text)
    chat        ChatRecord(messages)                 alpaca, ShareGPT, OpenAI messages, prompt/completion
    preference  PreferenceRecord(prompt, chosen, rejected)
                                                     prompt/chosen/rejected (strings or message lists),
                                                     hh-rlhf whole dialogues, LLaMA-Factory pairwise
    feedback    FeedbackRecord(prompt, completion, label)   KTO: prompt/completion/label, messages/label
    labelled    LabelledRecord(text, label)          text/label, IMDB review/sentiment

A `columns` mapping `{canonical: source}` renames source fields first (`{prompt: question}`).
A row that fits no layout raises DataError naming where it came from, the fields it has, and the
`columns=` mapping that would fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmlab.errors import DataError

KINDS = ("text", "chat", "preference", "feedback", "labelled")


@dataclass
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass
class TextRecord:
    text: str


@dataclass
class ChatRecord:
    messages: list[Message]


@dataclass
class PreferenceRecord:
    prompt: list[Message]
    chosen: str
    rejected: str


@dataclass
class FeedbackRecord:
    prompt: list[Message]
    completion: str
    label: bool


@dataclass
class LabelledRecord:
    text: str
    label: float | int | str


Record = TextRecord | ChatRecord | PreferenceRecord | FeedbackRecord | LabelledRecord

# Role names used by ShareGPT, OpenAI, LLaMA-Factory and friends → ours.
ROLES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}

# Source names seen in the wild for each canonical field: used to propose a `columns=` fix.
SYNONYMS = {
    "prompt": ("question", "query", "instruction", "input", "context", "problem", "source"),
    "completion": ("answer", "response", "output", "target", "solution", "reply"),
    "chosen": ("chosen_response", "preferred", "better", "winner", "accepted"),
    "rejected": ("rejected_response", "dispreferred", "worse", "loser"),
    "text": ("review", "sentence", "content", "document", "body", "story", "passage"),
    "label": ("sentiment", "labels", "class", "target", "score", "rating", "kto_tag"),
}

# Layouts each kind accepts, for error messages.
LAYOUTS = {
    "text": "text",
    "chat": "messages | conversations | instruction (+input, output) | prompt + completion/response",
    "preference": "prompt + chosen + rejected | chosen + rejected (hh-rlhf dialogues) | conversations + chosen + rejected",
    "feedback": "prompt + completion + label | messages + label",
    "labelled": "text + label",
}
REQUIRED = {
    "text": ("text",),
    "chat": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "feedback": ("prompt", "completion", "label"),
    "labelled": ("text", "label"),
}


# -- helpers ---------------------------------------------------------------------------------------
def apply_columns(row: dict[str, Any], columns: dict[str, str] | None, where: str) -> dict[str, Any]:
    """Rename source fields to canonical ones: `{prompt: question}` makes row['prompt'] = row['question']."""
    if not columns:
        return row
    out = dict(row)
    for canonical, source in columns.items():
        if source not in row:
            from lmlab.config import closest

            hint = closest(str(source), [str(k) for k in row])
            raise DataError(
                f"{where}: columns maps '{canonical}' to '{source}', but the row has no field '{source}'"
                + (f"; did you mean '{hint}'?" if hint else "") + f" (fields found: {', '.join(map(str, row))})"
            )
        value = out.pop(source)
        out[canonical] = value
    return out


def suggest_columns(kind: str, fields: list[str]) -> str:
    """A `columns={...}` mapping from fields found to the canonical ones `kind` needs (best guess)."""
    wanted = [f for f in REQUIRED[kind] if f not in fields]
    spare = [f for f in fields if f not in REQUIRED[kind]]
    pairs = []
    for canonical in wanted:
        match = next((f for f in spare if f.lower() in SYNONYMS.get(canonical, ())), None)
        if match is None and spare:
            match = spare[0]
        if match is not None:
            spare.remove(match)
            pairs.append(f"{canonical}: {match}")
    return "{" + ", ".join(pairs) + "}" if pairs else ""


def fail(kind: str, row: dict[str, Any], where: str, why: str = "") -> DataError:
    fields = [str(k) for k in row]
    fix = suggest_columns(kind, fields)
    return DataError(
        f"{where}: cannot read a {kind} record{': ' + why if why else ''}; fields found: "
        f"{', '.join(fields) or '(none)'}; expected {LAYOUTS[kind]}"
        + (f"; if your fields have other names, add columns={fix}" if fix else "")
    )


def _text(value: Any, field: str, kind: str, row: dict[str, Any], where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise fail(kind, row, where, f"field '{field}' must be text, got {type(value).__name__} {str(value)[:60]!r}")


MESSAGE_LISTS = ("messages", "conversations")  # fields that hold a conversation, never a plain string


def _not_a_message_list(field: str, value: Any, where: str) -> DataError:
    return DataError(f"{where}: {field} must be a list of {{role, content}} objects, got {type(value).__name__} "
                     f"{repr(value)[:60]}")


def to_messages(value: Any, field: str, kind: str, row: dict[str, Any], where: str) -> list[Message]:
    """A message list from [{role, content}] / [{from, value}] items; a plain string is one user turn,
    except in a `messages` / `conversations` field, which must be a list."""
    if isinstance(value, str) and field not in MESSAGE_LISTS:
        return [Message("user", value)]
    if not isinstance(value, list):
        if field in MESSAGE_LISTS:
            raise _not_a_message_list(field, value, where)
        raise fail(kind, row, where, f"field '{field}' must be text or a list of messages")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(kind, row, where, f"{field}[{i}] must be a message {{role, content}}, got {str(item)[:60]!r}")
        role = item.get("role", item.get("from"))
        content = item.get("content", item.get("value"))
        if role is None or content is None:
            raise fail(kind, row, where, f"{field}[{i}] needs role+content or from+value, has {', '.join(item)}")
        mapped = ROLES.get(str(role).lower())
        if mapped is None:
            from lmlab.config import closest

            hint = closest(str(role).lower(), ROLES)
            raise DataError(
                f"{where}: {field}[{i}] has unknown role '{role}'" + (f"; did you mean '{hint}'?" if hint else "")
                + f" (known roles: {', '.join(ROLES)})"
            )
        if not isinstance(content, str):
            raise DataError(f"{where}: {field}[{i}].content must be text, got {type(content).__name__} "
                            f"{repr(content)[:60]}")
        out.append(Message(mapped, content))
    return out


def _reply(value: Any, field: str, kind: str, row: dict[str, Any], where: str) -> tuple[list[Message], str]:
    """A response given as text, a {from, value} message, or a message list ending in the reply.

    Returns (messages before the reply, reply text) so implicit prompts can be recovered.
    """
    if isinstance(value, dict):
        value = [value]
    if field in MESSAGE_LISTS and not isinstance(value, list):
        raise _not_a_message_list(field, value, where)
    if isinstance(value, list):
        msgs = to_messages(value, field, kind, row, where)
        if not msgs or msgs[-1].role != "assistant":
            raise fail(kind, row, where, f"'{field}' must end with an assistant message")
        return msgs[:-1], msgs[-1].content
    return [], _text(value, field, kind, row, where)


def to_label(value: Any, row: dict[str, Any], where: str) -> bool:
    """KTO's desirable/undesirable flag from bool, 0/1 or true/false/yes/no text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise fail("feedback", row, where, f"label must be true/false (or 1/0), got {value!r}")


# -- hh-rlhf -------------------------------------------------------------------------------------------
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def parse_hh_dialogue(text: str) -> list[Message]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' → [user: hi, assistant: hello] (Anthropic hh-rlhf layout)."""
    out: list[Message] = []
    rest = text if text.startswith("\n\n") else "\n\n" + text
    while rest:
        h, a = rest.find(HUMAN), rest.find(ASSISTANT)
        starts = [(i, tag) for i, tag in ((h, HUMAN), (a, ASSISTANT)) if i >= 0]
        if not starts:
            break
        i, tag = min(starts)
        rest = rest[i + len(tag):]
        nxt = [j for j in (rest.find(HUMAN), rest.find(ASSISTANT)) if j >= 0]
        end = min(nxt) if nxt else len(rest)
        out.append(Message("user" if tag == HUMAN else "assistant", rest[:end].strip()))
        rest = rest[end:]
    return out


class DivergentDialogue(DataError):
    """An hh-rlhf row whose two transcripts differ before their final assistant turn: no shared prompt
    with two answers exists. A handful of such rows are in the real data; loaders skip and count them."""


def split_hh_pair(chosen: str, rejected: str, row: dict[str, Any], where: str) -> PreferenceRecord:
    """Split two whole dialogues at the last '\\n\\nAssistant:' of their common prefix.

    In hh-rlhf both strings repeat the whole conversation; only the final assistant turn differs:
    the common dialogue becomes the prompt (user/assistant messages), the two final turns the answers.
    """
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(ASSISTANT, 0, n)
    if cut < 0 and n == limit:  # one reply is a prefix of the other: the tag may end exactly at n
        cut = chosen.rfind(ASSISTANT, 0, n + 1)
    if cut < 0:
        raise fail("preference", row, where, "chosen and rejected share no '\\n\\nAssistant:' turn to split a prompt off")
    head = cut + len(ASSISTANT)
    if any(HUMAN in side[head:] or ASSISTANT in side[head:] for side in (chosen, rejected)):
        raise DivergentDialogue(f"{where}: chosen and rejected differ before their final assistant turn "
                                "(no shared prompt with two final answers)")
    prompt = parse_hh_dialogue(chosen[:cut])
    return PreferenceRecord(prompt, chosen[head:].strip(), rejected[head:].strip())


# -- story layouts ---------------------------------------------------------------------------------------
CLOZE_FIELDS = ("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
                "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding")


def five_sentences(row: dict[str, Any], where: str) -> list[str] | None:
    """The five sentences of a ROCStories row, or None for other layouts.

    Story Cloze (Mostafazadeh et al. 2016): sentences 1–4 and the right one of two candidate endings
    (`AnswerRightEnding` 1 or 2). ROCStories proper: `sentence1` … `sentence5`. So the mirror's Story
    Cloze file reads as stories (text) and as continuation data (chat: sentence 1 → sentences 2–5).
    """
    if all(f"sentence{i}" in row for i in range(1, 6)):
        return [str(row[f"sentence{i}"]).strip() for i in range(1, 6)]
    if not all(k in row for k in CLOZE_FIELDS):
        return None
    right = str(row["AnswerRightEnding"]).strip()
    if right not in ("1", "2"):
        raise DataError(f"{where}: AnswerRightEnding must be 1 or 2, got {right!r}")
    return [str(row[f"InputSentence{i}"]).strip() for i in range(1, 5)] + [str(row[f"RandomFifthSentenceQuiz{right}"]).strip()]


# -- one normaliser per kind ---------------------------------------------------------------------------
def to_text(row: dict[str, Any], where: str) -> TextRecord:
    if "text" in row:
        return TextRecord(_text(row["text"], "text", "text", row, where))
    story = five_sentences(row, where)
    if story is not None:
        return TextRecord(" ".join(story))
    if "title" in row and isinstance(row.get("paragraphs"), list):  # chinese-poetry layout
        return TextRecord("\n".join([str(row["title"]), *map(str, row["paragraphs"])]))
    for kind in ("preference", "feedback", "chat", "labelled"):  # e.g. a tokenizer trained on instructions
        try:
            return TextRecord(record_text(NORMALISERS[kind](row, where)))
        except DivergentDialogue:  # two whole transcripts: both are text
            return TextRecord("\n".join([row["chosen"], row["rejected"]]))
        except DataError:
            continue
    raise fail("text", row, where)


def to_chat(row: dict[str, Any], where: str) -> ChatRecord:
    story = five_sentences(row, where)
    if story is not None:  # continuation: the first sentence asks for the other four
        return ChatRecord([Message("user", story[0]), Message("assistant", " ".join(story[1:]))])
    if "messages" in row or "conversations" in row:
        field = "messages" if "messages" in row else "conversations"
        msgs = to_messages(row[field], field, "chat", row, where)
        if row.get("system") and (not msgs or msgs[0].role != "system"):
            msgs.insert(0, Message("system", _text(row["system"], "system", "chat", row, where)))
        return ChatRecord(msgs)
    if "instruction" in row and "output" in row:  # alpaca (LLaMA-Factory adds system and history)
        msgs = []
        if row.get("system"):
            msgs.append(Message("system", _text(row["system"], "system", "chat", row, where)))
        for i, turn in enumerate(row.get("history") or []):
            if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
                raise fail("chat", row, where, f"history[{i}] must be a [question, answer] pair")
            msgs += [Message("user", str(turn[0])), Message("assistant", str(turn[1]))]
        user = _text(row["instruction"], "instruction", "chat", row, where)
        extra = row.get("input")
        if extra:
            user = f"{user}\n\n{_text(extra, 'input', 'chat', row, where)}"
        msgs += [Message("user", user), Message("assistant", _text(row["output"], "output", "chat", row, where))]
        return ChatRecord(msgs)
    reply_field = "completion" if "completion" in row else "response" if "response" in row else None
    if "prompt" in row and reply_field:
        prompt = to_messages(row["prompt"], "prompt", "chat", row, where)
        before, reply = _reply(row[reply_field], reply_field, "chat", row, where)
        return ChatRecord([*prompt, *before, Message("assistant", reply)])
    raise fail("chat", row, where)


def _other_kind_hint(row: dict[str, Any], where: str, wanted: str) -> DataError | None:
    """Labelled text or unpaired feedback given where `wanted` records are read: say what it is and what reads it."""
    if wanted != "feedback" and "label" in row and ("completion" in row or "messages" in row):
        return DataError(f"{where}: this row is unpaired feedback (prompt, completion, label: {', '.join(map(str, row))}), "
                         "not a preference pair; KTO reads it: `lmlab train kto data=…`")
    text_f = next((f for f in LABELLED_TEXT if f in row), None)
    label_f = next((f for f in LABELLED_LABEL if f in row), None)
    if text_f and label_f and not {"prompt", "completion", "chosen", "rejected"} & set(row):
        return DataError(f"{where}: this row is labelled text ({text_f}, {label_f}), not {wanted} data; a reward "
                         f"model learns from labels as a classifier: `lmlab train rm kind=classifier data=…`")
    return None


def to_preference(row: dict[str, Any], where: str) -> PreferenceRecord:
    if "chosen" not in row or "rejected" not in row:
        raise _other_kind_hint(row, where, "preference") or fail("preference", row, where)
    chosen, rejected = row["chosen"], row["rejected"]
    prompt_field = next((f for f in ("prompt", "conversations", "messages") if f in row), None)
    if prompt_field is None:
        if isinstance(chosen, str) and isinstance(rejected, str):
            if ASSISTANT not in chosen:
                raise fail("preference", row, where, "no prompt field, and chosen is not an hh-rlhf dialogue")
            return split_hh_pair(chosen, rejected, row, where)
        before_c, reply_c = _reply(chosen, "chosen", "preference", row, where)
        before_r, reply_r = _reply(rejected, "rejected", "preference", row, where)
        if before_c != before_r:
            raise fail("preference", row, where, "chosen and rejected conversations differ before their last reply")
        if not before_c:
            raise fail("preference", row, where, "no prompt field and no shared conversation before the replies")
        return PreferenceRecord(before_c, reply_c, reply_r)
    prompt = to_messages(row[prompt_field], prompt_field, "preference", row, where)
    before_c, reply_c = _reply(chosen, "chosen", "preference", row, where)
    _, reply_r = _reply(rejected, "rejected", "preference", row, where)
    # TRL's conversational layout may repeat the prompt inside chosen; keep only what is new.
    extra = before_c[len(prompt):] if before_c[: len(prompt)] == prompt else before_c
    return PreferenceRecord(prompt + extra, reply_c, reply_r)


def to_feedback(row: dict[str, Any], where: str) -> FeedbackRecord:
    if "label" not in row or ("prompt" not in row and not set(MESSAGE_LISTS) & set(row)):
        raise _other_kind_hint(row, where, "feedback") or fail("feedback", row, where, "" if "label" in row else "no 'label'")
    label = to_label(row["label"], row, where)
    if "prompt" in row and ("completion" in row or "response" in row):
        field = "completion" if "completion" in row else "response"
        prompt = to_messages(row["prompt"], "prompt", "feedback", row, where)
        before, reply = _reply(row[field], field, "feedback", row, where)
        return FeedbackRecord(prompt + before, reply, label)
    if "messages" in row or "conversations" in row:
        field = "messages" if "messages" in row else "conversations"
        before, reply = _reply(row[field], field, "feedback", row, where)
        if not before:
            raise fail("feedback", row, where, f"'{field}' needs at least one message before the assistant reply")
        return FeedbackRecord(before, reply, label)
    raise fail("feedback", row, where)


LABELLED_TEXT = ("text", "review", "sentence", "content", "document")
LABELLED_LABEL = ("label", "sentiment", "labels", "class")


def to_labelled(row: dict[str, Any], where: str) -> LabelledRecord:
    """`{text, label}`; without those names, the first known pair (IMDB's review/sentiment)."""
    text_f = next((f for f in LABELLED_TEXT if f in row), None)
    label_f = next((f for f in LABELLED_LABEL if f in row), None)
    if text_f is None or label_f is None:
        raise fail("labelled", row, where)
    label = row[label_f]
    if isinstance(label, bool) or not isinstance(label, (int, float, str)):
        raise fail("labelled", row, where, f"label must be a number or a class name, got {label!r}")
    return LabelledRecord(_text(row[text_f], text_f, "labelled", row, where), label)


NORMALISERS = {
    "text": to_text,
    "chat": to_chat,
    "preference": to_preference,
    "feedback": to_feedback,
    "labelled": to_labelled,
}


def check_kind(kind: str) -> None:
    if kind not in NORMALISERS:
        from lmlab.config import closest

        hint = closest(kind, KINDS)
        raise DataError(f"unknown data kind '{kind}'" + (f"; did you mean '{hint}'?" if hint else "") + f" (kinds: {', '.join(KINDS)})")


def to_record(row: dict[str, Any], kind: str, *, columns: dict[str, str] | None = None, where: str = "row") -> Record:
    """One raw row → one record of `kind`, after renaming `columns` ({canonical: source})."""
    check_kind(kind)
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields, got {type(row).__name__} {str(row)[:60]!r}")
    return NORMALISERS[kind](apply_columns(row, columns, where), where)


def detect_kind(row: dict[str, Any]) -> str:
    """The most specific kind a row can be read as (preference before chat before text)."""
    for kind in ("preference", "feedback", "labelled", "chat", "text"):
        try:
            NORMALISERS[kind](row, "row")
        except DataError:
            continue
        return kind
    raise fail("text", row, "row", "it fits no known layout")


def record_text(record: Record) -> str:
    """All the text of a record, for statistics, hashing and tokenizer training."""
    if isinstance(record, (TextRecord, LabelledRecord)):
        return record.text
    if isinstance(record, ChatRecord):
        return "\n".join(m.content for m in record.messages)
    if isinstance(record, PreferenceRecord):
        return "\n".join([*(m.content for m in record.prompt), record.chosen, record.rejected])
    return "\n".join([*(m.content for m in record.prompt), record.completion])
