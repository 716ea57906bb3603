"""Run folders: where every stage writes everything it made, atomically.

Layout of one stage's folder (`runs/<name>/<stage>/`)::

    config.yaml        the resolved config (after YAML + overrides + defaults)
    metrics.jsonl      one JSON object per line, at least {"step", "loss"} for training
    tb/                TensorBoard event files
    checkpoints/step-N/  model + optimizer + scheduler + RNG + data position (latest few kept)
    final/             the trained model in Hugging Face format (save_pretrained)
    samples.jsonl      generations made during or after training
    result.json        final metrics; its presence marks the stage as finished

Every file is written to a temporary name in the same folder and then renamed, so a run killed at
any moment leaves either the old file or the new one, never half of one. Checkpoint folders are
built under a temporary name and renamed as a whole for the same reason, and deleted by renaming
them to a hidden `.step-N.deleting` first, so a kill mid-delete never leaves a `step-N` without its
weights. Hidden leftovers of a kill (`.*.tmp`, `.*.deleting`, `.*.old`) are cleaned up when the run
is resumed or forced.

A folder lmlab creates for a run holds a marker file (`.lmlab-run`, naming the stage). `--force`
deletes a folder only when it is lmlab's (the marker, or an older run's config.yaml + metrics.jsonl
or result.json); a folder holding anything else is never deleted and never written into.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab.errors import LmlabError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temp file + fsync + rename in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name; rename it into place only if the body succeeds.

    An existing directory at `path` is replaced (moved aside, then deleted) only after the new one
    is complete, so a crash never leaves `path` missing or half-written. It is replaced only by a
    folder of the same entries (an earlier export, checkpoint, final/ …): a folder holding anything
    the new one does not (a user's files, `out=` pointed at the wrong place) is refused, never deleted.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LmlabError(f"{path} is an existing file, not a folder; pick another out=")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            foreign = sorted(set(os.listdir(path)) - set(os.listdir(tmp)))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" … ({len(foreign)} entries)" if len(foreign) > 5 else "")
                raise LmlabError(f"{path} exists and holds {shown}, which lmlab did not just write; it would be "
                                 "deleted by replacing the folder: pick another out= or empty that folder")
            old = path.parent / f".{path.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, ignoring a torn last line (a crash mid-append)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    # JSON Lines are separated by "\n" only: str.splitlines() would also cut at U+0085, U+2028 ...,
    # which JSON strings may hold raw (ensure_ascii=False), e.g. in sampled text
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise LmlabError(f"{path}:{i + 1}: not valid JSON") from None
    return rows


MARKER = ".lmlab-run"
"""The file that marks a folder as a run lmlab created (its text: the stage name)."""
CHECKPOINT_WEIGHTS = ("model.safetensors", "accelerate")
"""A checkpoint's weights: one safetensors file, or accelerate's folder of shards (FSDP / DeepSpeed)."""


def is_complete_checkpoint(path: Path) -> bool:
    """Its weights and trainer_state.json are there (a folder killed mid-delete lacks one of them)."""
    return (path / "trainer_state.json").is_file() and any((path / w).exists() for w in CHECKPOINT_WEIGHTS)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class RunDir:
    """One stage's output folder; knows its files and whether the stage finished."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.resume_changes: dict[str, tuple[Any, Any]] = {}
        """Keys changed on --resume that take effect, {key: (old, new)}; set by train.stage.open_stage."""

    # -- files ------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- state ------------------------------------------------------------------------------
    def is_done(self) -> bool:
        return self.result_path.exists()

    def result(self) -> dict[str, Any]:
        return json.loads(self.result_path.read_text()) if self.is_done() else {}

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first: `step-N` folders holding their weights and trainer state."""
        if not self.checkpoints_dir.exists():
            return []
        found = [p for p in self.checkpoints_dir.glob("step-*") if p.name[5:].isdigit() and is_complete_checkpoint(p)]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def is_lmlab_run(self) -> bool:
        """Did lmlab make this folder? The marker, or (runs made before it) config.yaml with metrics or a result."""
        if (self.path / MARKER).is_file():
            return True
        return self.config_path.is_file() and (self.metrics_path.is_file() or self.result_path.is_file())

    # -- writing ----------------------------------------------------------------------------
    def prepare(self, *, resume: bool = False, force: bool = False, stage: str = "run") -> None:
        """Create the folder (with its marker); refuse to silently overwrite or mix runs.

        A finished stage must be forced to re-run; an interrupted one must be resumed or forced,
        so work is never thrown away by accident. A folder lmlab did not make is never deleted,
        and a run is never written beside a user's files.
        """
        if self.path.exists() and not self.path.is_dir():
            raise LmlabError(f"out={self.path} is an existing file, not a folder; pick another out= for the run folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.is_lmlab_run():
            entries = sorted(p.name for p in self.path.iterdir())
            shown = ", ".join(entries[:5]) + (f" … ({len(entries)} entries)" if len(entries) > 5 else "")
            raise LmlabError(
                f"out={self.path} exists and holds files lmlab did not make ({shown}); lmlab never writes a run "
                f"beside them{' nor deletes them with --force' if force else ''}: pick another out= or empty that folder"
            )
        if force and self.path.exists():
            shutil.rmtree(self.path)
        elif self.path.exists() and not resume and not self.is_done() and self.latest_checkpoint():
            raise LmlabError(
                f"{self.path} holds an interrupted run (last checkpoint {self.latest_checkpoint().name}); "
                "pass --resume to continue it or --force to start over"
            )
        elif self.path.exists() and not resume and not self.is_done() and self.metrics_path.exists():
            # Interrupted before its first checkpoint: nothing to resume, start clean.
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.clean_leftovers()
        if not (self.path / MARKER).is_file():
            atomic_write_text(self.path / MARKER, stage + "\n")

    def clean_leftovers(self) -> list[Path]:
        """Undo what a kill mid-write left: hidden temp files and folders (`.*.tmp`, a sharded
        checkpoint's `.step-N.partial`), half-deleted checkpoints (`.step-N.deleting`).

        `.NAME.old` is the previous version of NAME moved aside by `atomic_dir`; when NAME itself is
        missing (killed between the two renames) it is put back, otherwise it is deleted. Returns
        what was removed.
        """
        removed = []
        for folder in (self.path, self.checkpoints_dir):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                name = entry.name
                if not name.startswith(".") or name == MARKER:
                    continue
                if name.endswith(".old") and not (folder / name[1:-4]).exists():
                    os.replace(entry, folder / name[1:-4])
                    continue
                if name.endswith((".tmp", ".partial", ".deleting", ".old")):
                    _remove(entry)
                    removed.append(entry)
            _fsync_dir(folder)
        return removed

    def save_config(self, config: dict[str, Any]) -> None:
        atomic_write_yaml(self.config_path, config)

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON line (appends of one short line are effectively atomic)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_metrics(self, last_step: int, last_eval_step: int | None = None) -> None:
        """On resume, drop metric rows logged after the checkpoint we resume from.

        Rows of step `last_step` itself stay, except evaluation rows after `last_eval_step`: the
        end-of-run evaluation is logged at the last step but after its checkpoint, so a run killed
        after it evaluates again on resume and must not keep the first row. `last_eval_step`
        defaults to the one saved in checkpoints/step-`last_step`/trainer_state.json.
        """
        if last_eval_step is None:
            state = self.checkpoints_dir / f"step-{last_step}" / "trainer_state.json"
            saved = json.loads(state.read_text()) if state.is_file() else {}
            last_eval_step = saved.get("last_eval_step", last_step)
        rows = [r for r in read_jsonl(self.metrics_path) if r.get("step", 0) <= last_step
                and not (r.get("split") == "val" and r.get("step", 0) > last_eval_step)]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def finish(self, result: dict[str, Any]) -> None:
        """Write result.json, the "finished" marker: the last thing a stage writes (main process only)."""
        from lmlab.devices import is_main_process

        if is_main_process():
            atomic_write_json(self.result_path, result)

    def prune_checkpoints(self, keep: int, protect: Path | None = None) -> None:
        """Keep the newest `keep` checkpoints (and `protect`, e.g. the best one).

        Each old checkpoint is first renamed to a hidden `.step-N.deleting` (one atomic step), then
        deleted, so a kill mid-delete leaves no `step-N` without its weights.
        """
        ckpts = self.checkpoints()
        for old in ckpts[: max(0, len(ckpts) - keep)]:
            if protect is not None and old.resolve() == Path(protect).resolve():
                continue
            doomed = old.parent / f".{old.name}.deleting"
            _remove(doomed)
            os.replace(old, doomed)
            _fsync_dir(old.parent)
            _remove(doomed)


@dataclass
class RunResult:
    """What a stage returns: its folder and its final metrics (also in result.json)."""

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Path:
        return self.path / "final"


def default_out(stage: str, model: str) -> str:
    """runs/<stage>-<model folder or architecture name>, e.g. runs/sft-pt or runs/pt-transformer-tiny."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model).strip("-")
    return f"runs/{stage}-{slug or 'model'}"
