"""`lmlab chat` driven through piped stdin and a real pseudo-terminal; `lmlab eval persona`."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

import pytest

from chat_model import ENV
from lmlab.data.personas import keyword_hit, load_persona
from lmlab.eval.persona import score

GREEDY = ["temperature=0", "max_new_tokens=10", "repetition_penalty=1", "threads=1"]


def chat(model_dir, lines: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmlab", "chat", str(model_dir), *GREEDY, *extra], input=lines,
                          capture_output=True, text=True, env=ENV, timeout=300)


def test_piped_chat_commands_history_and_save(model_dir, oracle, tmp_path):
    saved = tmp_path / "chat.json"
    proc = chat(model_dir, f"/system be brief\nthe cat ran\n\ntell me more\n/save {saved}\n/quit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    conv = json.loads(saved.read_text())
    system = {"role": "system", "content": "be brief"}
    q1, q2 = {"role": "user", "content": "the cat ran"}, {"role": "user", "content": "tell me more"}
    r1 = oracle.reply(oracle.chat_prompt([system, q1]), 10)
    a1 = {"role": "assistant", "content": r1}
    r2 = oracle.reply(oracle.chat_prompt([system, q1, a1, q2]), 10)  # the second prompt carries the first turn
    assert r1.strip() and r2.strip()
    assert conv == {"system": "be brief", "persona": None,
                    "messages": [q1, a1, q2, {"role": "assistant", "content": r2}]}
    out = proc.stdout
    # piped output is a transcript that marks who speaks
    assert out.startswith("system prompt set (8 characters)\nuser: the cat ran\nassistant: " + r1
                          + "\nuser: tell me more\nassistant: " + r2 + "\n")
    assert out.rstrip().endswith("bye") and "never read" not in out


def test_piped_chat_says_when_retrieval_finds_nothing(model_dir, tmp_path):
    from lmlab.chat.rag import Index, IndexConfig, build_index

    (tmp_path / "vault.md").write_text("The Zorblax vault opens only with the password plumtree.\n")
    build_index(IndexConfig(docs=[str(tmp_path / "vault.md")], out=str(tmp_path / "idx"), embedder="tfidf"))
    best = Index.load(tmp_path / "idx").search("password of the zorblax vault", threshold=-1.0)[0]
    proc = chat(model_dir, "password of the zorblax vault\n", f"rag={tmp_path / 'idx'}", "rag_threshold=0.99")
    assert proc.returncode == 0, proc.stderr
    assert (f"[retrieval: no document scored >= 0.99 (best: {best.label()} at {best.score:.3f}); "
            "answering without references") in proc.stdout
    assert "user: password of the zorblax vault\n[retrieval: no document" in proc.stdout


def test_eof_ends_chat_persona_used_and_budget_drops_old_turns(model_dir, oracle, tmp_path):
    pirate = load_persona("pirate")
    system = {"role": "system", "content": pirate.system}
    q1, q2 = {"role": "user", "content": "ahoy"}, {"role": "user", "content": "where is the ship"}
    a1 = {"role": "assistant", "content": oracle.reply(oracle.chat_prompt([system, q1]), 10)}

    def n(msgs):
        return len(oracle.tok(oracle.chat_prompt(msgs), add_special_tokens=False)["input_ids"])

    budget = n([system, q2])  # room for the persona and the new question, not for the first turn
    assert budget < n([system, q1, a1, q2])
    saved = tmp_path / "p.json"
    proc = chat(model_dir, f"ahoy\nwhere is the ship\n/save {saved}\n", "persona=pirate",
                f"max_history_tokens={budget}")  # no /quit: end of input ends the chat
    assert proc.returncode == 0, proc.stderr
    conv = json.loads(saved.read_text())
    assert conv["persona"] == "pirate" and conv["system"] == pirate.system
    assert conv["messages"][1] == a1
    # the model never saw the first turn: its reply is the one to persona + second question alone
    assert conv["messages"][3]["content"] == oracle.reply(oracle.chat_prompt([system, q2]), 10)
    assert f"(history: left out the 1 oldest turn(s) to fit {budget} tokens)" in proc.stdout


def test_bad_key_and_unknown_persona_fail_before_loading(model_dir):
    proc = chat(model_dir, "", "temprature=0.5")
    assert proc.returncode == 2 and "unknown key 'temprature'; did you mean 'temperature'?" in proc.stderr
    proc = chat(model_dir, "", "persona=pirat")
    assert proc.returncode == 2 and "unknown persona 'pirat'; did you mean 'pirate'?" in proc.stderr


def _read_until(fd: int, marker: bytes, timeout: float = 120.0) -> bytes:
    buf = b""
    deadline = time.time() + timeout
    while marker not in buf:
        if time.time() > deadline:
            raise AssertionError(f"no {marker!r} in {buf[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.mark.skipif(sys.platform == "win32", reason="pty is POSIX only")
def test_interactive_terminal_session(model_dir, oracle, tmp_path):
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "chat", str(model_dir), *GREEDY],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=ENV, close_fds=True)
    os.close(slave)
    try:
        banner = _read_until(master, b"you> ")
        assert b"/help for commands" in banner
        os.write(master, b"the cat ran\n")
        answer = _read_until(master, b"you> ")
        assert b"assistant> " in answer
        saved = tmp_path / "tty.json"
        os.write(master, f"/save {saved}\n".encode())
        _read_until(master, b"you> ")
        os.write(master, b"/quit\n")
        _read_until(master, b"bye")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    reply = json.loads(saved.read_text())["messages"][1]["content"]
    assert reply == oracle.reply(oracle.chat_prompt([{"role": "user", "content": "the cat ran"}]), 10)


def test_persona_score_worked_example():
    kw = load_persona("pirate").keywords
    s = score(["Arr, matey, welcome aboard!", "Hello there.", "The ship sails at dawn.", "Ahoy, the sea!"], kw)
    assert s["hit_rate"] == 0.75
    assert s["keyword_counts"] == {"arr": 1, "matey": 1, "ahoy": 1, "ship": 1, "sea": 1}


def test_eval_persona_command_writes_consistent_metrics(model_dir, oracle, tmp_path):
    from lmlab.api import evaluate

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Where is the treasure?\nHow are you?\n")
    out = tmp_path / "persona"
    metrics = evaluate("persona", model=str(model_dir), personas="pirate,robot", prompts=str(prompts),
                       out=str(out), max_new_tokens=8, repetition_penalty=1.0)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 3  # 2 prompts × (2 personas + baseline)
    for name in ("pirate", "robot"):
        p = load_persona(name)
        mine = [s["reply"] for s in samples if s["persona"] == name]
        base = [s["reply"] for s in samples if s["persona"] is None]
        assert metrics["personas"][name]["hit_rate"] == sum(keyword_hit(r, p.keywords) for r in mine) / 2
        assert metrics["personas"][name]["baseline_hit_rate"] == sum(keyword_hit(r, p.keywords) for r in base) / 2
        first = oracle.chat_prompt([{"role": "system", "content": p.system},
                                    {"role": "user", "content": "Where is the treasure?"}])
        assert mine[0] == oracle.reply(first, 8)  # the persona's prompt really reached the model
    assert "| pirate |" in (out / "table.md").read_text()
