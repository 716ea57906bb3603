"""Schedule values at the steps that matter, worked by hand."""
from __future__ import annotations

import math

import pytest
import torch

from lmlab.train.schedules import lr_factor, make_scheduler, warmup_steps_for


def test_warmup_then_cosine():
    f = lambda s: lr_factor(s, 110, schedule="cosine", warmup=10, min_lr_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)  # first post-warm-up step: peak
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(π/2) = 0
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_linear_and_constant():
    assert lr_factor(0, 100, schedule="linear", min_lr_ratio=0.0) == pytest.approx(1.0)
    assert lr_factor(25, 100, schedule="linear", min_lr_ratio=0.0) == pytest.approx(0.75)
    assert lr_factor(50, 100, schedule="linear", min_lr_ratio=0.2) == pytest.approx(0.6)
    assert lr_factor(3, 100, schedule="constant", warmup=4) == pytest.approx(1.0)
    assert lr_factor(99, 100, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(0, 10, schedule="cosin")


def test_warmup_ratio_and_scheduler_state():
    assert warmup_steps_for(100, 0, 0.05) == 5 and warmup_steps_for(100, 7, 0.5) == 7 and warmup_steps_for(10, 0, 0) == 0
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2.0)
    sched = make_scheduler(opt, 20, schedule="cosine", warmup=0, min_lr_ratio=0.0)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 5 / 20)))
    opt2 = torch.optim.AdamW([p], lr=2.0)
    sched2 = make_scheduler(opt2, 20, schedule="cosine", warmup=0, min_lr_ratio=0.0)
    sched2.load_state_dict(sched.state_dict())
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
