"""End to end: `lmlab quickstart scale=smoke` through the real console script.

Small numbers (a few steps per stage), but every stage runs for real and the test checks what
each one left behind: the artifacts a user and the report rely on.
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


def lmlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lmlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lmlab"]
    env = {**os.environ, "LMLAB_QUIET": "1"}
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("qs")
    proc = lmlab("quickstart", "scale=smoke", "out=runs/qs", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "runs" / "qs", proc


def test_every_stage_finished_with_its_artifacts(quickstart_run):
    root, proc = quickstart_run
    for stage in ("tokenizer", "pt", "sft", "ppl", "judge"):
        assert (root / stage / "result.json").exists(), stage
    for stage in ("pt", "sft"):
        rows = [json.loads(line) for line in (root / stage / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if r.get("split") == "train"]
        assert train and all(r["loss"] > 0 for r in train)
        assert (root / stage / "final" / "config.json").exists()
        assert any((root / stage / "tb").iterdir())
    ppl = json.loads((root / "ppl" / "metrics.json").read_text())
    assert set(ppl) >= {"pt", "sft"} or "models" in ppl
    assert "chat with the result: lmlab chat" in proc.stdout
    report = (root / "report.md").read_text()
    for stage in ("pt", "sft", "ppl", "judge"):
        assert f"Stage: {stage}" in report
    assert (root / "report.html").stat().st_size > 10_000  # images inlined


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
