"""Which torch device a `device=` key means: one rule for training, evaluation and serving."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lmlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` → CUDA, else Apple MPS, else CPU; an explicit device that is absent is an error
    that says what to use instead (not a crash deep inside the first forward pass)."""
    name = name or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps") if mps is not None and mps.is_available() else torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but MPS is not available; use device=auto or device=cpu")
    if kind not in DEVICES:
        raise ConfigError(f"device must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)


# -- several processes (accelerate launch / torchrun) ---------------------------------------------------
def world_size() -> int:
    """Processes of this run (torchrun / accelerate launch set WORLD_SIZE); 1 when run directly."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes the run folder (global rank 0); always True in a plain run."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process (no-op in a plain run). The first call joins the process group that
    the Trainer's accelerator later reuses."""
    if world_size() > 1:
        from accelerate import PartialState

        # cpu= must match what the Trainer's Accelerator asks for later (the state is shared)
        PartialState(cpu=resolve_device("auto").type == "cpu").wait_for_everyone()


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (trains a tokenizer, writes caches, prepares the run
    folder); the others run it afterwards and find its files, so no two processes write one file."""
    if world_size() == 1:
        yield
        return
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()
