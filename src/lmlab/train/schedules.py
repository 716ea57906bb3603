"""Learning-rate schedules: linear warm-up, then cosine, linear or constant; pure functions of step.

A schedule is a multiplier of the peak learning rate. Being a pure function of the optimizer step
(no hidden state beyond the step count) is what makes resume exact: the restored scheduler only
needs its step, and tests can check values at key steps by hand.

Step convention: `step` counts optimizer updates already done, so the first update uses
`lr_factor(0, ...)`. Warm-up starts at 1/warmup (not 0), so no update is wasted at lr = 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("cosine", "linear", "constant")


def warmup_steps_for(total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Warm-up length: explicit steps win; else a fraction of the run (rounded up)."""
    if warmup_steps > 0:
        return warmup_steps
    return math.ceil(warmup_ratio * total_steps) if warmup_ratio > 0 else 0


def lr_factor(step: int, total_steps: int, *, schedule: str = "cosine", warmup: int = 0,
              min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak lr for the update after `step` updates.

    - warm-up (step < warmup): (step + 1) / warmup, reaching 1.0 on the last warm-up update;
    - cosine: min + (1 - min) * (1 + cos(pi * p)) / 2 (Loshchilov & Hutter 2017, SGDR eq. 5
      without restarts), where p in [0, 1] is the progress after warm-up;
    - linear: min + (1 - min) * (1 - p);
    - constant: 1.
    p = (step - warmup) / (total_steps - warmup), so the last update (step = total - 1) is just
    above `min_lr_ratio`, and steps past the end stay at `min_lr_ratio`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, *, schedule: str = "cosine",
                   warmup: int = 0, min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; its state_dict is just the step count, so resume is exact."""
    fn: Callable[[int], float] = lambda s: lr_factor(  # noqa: E731 - a closure over the knobs
        s, total_steps, schedule=schedule, warmup=warmup, min_lr_ratio=min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
