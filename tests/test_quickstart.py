"""End to end: `lmlab quickstart scale=smoke` through the real console script.

Small numbers (a few steps per stage), but every stage runs for real, and the tests check what the
quickstart promises: the stages ran in order on each other's results, the report names every stage
with its headline number, and the chat command it prints answers on the result.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def lmlab(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lmlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lmlab"]
    env = {**os.environ, "LMLAB_QUIET": "1"}
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env,
                          input=stdin if stdin is not None else "")


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("qs")
    proc = lmlab("quickstart", "scale=smoke", "out=runs/qs", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "runs" / "qs", proc


STAGES = ("tokenizer", "pt", "sft", "ppl", "judge")


def test_every_stage_finished_with_its_artifacts(quickstart_run):
    root, _ = quickstart_run
    for stage in ("pt", "sft"):
        rows = [json.loads(line) for line in (root / stage / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if r.get("split") == "train"]
        assert train and all(r["loss"] > 0 for r in train)
        assert (root / stage / "final" / "config.json").exists()
        assert any((root / stage / "tb").iterdir())
    assert (root / "report.html").stat().st_size > 10_000  # images inlined


def test_stages_ran_in_order_on_each_others_results(quickstart_run):
    """tokenizer → pt → sft → ppl → judge → report: each stage's finished marker (written last) comes
    after the one before, and each stage consumed the previous stage's output."""
    root, _ = quickstart_run
    finished = [(root / stage / "result.json").stat().st_mtime_ns for stage in STAGES]
    assert finished == sorted(finished) and len(set(finished)) == len(STAGES)
    assert (root / "report.md").stat().st_mtime_ns >= finished[-1]
    result = {stage: json.loads((root / stage / "result.json").read_text()) for stage in STAGES}
    tokenizer_vocab = json.loads((root / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert result["pt"]["vocab_size"] == len(tokenizer_vocab) == result["tokenizer"]["vocab_size"] == 512  # smoke
    import yaml

    assert yaml.safe_load((root / "pt" / "config.yaml").read_text())["tokenizer"] == "runs/qs/tokenizer"
    assert yaml.safe_load((root / "sft" / "config.yaml").read_text())["model"] == "runs/qs/pt"
    assert {result["ppl"][m]["model"] for m in ("pt", "sft")} == {"runs/qs/pt", "runs/qs/sft"}
    assert result["judge"]["models"] == {"pt": "runs/qs/pt", "sft": "runs/qs/sft"} and result["judge"]["prompts"] == 4


def _lookup(result: dict, dotted: str) -> float:
    value: object = result
    for key in dotted.split("."):
        value = value[key]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def test_report_names_every_stage_and_its_headline_number(quickstart_run):
    """The overview row of each stage carries its headline number, equal to the stage's result.json."""
    import re

    root, _ = quickstart_run
    report = (root / "report.md").read_text()
    assert "Stages: tokenizer, pt, sft, ppl, judge." in report
    overview = {}
    for line in report.split("## Overview", 1)[1].split("##", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in STAGES:
            overview[cells[0]] = cells
    assert list(overview) == list(STAGES)
    for stage in STAGES:
        result = json.loads((root / stage / "result.json").read_text())
        assert f"## Stage: {stage}" in report
        key, value = re.fullmatch(r"(\S+) = (\S+)", overview[stage][4]).groups()
        assert float(value) == pytest.approx(_lookup(result, key), rel=1e-3, abs=1e-3), (stage, key)
        if stage in ("pt", "sft"):
            steps, train_loss, val_loss = overview[stage][1:4]
            assert int(steps) == result["steps"] and key == "val_ppl"
            assert float(train_loss) == pytest.approx(result["train_loss"], rel=1e-3)
            assert float(val_loss) == pytest.approx(result["val_loss"], rel=1e-3)


def test_the_printed_chat_command_answers_on_the_result(quickstart_run):
    """Run the chat command the quickstart prints, piped with one message: the transcript's reply is
    what plain HF greedy decoding of the tuned model gives for that message."""
    import re

    from chat_model import GreedyOracle

    root, proc = quickstart_run
    command = re.search(r"chat with the result: lmlab (chat \S+)", proc.stdout).group(1).split()
    assert command == ["chat", "runs/qs/sft"]
    message = "Write a story about a cat named Tom at the park."
    chat = lmlab(*command, "temperature=0", "repetition_penalty=1", "max_new_tokens=16", cwd=root.parent.parent,
                 stdin=message + "\n")
    assert chat.returncode == 0, chat.stderr[-2000:]
    lines = chat.stdout.splitlines()
    assert lines[0] == f"user: {message}" and lines[1].startswith("assistant: ")
    oracle = GreedyOracle(root / "sft" / "final")
    want = oracle.reply(oracle.chat_prompt([{"role": "user", "content": message}]), 16)
    assert want and lines[1] == f"assistant: {want}"


def test_rerun_skips_finished_stages(quickstart_run):
    root, _ = quickstart_run
    before = (root / "pt" / "result.json").stat().st_mtime_ns
    proc = lmlab("quickstart", "scale=smoke", "out=runs/qs", cwd=root.parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (root / "pt" / "result.json").stat().st_mtime_ns == before


def test_interrupted_stage_resumes(quickstart_run, tmp_path):
    """Drop the finished marker of sft as if killed after its last checkpoint: --resume finishes it."""
    root, _ = quickstart_run
    copy = tmp_path / "runs" / "qs"
    shutil.copytree(root, copy)
    (copy / "sft" / "result.json").unlink()
    shutil.rmtree(copy / "sft" / "final")
    proc = lmlab("quickstart", "scale=smoke", "out=runs/qs", cwd=tmp_path)
    assert proc.returncode != 0 and "--resume" in proc.stderr
    proc = lmlab("quickstart", "scale=smoke", "out=runs/qs", "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (copy / "sft" / "final" / "config.json").exists()
