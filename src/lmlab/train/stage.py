"""What every training stage does before its first step: name and prepare its run folder.

One rule for all stages: a finished stage (result.json present) is returned as it is unless
`force`; an interrupted one needs `resume` or `force` (RunDir.prepare says so); the resolved
config is written before any work, and the global RNG is seeded.

On `--resume`, the new config is compared with the saved one. Keys that only steer the rest of
the run (how long, how fast, how often to log/eval/save: `RESUMABLE_KEYS`) may change and take
effect from the resumed step: they are recorded in `rundir.resume_changes` for the trainer to
apply and log. Any other change (model, data, batch shape, seed, tuning …) would make the resumed
run a different run than its checkpoints, so it is refused by name with the fix.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch
import yaml

from lmlab.config import to_dict
from lmlab.devices import is_main_process, main_process_first
from lmlab.errors import ConfigError
from lmlab.progress import log
from lmlab.runs import RunDir, RunResult, default_out

C = TypeVar("C")

RESUMABLE_KEYS = frozenset({
    "lr", "max_steps", "epochs", "clip_grad", "eval_every", "save_every", "log_every", "eval_batches",
    "save_total_limit", "early_stopping_patience", "keep_best", "warmup_steps", "warmup_ratio", "min_lr_ratio",
    "samples", "device", "precision", "compile", "gradient_checkpointing", "out", "launcher", "num_processes",
    "grad_accum",  # with another number of processes; the loop checks the global batch is unchanged
})
"""Keys a resumed run may change; they take effect from the step it resumes at."""


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'lora': {'rank': 8}} → {'lora.rank': 8}."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, new value)} for every key whose value differs (keys missing from
    `saved`, e.g. added by a newer lmlab, are not changes). `new` goes through YAML like `saved` did."""
    old_flat = _flat(saved)
    new_flat = _flat(yaml.safe_load(yaml.safe_dump(new)))
    return {k: (old_flat[k], v) for k, v in new_flat.items() if k in old_flat and old_flat[k] != v}


def check_resume_changes(rundir: RunDir, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """The changed keys that take effect on resume; a ConfigError naming every key that may not change."""
    if not rundir.config_path.is_file():
        return {}
    saved = yaml.safe_load(rundir.config_path.read_text(encoding="utf-8")) or {}
    changes = config_changes(saved, to_dict(cfg))
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
    if refused:
        raise ConfigError("\n".join(
            f"{rundir.path}: key {k} changed from {old!r} to {new!r}; a resumed run must keep it: rerun without "
            f"--resume and with --force to start over, or restore {k}={old}"
            for k, (old, new) in refused.items()
        ))
    changes.pop("out", None)
    return changes


def open_stage(stage: str, cfg: C, *, resume: bool, force: bool) -> tuple[C, RunDir, RunResult | None]:
    """(cfg with `out` filled in, its RunDir, the earlier result if the stage already finished)."""
    cfg = dataclasses.replace(cfg, out=cfg.out or default_out(stage, cfg.model))  # type: ignore[attr-defined]
    rundir = RunDir(cfg.out)  # type: ignore[attr-defined]
    if rundir.is_done() and not force:  # finished: --resume has nothing left to do
        log(f"{rundir.path} is finished (result.json); pass --force to run it again")
        return cfg, rundir, RunResult(rundir.path, rundir.result())
    if resume and not force and rundir.path.is_dir() and rundir.is_lmlab_run() and rundir.latest_checkpoint():
        rundir.resume_changes = check_resume_changes(rundir, cfg)
    with main_process_first():  # under accelerate launch, one process prepares the folder
        if is_main_process():
            rundir.prepare(resume=resume, force=force, stage=stage)
            for key, (old, new) in rundir.resume_changes.items():
                log(f"resume: {key} changed from {old} to {new}; it takes effect from the resumed step")
            rundir.save_config(to_dict(cfg))
    torch.manual_seed(cfg.seed)  # type: ignore[attr-defined]
    return cfg, rundir, None
