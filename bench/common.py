"""Shared helpers of the bench/ scripts: options, timing by forward stamps, FLOPs and MFU, output.

Every bench script ends by printing one JSON object of its figures (ratios named `<what>_vs_<baseline>`);
`emit` does that, after a human-readable table from `table`.

Timing: `ForwardClock` stamps the wall time at the start of every training forward pass through a
forward pre-hook, so two training loops are timed by the same method whatever their own
bookkeeping: the time from forward `warmup` to forward `warmup + steps` covers exactly `steps`
optimizer steps, including everything each loop does between forwards (backward, clipping,
optimizer, logging).

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, appendix B): 6 · N · tokens/s / peak,
N the parameters used in matrix products per token (the input embedding lookup is not one).
The peak comes from `LMLAB_PEAK_FLOPS` if set (e.g. 989e12 for an H100 in bf16), else it is
*measured*: the best of a few large matrix products in the training dtype on this device. On a
shared CPU that measured peak is the honest ceiling (a datasheet peak is unreachable there), so
CPU MFU reads as "fraction of the GEMM throughput this machine gave us".
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Any

import torch
from torch import nn


def options(defaults: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """`key=value` arguments over `defaults`; an unknown key is refused with the closest name."""
    from lmlab.config import closest, parse_overrides

    given = parse_overrides(list(sys.argv[1:] if argv is None else argv))
    for key in given:
        if key not in defaults:
            hint = closest(key, defaults)
            raise SystemExit(f"unknown option {key}" + (f"; did you mean {hint}?" if hint else "") + f" (options: {', '.join(defaults)})")
    return {**defaults, **given}


class ForwardClock:
    """Stamps time.perf_counter() at each forward of `model` made with grad enabled (training)."""

    def __init__(self, model: nn.Module):
        self.stamps: list[float] = []
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())

    def seconds(self, warmup: int, steps: int, forwards_per_step: int = 1) -> float:
        a, b = warmup * forwards_per_step, (warmup + steps) * forwards_per_step
        if len(self.stamps) <= b:
            raise RuntimeError(f"need {b + 1} forward stamps, got {len(self.stamps)}: run one step more than warmup + steps")
        return self.stamps[b] - self.stamps[a]

    def step_times(self, warmup: int, steps: int, forwards_per_step: int = 1) -> list[float]:
        """Seconds of each timed step (forward to next step's forward)."""
        self.seconds(warmup, steps, forwards_per_step)  # checks there are enough stamps
        at = [self.stamps[(warmup + i) * forwards_per_step] for i in range(steps + 1)]
        return [b - a for a, b in itertools.pairwise(at)]

    def close(self) -> None:
        self._handle.remove()


def matmul_params(model: nn.Module) -> int:
    """Parameters used in matrix products per token: all but an untied input embedding."""
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and not (out is not None and out.weight is emb.weight):
        total -= emb.weight.numel()
    return total


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> tuple[float, str]:
    """(FLOP/s, where it came from): $LMLAB_PEAK_FLOPS, else the best measured n×n matmul rate."""
    env = os.environ.get("LMLAB_PEAK_FLOPS")
    if env:
        return float(env), "LMLAB_PEAK_FLOPS"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best, f"measured {n}x{n} {str(dtype).removeprefix('torch.')} matmul"


def mfu(n_params: int, tokens_per_s: float, peak: float) -> float:
    return 6 * n_params * tokens_per_s / peak if peak > 0 else 0.0


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table (rows of dicts), numbers with 4 significant digits."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def emit(result: dict[str, Any]) -> None:
    """The last line of every bench: one JSON object."""
    print(json.dumps(result, sort_keys=True))
