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

Stable figures on a shared machine (`run_rounds`): every arm runs in a fresh process per round
(its peak memory is its own, no allocator or cache state carries over), the arms interleaved in
rotation (round 0: a, b, c; round 1: b, c, a; ...) so a drift in machine load hits every arm
alike; each figure is the median over rounds with its min and max beside it. `Meter` records, per
training forward, the wall clock, the process CPU time (user + sys: the steadier figure when
other jobs take the cores) and the real (non-pad) tokens.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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


class Meter:
    """Forward pre-hook on the model: per training forward the wall time, the process CPU time and
    the real tokens (`input_ids != pad_id`; all of them when pad_id is None); plus the peak memory
    (RSS sampled every 5 ms by a thread on CPU, `torch.cuda.max_memory_allocated` on a GPU).

    Step k is the span from forward k to forward k + 1, so a run of S steps times S - 1 - warmup
    steps; `report(warmup)` returns numbers only (bench scripts take medians of every key)."""

    def __init__(self, model: nn.Module, pad_id: int | None):
        import psutil

        self.pad_id = pad_id
        self.stamps: list[tuple[float, float, int]] = []
        self.proc = psutil.Process()
        self.base_rss = self.proc.memory_info().rss
        self.peak_rss = self.base_rss
        self._stop = False
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        model.register_forward_pre_hook(self._hook, with_kwargs=True)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and module.training:
            real = ids.numel() if self.pad_id is None else int((ids != self.pad_id).sum())
            if self.cuda:
                torch.cuda.synchronize()
            self.stamps.append((time.perf_counter(), time.process_time(), real))

    def _sample(self) -> None:
        while not self._stop:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            time.sleep(0.005)

    def report(self, warmup: int) -> dict[str, Any]:
        self._stop = True
        self._thread.join()
        times = [t for t, _, _ in self.stamps]
        cpu = [c for _, c, _ in self.stamps]
        tokens = [n for _, _, n in self.stamps]
        if len(times) < warmup + 2:
            raise RuntimeError(f"only {len(times)} training forwards recorded; need warmup + 2 = {warmup + 2}")
        # steps warmup .. last-1: from the start of step `warmup` to the start of the last step
        span, cpu_span = times[-1] - times[warmup], cpu[-1] - cpu[warmup]
        steps = len(times) - 1 - warmup
        real = sum(tokens[warmup:-1])
        step_s = [b - a for a, b in itertools.pairwise(times[warmup:])]
        out = {"tokens_per_s": real / span, "tokens_per_cpu_s": real / cpu_span, "s_per_step": span / steps,
               "median_step_s": statistics.median(step_s), "cpu_s_per_step": cpu_span / steps,
               "first_step_s": times[1] - times[0], "real_tokens": real, "tokens_per_step": real / steps,
               "steps_timed": steps, "peak_rss_mb": self.peak_rss / 2**20,
               "peak_rss_above_model_mb": (self.peak_rss - self.base_rss) / 2**20}
        if self.cuda:
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, load average now, torch, GPU."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    out: dict[str, Any] = {"cpu": model, "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def run_rounds(script: str, arms: Sequence[str], rounds: int, args: Sequence[str],
               describe: Any = None) -> dict[str, list[dict[str, Any]]]:
    """Run `python script --child ARM *args` for every arm, `rounds` times, arms in rotation
    (a b c, b c a, c a b, ...), each in a fresh process; the child prints one `RESULT {json}`
    line. Returns every arm's per-round results, each with the 1-minute load average after it."""
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    k = len(arms)
    for r in range(rounds):
        for arm in [*arms[r % k:], *arms[:r % k]]:
            proc = subprocess.run([sys.executable, script, "--child", arm, *args], capture_output=True, text=True,
                                  env={**os.environ, "LMLAB_QUIET": "1"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"arm {arm} failed (exit {proc.returncode})")
            result = json.loads(line[len("RESULT "):])
            result["load_avg_1m"] = os.getloadavg()[0]
            runs[arm].append(result)
            print(f"round {r}: {arm}: " + (describe(result) if describe else json.dumps(result)), file=sys.stderr)
    return runs


def medians(results: list[dict[str, Any]], spread: Sequence[str] = ()) -> dict[str, Any]:
    """The median of every numeric key over rounds; `<key>_min` / `<key>_max` for the keys in `spread`."""
    out: dict[str, Any] = {}
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [float(r[key]) for r in results]
            out[key] = statistics.median(values)
            if key in spread:
                out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
        elif isinstance(value, dict):
            out[key] = medians([r[key] for r in results], spread)
    out["rounds"] = len(results)
    return out


def emit(result: dict[str, Any]) -> None:
    """The last line of every bench: one JSON object."""
    print(json.dumps(result, sort_keys=True))
