"""Kill points for the kill harness (tests/reliability/test_kill_resume.py).

Python imports this module at start-up only when this folder is on PYTHONPATH, which the harness
sets for the `lmlab train` processes it starts; nothing in lmlab knows about it. It wraps the file
operations lmlab's run folders are built from, so a process can SIGKILL itself at an exact moment:

    LMLAB_KILL=write:N     opening the N-th file inside a checkpoint being built (.step-K.*.tmp): mid-write
    LMLAB_KILL=publish:N   the N-th rename of a built checkpoint into place, just before it
    LMLAB_KILL=prune:N     the N-th checkpoint deletion, after part of its files are gone: mid-prune
    LMLAB_KILL=swap:N      the N-th replacement of an existing folder (best/, final/), between its two renames
    LMLAB_KILL=finish:1    the rename of result.json into place, just before it: after the last step
    LMLAB_KILL=time:S      S seconds after start, wherever the process is (mid-step, mid-eval, mid-save)

With LMLAB_KILL_COUNT=PATH it kills nothing and writes {kind: count, "seconds": wall time} to PATH
at exit, so the harness knows how many events of each kind an uninterrupted run has.
"""
from __future__ import annotations

import atexit
import builtins
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

_PLAN = os.environ.get("LMLAB_KILL", "")
_COUNT = os.environ.get("LMLAB_KILL_COUNT", "")
_START = time.monotonic()
_seen: dict[str, int] = {}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _event(kind: str) -> bool:
    """Count an event of `kind`; True when the plan says to die at this one."""
    _seen[kind] = _seen.get(kind, 0) + 1
    want, _, n = _PLAN.partition(":")
    return want == kind and n.isdigit() and _seen[kind] == int(n)


def _in_checkpoint_build(path: object) -> bool:
    parent = Path(os.fsdecode(path)).parent.name if isinstance(path, (str, bytes, os.PathLike)) else ""
    return parent.startswith(".step-") and parent.endswith(".tmp")


_open = builtins.open


def _guarded_open(file, mode="r", *args, **kwargs):
    if any(m in mode for m in "wax") and _in_checkpoint_build(file) and _event("write"):
        _die()
    return _open(file, mode, *args, **kwargs)


_replace = os.replace


def _guarded_replace(src, dst, *args, **kwargs):
    s, d = Path(os.fsdecode(src)).name, Path(os.fsdecode(dst)).name
    if s.startswith(".step-") and s.endswith(".tmp") and d.startswith("step-") and _event("publish"):
        _die()
    if d == "result.json" and _event("finish"):
        _die()
    _replace(src, dst, *args, **kwargs)
    if d.startswith(".") and d.endswith(".old") and _event("swap"):
        _die()


_rmtree = shutil.rmtree


def _guarded_rmtree(path, *args, **kwargs):
    p = Path(os.fsdecode(path))
    if p.name.endswith(".deleting") and p.is_dir() and _event("prune"):
        files = sorted(f for f in p.rglob("*") if f.is_file())
        for f in files[: max(1, len(files) // 2)]:
            f.unlink()
        _die()
    return _rmtree(path, *args, **kwargs)


if _PLAN or _COUNT:
    builtins.open = _guarded_open
    os.replace = _guarded_replace
    shutil.rmtree = _guarded_rmtree
    if _PLAN.startswith("time:"):
        timer = threading.Timer(float(_PLAN.partition(":")[2]), _die)
        timer.daemon = True
        timer.start()
    if _COUNT:
        atexit.register(lambda: _open(_COUNT, "w").write(json.dumps({**_seen, "seconds": time.monotonic() - _START})))
