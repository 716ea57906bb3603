"""What every bad-input case must show, and the files the corpus is made of (written by the tests).

A case is handled cleanly when: the command fails (exit status ≠ 0, or a 4xx answer), with one
message that names the file / line / field / key at fault, no traceback, and nothing written that
a later run would take as valid (no result.json, no complete checkpoint, no final/).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from lmlab.runs import RunDir


def check_message(rc: int, err: str, names: list[str]) -> None:
    """A clean failure: status ≠ 0, one 'error:' line, every name in it, no traceback."""
    assert rc != 0, f"expected a failure, got status {rc}: {err[-500:]}"
    assert "Traceback" not in err, err[-2000:]
    heads = [line for line in err.splitlines() if line.startswith("lmlab") and "error" in line]
    assert len(heads) == 1, err[-1000:]
    missing = [n for n in names if n.lower() not in err.lower()]
    assert not missing, f"message does not name {missing}: {err[-800:]}"


def check_nothing_valid(out: Path) -> None:
    """Nothing in `out` that a later run or `model=out` would take as finished or resumable."""
    run = RunDir(out)
    if not out.exists():
        return
    assert not run.is_done(), f"{out} was marked finished"
    assert run.latest_checkpoint() is None, f"{out} holds a checkpoint"
    assert not run.final_dir.exists(), f"{out} holds final/"


def rows(*objs: dict) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def chat(user: str = "hi", reply: str = "hello") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


# name: (file name, bytes or text, kind read as, names the message must hold)
DATA_ERRORS: dict[str, tuple[str, bytes | str, str, list[str]]] = {
    "jsonl truncated last line": ("t.jsonl", '{"text": "a b"}\n{"text": "c d', "text", ["t.jsonl:2", "invalid JSON"]),
    "jsonl truncated first line": ("t.jsonl", '{"text": "a', "text", ["t.jsonl:1"]),
    "json truncated": ("t.json", '[{"text": "a"}, {"te', "text", ["t.json:1", "invalid JSON"]),
    "json two objects": ("t.json", '{"text": "a"}\n{"text": "b"}\n', "text", ["t.json", ".jsonl"]),
    "json scalar": ("t.json", "42", "text", ["t.json", "list of objects"]),
    "json list with a number": ("t.json", '[{"text": "a"}, 3]', "text", ["t.json", "item 1"]),
    "jsonl line is a list": ("t.jsonl", '["a", "b"]\n', "text", ["t.jsonl:1", "JSON object"]),
    "jsonl line is a string": ("t.jsonl", '"hello"\n', "text", ["t.jsonl:1", "JSON object"]),
    "text null": ("t.jsonl", '{"text": null}\n', "text", ["t.jsonl:1", "text"]),
    "text a list": ("t.jsonl", '{"text": ["a", "b"]}\n', "text", ["t.jsonl:1", "text"]),
    "text an object": ("t.jsonl", '{"text": {"a": 1}}\n', "text", ["t.jsonl:1", "text"]),
    "messages a string": ("c.jsonl", '{"messages": "hello"}\n', "chat", ["c.jsonl:1", "messages must be a list"]),
    "messages a number": ("c.jsonl", '{"messages": 5}\n', "chat", ["c.jsonl:1", "messages"]),
    "message not an object": ("c.jsonl", '{"messages": ["hi", "there"]}\n', "chat", ["c.jsonl:1", "messages[0]"]),
    "bad role": ("c.jsonl", rows({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
                 "chat", ["c.jsonl:1", "robot"]),
    "content a number": ("c.jsonl", rows({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}),
                         "chat", ["c.jsonl:1", "messages[0].content"]),
    "content missing": ("c.jsonl", rows({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}),
                        "chat", ["c.jsonl:1", "content"]),
    "role missing": ("c.jsonl", rows({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}),
                     "chat", ["c.jsonl:1", "role"]),
    "chat fields missing": ("c.jsonl", '{"foo": 1}\n', "chat", ["c.jsonl:1", "fields found: foo"]),
    "chat completion missing": ("c.jsonl", '{"prompt": "p"}\n', "chat", ["c.jsonl:1", "prompt"]),
    "preference rejected missing": ("p.jsonl", '{"prompt": "p", "chosen": "c"}\n', "preference",
                                    ["p.jsonl:1", "rejected"]),
    "preference chosen null": ("p.jsonl", '{"prompt": "p", "chosen": null, "rejected": "r"}\n', "preference",
                               ["p.jsonl:1", "chosen"]),
    "feedback label bad": ("f.jsonl", '{"prompt": "p", "completion": "c", "label": "maybe"}\n', "feedback",
                           ["f.jsonl:1", "label"]),
    "feedback label missing": ("f.jsonl", '{"prompt": "p", "completion": "c"}\n', "feedback", ["f.jsonl:1", "label"]),
    "labelled label missing": ("l.jsonl", '{"text": "t"}\n', "labelled", ["l.jsonl:1", "label"]),
    "empty jsonl": ("e.jsonl", "", "text", ["e.jsonl", "no rows"]),
    "empty json list": ("e.json", "[]", "text", ["e.json", "no rows"]),
    "empty csv": ("e.csv", "", "text", ["e.csv", "no rows"]),
    "csv header only": ("e.csv", "text\n", "text", ["e.csv", "no rows"]),
    "empty txt": ("e.txt", "", "text", ["e.txt", "no rows"]),
    "blank lines only": ("e.jsonl", "\n\n  \n", "text", ["e.jsonl", "no rows"]),
    "empty after cleaning": ("w.jsonl", rows({"text": "   "}, {"text": ""}), "text", ["w.jsonl", "cleaning"]),
    "empty messages list": ("w.jsonl", '{"messages": []}\n', "chat", ["w.jsonl", "no chat records"]),
    "non-UTF-8 jsonl": ("n.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"), "text", ["n.jsonl", "UTF-8"]),
    "non-UTF-8 txt": ("n.txt", "caf\xe9 na\xefve".encode("latin-1"), "text", ["n.txt", "UTF-8"]),
    "non-UTF-8 csv": ("n.csv", "text\ncaf\xe9\n".encode("latin-1"), "text", ["n.csv", "UTF-8"]),
    "UTF-16 jsonl": ("u.jsonl", '{"text": "hello"}\n'.encode("utf-16"), "text", ["u.jsonl"]),
    "csv row missing a column": ("p.csv", "prompt,chosen,rejected\np,c,r\np2,c2\n", "preference",
                                 ["p.csv:3", "expected 3 fields"]),
    "csv row with an extra column": ("p.csv", "prompt,chosen,rejected\np,c,r,x\n", "preference", ["p.csv:2", "fields"]),
    "csv without the rejected column": ("p.csv", "prompt,chosen\np,c\n", "preference", ["p.csv:2", "rejected"]),
    "tsv wrong delimiter": ("p.tsv", "prompt,chosen,rejected\np,c,r\n", "preference", ["p.tsv:2"]),
    "text named .parquet": ("x.parquet", "just text\n", "text", ["x.parquet", "parquet"]),
    "truncated gzip": ("z.jsonl.gz", gzip.compress(b'{"text": "hello world"}\n' * 100)[:40], "text",
                       ["z.jsonl.gz", "cannot read"]),
    "not gzip named .gz": ("z.jsonl.gz", b'{"text": "hello"}\n', "text", ["z.jsonl.gz"]),
    "gzipped parquet": ("z.parquet.gz", gzip.compress(b"x"), "text", ["z.parquet.gz", "parquet"]),
    "unknown extension": ("x.xlsx", "x", "text", ["x.xlsx", "unknown file type"]),
    "no extension": ("data", "x", "text", ["data", "unknown file type"]),
    "dict of columns unequal": ("d.json", '{"text": ["a", "b"], "label": [1]}', "labelled", ["d.json", "equal lengths"]),
}

# Inputs that look odd but are valid: each must load to exactly these records.
DATA_VALID: dict[str, tuple[str, bytes | str, str, list[dict]]] = {
    "BOM jsonl": ("b.jsonl", b'\xef\xbb\xbf{"text": "hello"}\n', "text", [{"text": "hello"}]),
    "BOM csv": ("b.csv", b"\xef\xbb\xbftext\nhello\n", "text", [{"text": "hello"}]),
    "CRLF jsonl": ("r.jsonl", '{"text": "a"}\r\n{"text": "b"}\r\n', "text", [{"text": "a"}, {"text": "b"}]),
    "CRLF csv": ("r.csv", "prompt,chosen,rejected\r\np,c,r\r\n", "preference",
                 [{"prompt": [{"role": "user", "content": "p"}], "chosen": "c", "rejected": "r"}]),
    "extra fields ignored": ("x.jsonl", '{"text": "a", "id": 7, "meta": {"k": 1}}\n', "text", [{"text": "a"}]),
}


def write(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path
