"""Gradient clipping in the training loop equals a hand-clipped reference, and clipping changes the result.

The model is y = W x + b with a mean squared error, so the gradients have a closed form (no
autograd in the reference): for residuals r = W x + b - y over N examples of width 2,
dL/dW = (2 / 2N) Σ r xᵀ and dL/db = (2 / 2N) Σ r. The global norm is clipped the way
`torch.nn.utils.clip_grad_norm_` documents (g · max_norm / (‖g‖ + 1e-6) when ‖g‖ exceeds max_norm),
then AdamW (Loshchilov & Hutter 2019, decoupled decay on W only, as the loop's groups do) is written
out step by step. Adam does not see a factor that scales every gradient alike (its first step is
g / |g| per coordinate), so the test runs two updates, the first clipped and the second not: the
parameters then depend on the clipping threshold itself, not only on whether clipping is on.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmlab.runs import RunDir
from lmlab.train.config import TrainConfig
from lmlab.train.steps import StepOutput
from lmlab.train.trainer import Trainer

LR, WD, BETAS, EPS = 0.05, 0.1, (0.9, 0.95), 1e-8
CLIP = 2.0
W0 = [[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]]
B0 = [0.05, -0.02]


def batches() -> list[dict[str, torch.Tensor]]:
    """Two fixed micro-batches (4 examples, 3 features, 2 targets): large targets first (a gradient
    norm above CLIP), then small ones (below it)."""
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(4, 3, generator=g), "y": scale * torch.randn(4, 2, generator=g)} for scale in (5.0, 0.5)]


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(W0))
        self.bias = nn.Parameter(torch.tensor(B0))


def mse_step(model: nn.Module, batch: dict[str, torch.Tensor], ctx) -> StepOutput:
    pred = batch["x"] @ model.weight.T + model.bias
    loss = ((pred - batch["y"]) ** 2).mean()
    return StepOutput(loss=loss, weight=float(len(batch["x"])), tokens=len(batch["x"]))


class Fixed:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def get(self, i):
        return self.items[i % len(self.items)]


def trained(tmp_path, clip_grad: float | None) -> tuple[list[float], list[float]]:
    """(W row by row, then b; the logged gradient norms) after two updates of the real loop."""
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=LR, weight_decay=WD, betas=list(BETAS), schedule="constant",
                      warmup_steps=0, clip_grad=clip_grad, log_every=1, device="cpu", precision="fp32", keep_best=False)
    model = Linear()
    run = RunDir(tmp_path / f"clip-{clip_grad}")
    Trainer(model, mse_step, Fixed(batches()), cfg, run).fit()
    norms = [r["grad_norm"] for r in run.metrics() if r["split"] == "train"]
    return [*model.weight.flatten().tolist(), *model.bias.tolist()], norms


def reference(clip_grad: float | None) -> tuple[list[float], list[float]]:
    """Plain-Python gradients, clipping and AdamW for the same two updates."""
    W = [row[:] for row in W0]
    b = B0[:]
    params = [("W", i, j) for i in range(2) for j in range(3)] + [("b", i, None) for i in range(2)]
    m = dict.fromkeys(params, 0.0)
    v = dict.fromkeys(params, 0.0)
    norms = []
    for t, batch in enumerate(batches(), start=1):
        x, y = batch["x"].tolist(), batch["y"].tolist()
        n = len(x)
        grad = dict.fromkeys(params, 0.0)
        for xs, ys in zip(x, y, strict=True):
            for i in range(2):
                r = sum(W[i][j] * xs[j] for j in range(3)) + b[i] - ys[i]
                for j in range(3):
                    grad["W", i, j] += 2 * r * xs[j] / (2 * n)
                grad["b", i, None] += 2 * r / (2 * n)
        norm = math.sqrt(sum(g * g for g in grad.values()))
        norms.append(norm)
        if clip_grad is not None and norm > clip_grad:
            grad = {k: g * clip_grad / (norm + 1e-6) for k, g in grad.items()}
        for k in params:
            kind, i, j = k
            value = W[i][j] if kind == "W" else b[i]
            if kind == "W":  # decoupled weight decay on matrices only
                value *= 1 - LR * WD
            m[k] = BETAS[0] * m[k] + (1 - BETAS[0]) * grad[k]
            v[k] = BETAS[1] * v[k] + (1 - BETAS[1]) * grad[k] ** 2
            m_hat, v_hat = m[k] / (1 - BETAS[0] ** t), v[k] / (1 - BETAS[1] ** t)
            value -= LR * m_hat / (math.sqrt(v_hat) + EPS)
            if kind == "W":
                W[i][j] = value
            else:
                b[i] = value
    return [*W[0], *W[1], *b], norms


def test_a_clipped_update_equals_the_hand_clipped_reference(tmp_path):
    params, norms = trained(tmp_path, clip_grad=CLIP)
    want, want_norms = reference(clip_grad=CLIP)
    assert want_norms[0] > CLIP > want_norms[1]  # the first update is clipped, the second is not
    assert norms == pytest.approx(want_norms, rel=1e-5)  # the logged norm is the one before clipping
    assert params == pytest.approx(want, abs=1e-6)


def test_clipping_changes_the_update_and_off_means_off(tmp_path):
    params, _ = trained(tmp_path, clip_grad=None)
    unclipped, _ = reference(clip_grad=None)
    assert params == pytest.approx(unclipped, abs=1e-6)
    clipped, _ = reference(clip_grad=CLIP)
    moved = max(abs(p - q) for p, q in zip(unclipped, clipped, strict=True))
    assert moved > 1e-3  # far beyond the 1e-6 tolerance: an unclipped loop cannot pass the test above
    other, _ = reference(clip_grad=2 * CLIP)
    assert max(abs(p - q) for p, q in zip(other, clipped, strict=True)) > 1e-3  # nor one clipping elsewhere
