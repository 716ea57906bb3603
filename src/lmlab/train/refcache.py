"""Reference log-probs computed once, before training (`precompute_ref=true`).

DPO and KTO need log π_ref(y|x) of every row, but π_ref never changes. Computing it once and
storing two numbers per pair (or feedback example) means the reference model is not in memory
while the policy trains (about half of DPO's extra memory over SFT, ALIGNMENT-NOTES §3.1) and a
step costs one forward pass less.

The pass walks the training source's first epoch (or as much of it as the run will read),
micro-batch by micro-batch, with the same
function the steps use on the fly (`preference_steps.reference_logps`), and scatters each row's
value to its unit (`batch["index"]`). In the first epoch every batch is then exactly the one
training will see (same rows, same padding), so cached values are bitwise equal to on-the-fly
ones; later epochs regroup the rows, where an on-the-fly pass would differ only by float
rounding from padding to another width.

The file (`ref_logps.pt`, `ref_logps_eval.pt` in the run folder) is written atomically every
`save_every` micro-batches with how far it got: a killed pass continues where it stopped and a
rerun of the stage reuses the finished cache. A fingerprint of the reference model's name and the
rows' tokens guards against reusing a cache that belongs to other data or another reference.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmlab.progress import log, progress_bar
from lmlab.runs import atomic_write_bytes


def fingerprint(source: Any, reference: str) -> str:
    """A digest of the reference's name and every unit's rows (tokens and labels), in order."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{reference}\x00{source.batch_size}\x00{source.seed}\x00{type(source).__name__}".encode())
    for unit in source.examples:
        for side in (source.first, source.second):
            row = getattr(unit, side)
            h.update(torch.tensor(row.input_ids, dtype=torch.int64).numpy().tobytes())
            h.update(torch.tensor(row.labels, dtype=torch.int64).numpy().tobytes())
            h.update(b"|")
    return h.hexdigest()


def _load(path: Path, key: str, n: int) -> dict[str, Any]:
    if path.exists():
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # a torn or foreign file: start over
            state = None
        if state is not None and state.get("fingerprint") == key and tuple(state["values"].shape) == (n, 2):
            return state
        log(f"{path.name}: cached reference log-probs belong to other data or another reference; recomputing")
    return {"fingerprint": key, "done": 0, "values": torch.full((n, 2), float("nan"), dtype=torch.float32)}


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def precompute(source: Any, logps_fn: Callable[[dict[str, Tensor]], Tensor], path: Path, reference: str, *,
               upto: int | None = None, to_device: Callable[[dict[str, Tensor]], dict[str, Tensor]] = lambda b: b,
               save_every: int = 50) -> Tensor:
    """(N, 2) reference log-probs of the units of `source` (a `TwoRowBatches`), resumable in `path`.

    `logps_fn(batch) -> (2B,)` is the reference log-prob of every row of a micro-batch. `upto`:
    only the first `upto` micro-batches of the epoch (what a run shorter than one epoch reads);
    the other units stay NaN until a later call asks for them (a resumed run with more steps
    continues the same file). The source's own cache must be unset while this runs.
    """
    if getattr(source, "ref", None) is not None:
        raise ValueError("precompute: the source already carries reference log-probs")
    n = len(source.examples)
    state = _load(path, fingerprint(source, reference), n)
    total = len(source) if upto is None else min(upto, len(source))
    if state["done"] < total:
        if state["done"]:
            log(f"{path.name}: continuing the reference pass at micro-batch {state['done']}/{total}")
        values: Tensor = state["values"]
        with progress_bar(total, f"reference log-probs → {path.name}") as bar:
            bar.update(state["done"])
            for i in range(state["done"], total):
                batch = source.get(i)
                logps = logps_fn(to_device(batch)).detach().float().cpu()  # (2B,)
                idx = batch["index"]
                B = idx.numel()
                values[idx, 0] = logps[:B]
                values[idx, 1] = logps[B:]
                state["done"] = i + 1
                if state["done"] % save_every == 0 or state["done"] == total:
                    _save(path, state)
                bar.update(1)
    values = state["values"]
    done = torch.cat([source.get(i)["index"] for i in range(total)]) if total < len(source) else slice(None)
    if bool(torch.isnan(values[done]).any()):
        raise RuntimeError(f"{path}: {int(torch.isnan(values[done]).any(-1).sum())} units have no reference log-prob "
                           "after the pass (delete the file and rerun)")
    return values
