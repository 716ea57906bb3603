"""Every benchmark in one command, one table: lmlab, the plain PyTorch loop and TRL side by side.

    .venv/bin/python bench/run_all.py                 # the CPU set, <= 10 minutes on 2 quiet cores
    .venv/bin/python bench/run_all.py size=gpu        # the GPU anchors (run it unchanged on a lent GPU)
    .venv/bin/python bench/run_all.py only=sft,pretrain json=out.json

Runs each bench script that exists (pretrain, SFT, RM + DPO in bench/align.py, GRPO in bench/rl.py,
generation + serving in bench/serve.py) as its own process with the size's settings, reads the JSON
object each prints last, and prints one table: per arm the throughput (tokens/s, pairs/s or
prompts/s; the median over rounds with min–max where the bench runs rounds), tokens per CPU-second,
peak memory (RSS on CPU, allocated CUDA memory on a GPU), MFU where the bench reports it, and the
ratios to the plain loop and to TRL on the same model, data and batch. A bench that is missing,
fails or runs past its time limit is a row saying so; the other rows still come.

`size=cpu` (default): the small models of each bench's defaults, trimmed to fit 10 minutes. The
GPU anchors are listed as "not run" unless this is a GPU machine and `size=gpu`.
`size=smoke`: tiny models and a few steps, to check that every bench and this table still work.
`size=gpu`: the GPU anchors' setup: the Qwen2.5-0.5B architecture with random weights, fp32
weights + bf16 autocast, SFT 16 rows of <= 512 tokens padded to multiples of 64, DPO / RM 8 pairs
(bench/align.py builds its own Qwen2 of the same width and depth), 3 rounds; the steady figure
is tokens/s after the warm-up steps and the single-pass one is the first step's time
(`first step s`).
The machine, the load average and the date are printed above the table; the JSON of every bench
is written to `json=PATH` and the table as Markdown to `markdown=PATH` if given.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, options, table

HERE = Path(__file__).resolve().parent
DEFAULTS: dict[str, Any] = {"size": "cpu", "only": "", "json": "", "markdown": "", "timeout_scale": 1.0}

# bench -> (script, arguments per size, time limit in seconds for size=cpu)
QWEN = "arch=qwen2.5-0.5b"
BENCHES: dict[str, tuple[str, dict[str, list[str]], int]] = {
    "pretrain": ("pretrain.py", {
        "cpu": ["steps=40", "warmup=5", "rounds=5"],  # 20-60 ms steps: 12 steps swung ±25% per process
        "gpu": ["hidden=896", "layers=24", "batch_size=16", "max_length=512", "vocab_size=65536", "steps=20", "warmup=5",
                "rounds=3"],
        "smoke": ["archs=rnn,transformer", "steps=2", "warmup=1", "rounds=1", "hidden=16", "max_length=16"]}, 240),
    "sft": ("sft.py", {
        "cpu": ["steps=16", "warmup=4", "rounds=3", "arms=lmlab_padded,plain_padded,trl_padded,lmlab_packed,trl_packed"],
        "gpu": [QWEN, "batch_size=16", "max_length=512", "pad_to_multiple_of=64", "steps=30", "warmup=5", "rounds=3",
                "arms=lmlab_padded,plain_padded,trl_padded,lmlab_packed,plain_packed,trl_packed"],
        "smoke": ["steps=4", "warmup=1", "rounds=1", "hidden=64", "layers=1", "n=100", "max_length=128"]}, 300),
    "align": ("align.py", {
        "cpu": ["steps=10", "warmup=2", "n=200", "arms=lmlab_dpo,trl_dpo,lmlab_dpo_grouped,lmlab_rm,trl_rm,lmlab_rm_grouped"],
        "gpu": ["hidden=896", "layers=24", "batch_size=8", "max_length=512", "steps=20", "warmup=5", "rounds=3",
                "arms=lmlab_dpo,trl_dpo,lmlab_rm,trl_rm,lmlab_sft"],
        "smoke": ["steps=3", "warmup=1", "n=40", "hidden=32", "layers=1", "arms=lmlab_dpo,trl_dpo,lmlab_rm,trl_rm"]}, 210),
    "rl": ("rl.py", {
        "cpu": ["steps=12", "warmup=2", "rounds=3"],
        "gpu": ["hidden=896", "layers=24", "prompts_per_step=8", "num_generations=8", "max_new_tokens=128", "steps=12",
                "warmup=3"],
        "smoke": ["steps=3", "warmup=1", "hidden=32", "max_new_tokens=8"]}, 240),
    "serve": ("serve.py", {
        "cpu": ["clients=1,8", "requests=32"],
        "gpu": ["hidden=896", "layers=24", "clients=1,8,32", "requests=64"],
        "smoke": ["clients=1,2", "requests=4", "max_tokens=8", "hidden=32", "layers=1"]}, 120),
}
COLUMNS = ["bench", "arm", "unit", "median", "min", "max", "per CPU-s", "peak MB", "MFU", "vs plain", "vs TRL", "note"]


def fmt(x: Any, digits: int = 4) -> Any:
    return float(f"{x:.{digits}g}") if isinstance(x, float) else x


def run_bench(script: Path, args: list[str], limit: float) -> tuple[dict[str, Any] | None, str, float]:
    """(the bench's JSON or None, what went wrong, seconds)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "LMLAB_QUIET": "1"})
    except subprocess.TimeoutExpired:
        return None, f"timed out after {limit:.0f} s", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return None, f"failed (exit {proc.returncode}): {tail}", seconds
    return json.loads(lines[-1]), "", seconds


# -- one adapter per bench: its JSON -> table rows -----------------------------------------------------
def _mem(r: dict[str, Any]) -> float | None:
    return r.get("peak_cuda_mb", r.get("peak_rss_mb"))


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | str:
    if not a or not b or not b.get(key):
        return "–"
    return fmt(a[key] / b[key], 3)


def _arm_row(bench: str, arm: str, unit: str, r: dict[str, Any], key: str, plain: dict[str, Any] | None,
             trl: dict[str, Any] | None, note: str = "") -> dict[str, Any]:
    return {"bench": bench, "arm": arm, "unit": unit, "median": fmt(r[key]), "min": fmt(r.get(f"{key}_min", "–")),
            "max": fmt(r.get(f"{key}_max", "–")), "per CPU-s": fmt(r.get("tokens_per_cpu_s", "–")),
            "peak MB": fmt(_mem(r) or "–"), "MFU": fmt(r["mfu"], 3) if "mfu" in r else "–",
            "vs plain": _ratio(r, plain, key) if plain is not r else "1", "vs TRL": _ratio(r, trl, key), "note": note}


def rows_pretrain(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(k for k in out if k.endswith("_lmlab")):
        arch = key.removesuffix("_lmlab")
        lm, pl = {**out[f"{arch}_lmlab"], "mfu": out[f"{arch}_mfu"]}, {**out[f"{arch}_plain"], "mfu": out[f"{arch}_plain_mfu"]}
        rows.append(_arm_row(f"pretrain {arch}", "lmlab Trainer", "tok/s", lm, "tokens_per_s", pl, None, "no TRL pretrain arm"))
        rows.append(_arm_row(f"pretrain {arch}", "plain loop", "tok/s", pl, "tokens_per_s", pl, None))
    return rows


def rows_sft(out: dict[str, Any]) -> list[dict[str, Any]]:
    arms, rows = out["arms"], []
    for arm, r in arms.items():
        kind = arm.split("_", 1)[1]
        plain = arms.get(f"plain_{kind}") if kind in ("padded", "packed") else None
        trl = arms.get(f"trl_{kind}") if kind in ("padded", "packed") else arms.get("trl_padded")
        rows.append(_arm_row("sft", arm, "tok/s", r, "tokens_per_s", plain, trl, f"first step {r['first_step_s']:.2f} s"))
    if "tokens_per_s_vs_trl" in out:
        rows.append({"bench": "sft", "arm": "best lmlab / best TRL", "unit": "ratio", "median": fmt(out["tokens_per_s_vs_trl"], 3),
                     "peak MB": fmt(out["peak_mem_vs_trl"], 3), "note": "peak MB column: memory ratio"})
    return rows


def rows_align(out: dict[str, Any]) -> list[dict[str, Any]]:
    arms, rows = out["arms"], []
    for arm, r in arms.items():
        grouped = arm.endswith("_grouped")
        base = arm.removesuffix("_grouped")
        what = "rm" if base.endswith("_rm") else ("sft rows" if base.endswith("_sft") else "dpo")
        trl = arms.get(base.replace("lmlab_", "trl_")) if arm.startswith("lmlab_") else None
        note = "group_by_length=true: other batches, less padding" if grouped else "no plain-loop arm"
        rows.append(_arm_row(what, arm, "pairs/s", r, "pairs_per_s", None, trl, note))
    return rows


def rows_rl(out: dict[str, Any]) -> list[dict[str, Any]]:
    arms = out["arms"]
    return [_arm_row("grpo", arm, "prompts/s", r, "prompts_per_s", None, arms.get("trl") if arm != "trl" else None,
                     f"generation {r['generation_share_of_step']:.0%} of a step, {r['gen_tokens_per_s']:.0f} gen tok/s")
            for arm, r in arms.items()]


def rows_serve(out: dict[str, Any]) -> list[dict[str, Any]]:
    seq = {"requests_per_s": out["sequential_requests_per_s"]}
    rows = [{"bench": "generation", "arm": "lmlab generate, one request at a time", "unit": "req/s",
             "median": fmt(out["sequential_requests_per_s"]), "note": f"{out.get('max_tokens')} tokens each, greedy"}]
    for key in sorted((k for k in out if k.startswith("requests_per_s_") and k.removeprefix("requests_per_s_").isdigit()),
                      key=lambda k: int(k.rsplit("_", 1)[1])):
        c = key.rsplit("_", 1)[1]
        rows.append({"bench": "serving", "arm": f"lmlab serve, {c} clients", "unit": "req/s", "median": fmt(out[key]),
                     "vs plain": _ratio({"r": out[key]}, {"r": seq["requests_per_s"]}, "r"),
                     "note": f"vs plain = vs sequential generate; TTFT p50 {out.get(f'ttft_p50_s_{c}', float('nan')):.3f} s; "
                             f"outputs match: {out.get('outputs_match')}"})
    return rows


ADAPTERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "pretrain": rows_pretrain, "sft": rows_sft, "align": rows_align, "rl": rows_rl, "serve": rows_serve}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (for docs/performance.md)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if c in ("bench", "arm", "unit", "note") else "---:"
                                                                 for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    opts = options(DEFAULTS, argv)
    size = str(opts["size"])
    if size not in ("cpu", "gpu", "smoke"):
        raise SystemExit(f"size={size}: use cpu, gpu or smoke")
    import torch

    gpu = torch.cuda.is_available()
    names = [n for n in str(opts["only"]).split(",") if n] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"only=: unknown bench(es) {', '.join(unknown)} (benches: {', '.join(BENCHES)})")
    started = datetime.datetime.now(datetime.UTC)
    info = machine()
    print(f"{started:%Y-%m-%d %H:%M} UTC  {info['cpu']}, {info['cores']} cores, torch {info['torch']}"
          + (f", {info['gpu']}" if gpu else ", no GPU") + f"; load average {info['load_avg_1m']} at the start", flush=True)
    rows: list[dict[str, Any]] = []
    everything: dict[str, Any] = {"size": size, "machine": info, "date": f"{started:%Y-%m-%d %H:%M} UTC", "benches": {}}
    for name in names:
        script, sizes, limit = BENCHES[name]
        args = sizes[size]
        if size == "gpu" and not gpu:
            rows.append({"bench": name, "arm": "–", "note": "not run: no GPU on this machine"})
            continue
        if not (HERE / script).exists():
            rows.append({"bench": name, "arm": "–", "note": f"not run: bench/{script} does not exist yet"})
            continue
        print(f"{name}: bench/{script} {' '.join(args)}", file=sys.stderr, flush=True)
        out, problem, seconds = run_bench(HERE / script, args, limit * float(opts["timeout_scale"]) * (4 if size == "gpu" else 1))
        load = round(os.getloadavg()[0], 1)
        everything["benches"][name] = {"args": args, "seconds": seconds, "load_avg_1m_after": load, "result": out,
                                       "problem": problem or None}
        print(f"{name}: {seconds:.0f} s, load {load}" + (f", {problem}" if problem else ""), file=sys.stderr, flush=True)
        if out is None:
            rows.append({"bench": name, "arm": "–", "note": problem})
            continue
        try:
            new = ADAPTERS[name](out)
        except (KeyError, TypeError, ValueError) as e:  # a bench changed its JSON: say so, keep the others
            new = [{"bench": name, "arm": "–", "note": f"could not read its JSON ({type(e).__name__}: {e})"}]
        for row in new:
            row["note"] = (row.get("note") or "") + f" [load {load}]"
        rows += new
    if size != "gpu":
        rows.append({"bench": "GPU anchors", "arm": "–", "note": "not run" + ("" if gpu else ": no GPU lent") + " (size=gpu)"})
    total = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    print(table([{c: r.get(c, "") for c in COLUMNS} for r in rows], COLUMNS))
    print(f"total {total:.0f} s; command: .venv/bin/python bench/run_all.py {' '.join(argv)}".rstrip())
    everything["total_s"] = total
    everything["rows"] = rows
    if opts["markdown"]:
        Path(str(opts["markdown"])).write_text(markdown(rows) + "\n")
    if opts["json"]:
        Path(str(opts["json"])).write_text(json.dumps(everything, indent=1))
    print(json.dumps({"size": size, "total_s": total, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
