"""Run folders: atomic writes, interrupted-run bookkeeping, checkpoint pruning."""
from __future__ import annotations

import json
import os

import pytest

from lmlab.errors import LmlabError
from lmlab.runs import MARKER, RunDir, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl


def _ckpt(run: RunDir, step: int) -> None:
    """A complete checkpoint folder (weights + trainer state)."""
    d = run.checkpoints_dir / f"step-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"w")
    (d / "trainer_state.json").write_text("{}")


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
    _ckpt(run, 3)
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
        _ckpt(run, s)
    (run.checkpoints_dir / ".step-12.x.tmp").mkdir()  # half-written: not a checkpoint
    run.prune_checkpoints(keep=2, protect=run.checkpoints_dir / "step-4")
    assert [p.name for p in run.checkpoints()] == ["step-4", "step-8", "step-10"]
    assert not run.is_done()
    run.finish({"loss": 0.1})
    assert run.is_done() and run.result() == {"loss": 0.1}


# -- whose folder: the marker, --force, user files ------------------------------------------------
def test_force_never_deletes_a_users_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    for kw in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(LmlabError, match=r"lmlab did not make \(thesis.tex\).*pick another out="):
            RunDir(user).prepare(**kw)
    assert os.listdir(user) == ["thesis.tex"] and (user / "thesis.tex").read_text() == "years of work"


def test_out_at_a_file_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(LmlabError, match="is an existing file"):
        RunDir(f).prepare(force=True)
    assert f.read_text() == "x"


def test_marker_written_and_force_deletes_only_lmlab_runs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = RunDir(empty)
    run.prepare(stage="sft")  # an empty folder is fine to use
    assert (empty / MARKER).read_text() == "sft\n"
    (empty / "result.json").write_text("{}")
    RunDir(empty).prepare(force=True, stage="sft")
    assert sorted(os.listdir(empty)) == [MARKER]  # the old run's files went with --force


def test_runs_made_before_the_marker_still_count(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("lr: 1\n")
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    assert RunDir(old).is_lmlab_run()
    RunDir(old).prepare(force=True)
    assert os.listdir(old) == [MARKER]
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.yaml").write_text("a: 1\n")  # a user's config: not a run
    assert not RunDir(tmp_path / "cfg_only").is_lmlab_run()


# -- leftovers of a kill ------------------------------------------------------------------------------
def test_incomplete_checkpoints_are_not_listed(tmp_path):
    run = RunDir(tmp_path / "r")
    _ckpt(run, 2)
    (run.checkpoints_dir / "step-4").mkdir()  # a pruner killed mid-rmtree (old layout)
    (run.checkpoints_dir / "step-4" / "trainer_state.json").write_text("{}")
    (run.checkpoints_dir / "step-6").mkdir()
    (run.checkpoints_dir / "step-6" / "model.safetensors").write_bytes(b"w")
    assert [p.name for p in run.checkpoints()] == ["step-2"]


def test_prune_renames_before_deleting(tmp_path, monkeypatch):
    import shutil

    run = RunDir(tmp_path / "r")
    run.prepare()
    for s in (1, 2, 3):
        _ckpt(run, s)
    seen = []

    def killed(path, ignore_errors=False):  # the process dies inside rmtree
        seen.append(path.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run.prune_checkpoints(keep=1)
    monkeypatch.undo()
    assert seen == [".step-1.deleting"]
    assert [p.name for p in run.checkpoints()] == ["step-2", "step-3"]  # step-1 is gone as a checkpoint
    RunDir(run.path).prepare(resume=True)
    assert sorted(os.listdir(run.checkpoints_dir)) == ["step-2", "step-3"]


def test_prepare_cleans_kill_leftovers_and_restores_moved_aside(tmp_path):
    run = RunDir(tmp_path / "r")
    run.prepare(stage="pt")
    _ckpt(run, 2)
    ck = run.checkpoints_dir
    for name in (".step-4.abc.tmp", ".best.x1.tmp", ".step-1.deleting"):
        (ck / name).mkdir()
    (run.path / ".final.q.tmp").mkdir()
    (run.path / ".metrics.jsonl.z.tmp").write_text("half")
    (run.path / ".final.old").mkdir()  # killed between atomic_dir's two renames: final/ missing
    (run.path / ".final.old" / "model.safetensors").write_bytes(b"old")
    (ck / "best").mkdir()
    (ck / ".best.old").mkdir()  # best/ in place already: the moved-aside copy goes
    (run.path / "metrics.jsonl").write_text('{"step": 2}\n')
    RunDir(run.path).prepare(resume=True)
    assert sorted(os.listdir(ck)) == ["best", "step-2"]
    assert sorted(os.listdir(run.path)) == [MARKER, "checkpoints", "final", "metrics.jsonl"]
    assert (run.final_dir / "model.safetensors").read_bytes() == b"old"


# -- resume with changed keys (train/stage.py) --------------------------------------------------------
def _interrupted(tmp_path, **keys):
    from lmlab.train.config import SFTConfig
    from lmlab.train.stage import open_stage

    cfg = SFTConfig(out=str(tmp_path / "sft"), **keys)
    _, run, _ = open_stage("sft", cfg, resume=False, force=False)
    _ckpt(run, 4)
    return cfg


def test_resume_takes_lr_and_max_steps_changes(tmp_path):
    import dataclasses

    from lmlab.train.stage import open_stage

    cfg = _interrupted(tmp_path, lr=3e-4, max_steps=10)
    new = dataclasses.replace(cfg, lr=1e-4, max_steps=20, clip_grad=0.5)
    _, run, done = open_stage("sft", new, resume=True, force=False)
    assert done is None
    assert run.resume_changes == {"lr": (3e-4, 1e-4), "max_steps": (10, 20), "clip_grad": (1.0, 0.5)}
    import yaml

    assert yaml.safe_load(run.config_path.read_text())["lr"] == 1e-4  # config.yaml records what runs now
    _, again, _ = open_stage("sft", new, resume=True, force=False)
    assert again.resume_changes == {}  # unchanged now


@pytest.mark.parametrize("key,new,old", [("batch_size", 4, 8), ("lora.rank", 4, 16), ("model", "m2", "transformer:tiny"),
                                         ("seed", 1, 0)])
def test_resume_refuses_changes_that_make_another_run(tmp_path, key, new, old):
    import dataclasses

    from lmlab.errors import ConfigError
    from lmlab.train.config import LoraSettings
    from lmlab.train.stage import open_stage

    cfg = _interrupted(tmp_path)
    saved = (tmp_path / "sft" / "config.yaml").read_text()
    changed = (dataclasses.replace(cfg, lora=LoraSettings(rank=new)) if key == "lora.rank"
               else dataclasses.replace(cfg, **{key: new}))
    with pytest.raises(ConfigError, match=rf"key {key} changed from {old!r} to {new!r}.*--force to start over, "
                                          rf"or restore {key}={old}"):
        open_stage("sft", changed, resume=True, force=False)
    assert (tmp_path / "sft" / "config.yaml").read_text() == saved  # nothing rewritten
    _, run, _ = open_stage("sft", changed, resume=False, force=True)  # the fix printed works
    assert run.latest_checkpoint() is None


def test_atomic_dir_never_replaces_a_folder_holding_other_files(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    with pytest.raises(LmlabError, match=r"holds thesis.tex.*pick another out="), atomic_dir(docs) as d:
        (d / "model.safetensors").write_bytes(b"w")  # e.g. `lmlab export M out=docs`
    assert os.listdir(docs) == ["thesis.tex"] and sorted(os.listdir(tmp_path)) == ["docs"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(LmlabError, match="existing file"), atomic_dir(tmp_path / "f"):
        pass
    assert (tmp_path / "f").read_text() == "x"
    for content in (b"1", b"2"):  # an earlier build of the same files is replaced
        with atomic_dir(tmp_path / "export") as d:
            (d / "model.safetensors").write_bytes(content)
    assert (tmp_path / "export" / "model.safetensors").read_bytes() == b"2"


def test_truncate_drops_the_end_of_run_eval_logged_after_the_last_checkpoint(tmp_path):
    run = RunDir(tmp_path / "r")
    for row in ({"step": 9, "split": "train", "loss": 1.0}, {"step": 9, "split": "val", "loss": 0.9},
                {"step": 10, "split": "train", "loss": 0.8}, {"step": 10, "split": "val", "loss": 0.7}):
        run.log_metrics(row)
    _ckpt(run, 10)
    (run.checkpoints_dir / "step-10" / "trainer_state.json").write_text('{"step": 10, "last_eval_step": 9}')
    run.truncate_metrics(10)  # the val row at 10 came after checkpoint 10: resume evaluates again
    assert [(r["step"], r["split"]) for r in run.metrics()] == [(9, "train"), (9, "val"), (10, "train")]
    run.log_metrics({"step": 10, "split": "val", "loss": 0.7})
    run.truncate_metrics(10, last_eval_step=10)  # evaluated before the checkpoint: kept
    assert [(r["step"], r["split"]) for r in run.metrics()][-1] == (10, "val")


def test_read_jsonl_keeps_rows_whose_strings_hold_unicode_line_separators(tmp_path):
    """Sampled text can hold U+0085 / U+2028 (an IMDB review did); json.dumps(ensure_ascii=False)
    writes them raw, and only "\\n" separates JSON Lines rows (str.splitlines() cut the row in two)."""
    import json

    from lmlab.runs import read_jsonl

    rows = [{"completion": "a nule of\x85 Fecoffs", "reward": 1.5}, {"completion": "line\u2028sep\u2029para\x1c", "reward": -2.0}]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_jsonl(path) == rows
    path.write_text(path.read_text(encoding="utf-8") + '{"torn": ', encoding="utf-8")  # a crash mid-append
    assert read_jsonl(path) == rows
