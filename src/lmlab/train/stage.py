"""What every training stage does before its first step: name and prepare its run folder.

One rule for all stages: a finished stage (result.json present) is returned as it is unless
`force`; an interrupted one needs `resume` or `force` (RunDir.prepare says so); the resolved
config is written before any work, and the global RNG is seeded.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TypeVar

import torch

from lmlab.config import to_dict
from lmlab.progress import log
from lmlab.runs import RunDir, RunResult

C = TypeVar("C")


def default_out(stage: str, model: str) -> str:
    """runs/<stage>-<model folder or architecture name>, e.g. runs/sft-pt or runs/pt-transformer-tiny."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or model).strip("-")
    return f"runs/{stage}-{slug or 'model'}"


def open_stage(stage: str, cfg: C, *, resume: bool, force: bool) -> tuple[C, RunDir, RunResult | None]:
    """(cfg with `out` filled in, its RunDir, the earlier result if the stage already finished)."""
    cfg = dataclasses.replace(cfg, out=cfg.out or default_out(stage, cfg.model))  # type: ignore[attr-defined]
    rundir = RunDir(cfg.out)  # type: ignore[attr-defined]
    if rundir.is_done() and not force:  # finished: --resume has nothing left to do
        log(f"{rundir.path} is finished (result.json); pass --force to run it again")
        return cfg, rundir, RunResult(rundir.path, rundir.result())
    rundir.prepare(resume=resume, force=force)
    rundir.save_config(to_dict(cfg))
    torch.manual_seed(cfg.seed)  # type: ignore[attr-defined]
    return cfg, rundir, None
