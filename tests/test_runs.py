"""Run folders: atomic writes, interrupted-run bookkeeping, checkpoint pruning."""
from __future__ import annotations

import json
import os

import pytest

from lmlab.errors import LmlabError
from lmlab.runs import RunDir, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert os.listdir(p.parent) == ["f.json"]


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # temp file cleaned up


def test_atomic_dir_all_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "w.bin").write_bytes(b"1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "w.bin").write_bytes(b"2")
        raise RuntimeError("killed mid-write")
    assert (target / "w.bin").read_bytes() == b"1"  # old complete version survives
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_torn_last_line_is_ignored(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_jsonl(p) == [{"step": 1, "loss": 2.0}]


def test_interrupted_run_needs_resume_or_force(tmp_path):
    run = RunDir(tmp_path / "r")
    run.prepare()
    (run.checkpoints_dir / "step-3").mkdir(parents=True)
    with pytest.raises(LmlabError, match="--resume"):
        RunDir(run.path).prepare()
    RunDir(run.path).prepare(resume=True)
    assert run.latest_checkpoint().name == "step-3"
    RunDir(run.path).prepare(force=True)
    assert run.latest_checkpoint() is None


def test_metrics_truncate_on_resume_and_prune(tmp_path):
    run = RunDir(tmp_path / "r")
    for s in range(1, 7):
        run.log_metrics({"step": s, "loss": 1.0 / s})
    run.truncate_metrics(4)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    for s in (2, 4, 6, 8, 10):
        (run.checkpoints_dir / f"step-{s}").mkdir(parents=True)
    (run.checkpoints_dir / ".step-12.x.tmp").mkdir()  # half-written: not a checkpoint
    run.prune_checkpoints(keep=2, protect=run.checkpoints_dir / "step-4")
    assert [p.name for p in run.checkpoints()] == ["step-4", "step-8", "step-10"]
    assert not run.is_done()
    run.finish({"loss": 0.1})
    assert run.is_done() and run.result() == {"loss": 0.1}
