"""Pretraining throughput: the lmlab Trainer vs a plain PyTorch loop, for rnn, lstm, gru, transformer.

    .venv/bin/python bench/pretrain.py [archs=rnn,lstm,gru,transformer steps=20 warmup=3 rounds=3
                                        batch_size=8 max_length=64 hidden=128 layers=2 vocab_size=512]

Both arms train the same model (same initial weights), on the same micro-batches (one
`BlockSource`, fixed seed), with the same AdamW (lr, betas, weight decay), the same gradient
clipping (1.0) and the same precision (fp32 on CPU, bf16 autocast on a bf16 GPU). The plain loop
is what one would write by hand: forward, cross-entropy on shifted logits, backward, clip, step.
The Trainer arm is `Trainer(...).fit()` with logging, evaluation and checkpoints off in the timed
window (log_every beyond the run), exactly as `lmlab train pt` runs between log steps.

Timing: every arm runs in a fresh process per round (all architectures one after another), the
arms alternating (`common.run_rounds`); `common.Meter` stamps wall and process CPU time at every
training forward, `warmup` steps are not timed. Per architecture and arm: tokens/s (wall) and
tokens per CPU-second, the median over `rounds` with min/max, and `median_step_s` (the median
step time, robust to bursts of other jobs on a shared machine). `threads=N` pins torch's intra-op
threads (default: torch's). MFU = 6·N·tokens/s / peak (see bench/common.py for N and how the peak
is obtained). Prints a table, then one JSON object with `<arch>_tokens_per_s`,
`<arch>_tokens_per_s_vs_plain`, `<arch>_tokens_per_cpu_s_vs_plain`, `<arch>_mfu` and the plain
loop's figures.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LMLAB_QUIET", "1")

import numpy as np
import torch
import torch.nn.functional as F
from common import Meter, emit, machine, matmul_params, medians, mfu, options, peak_flops, run_rounds, table

DEFAULTS: dict[str, Any] = {"archs": "rnn,lstm,gru,transformer", "steps": 20, "warmup": 3, "rounds": 3, "batch_size": 8,
                            "max_length": 64, "hidden": 128, "layers": 2, "vocab_size": 512, "lr": 1e-3, "seed": 0, "threads": 0}


def build(arch: str, opts: dict[str, Any]) -> torch.nn.Module:
    from lmlab.models import build_model

    overrides: dict[str, Any] = {"hidden_size": opts["hidden"], "num_layers": opts["layers"]}
    if arch == "transformer":
        overrides.update(num_heads=4, intermediate_size=3 * opts["hidden"], num_key_value_heads=4,
                         max_position_embeddings=max(opts["max_length"], 64))
    torch.manual_seed(opts["seed"])
    return build_model(f"{arch}:tiny", opts["vocab_size"], overrides=overrides, bos_token_id=0, eos_token_id=0)


def plain_loop(model: torch.nn.Module, source: Any, opts: dict[str, Any], n_steps: int, device: torch.device,
               dtype: torch.dtype | None) -> None:
    """The hand-written baseline: AdamW, shifted cross-entropy, clip 1.0, nothing else."""
    model.to(device).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=opts["lr"], betas=(0.9, 0.95), fused=device.type == "cuda")
    V = opts["vocab_size"]
    for i in range(n_steps):
        ids = source.get(i)["input_ids"].to(device)  # (B, T)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=ids).logits  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        float(loss.detach())


def trainer_loop(model: torch.nn.Module, source: Any, opts: dict[str, Any], n_steps: int) -> None:
    from lmlab.runs import RunDir
    from lmlab.train.config import TrainConfig
    from lmlab.train.steps import lm_step
    from lmlab.train.trainer import Trainer

    cfg = TrainConfig(max_steps=n_steps, batch_size=opts["batch_size"], max_length=opts["max_length"], lr=opts["lr"],
                      clip_grad=1.0, log_every=10**9, save_every=0, keep_best=False, precision="auto")
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(model, lm_step, source, cfg, RunDir(Path(tmp) / "run")).fit()


def child(arm: str, opts: dict[str, Any]) -> None:
    """One arm, every architecture, in this (fresh) process; prints `RESULT {arch: figures}`."""
    from lmlab.data.tokencache import BlockSource

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    tokens = np.random.default_rng(opts["seed"]).integers(0, opts["vocab_size"], size=200_000).astype(np.uint16)
    n_steps = opts["warmup"] + opts["steps"] + 1  # one more forward closes the timed window
    out = {}
    for arch in archs(opts):
        source = BlockSource(tokens, opts["max_length"], opts["batch_size"], seed=opts["seed"])
        model = build(arch, opts)
        meter = Meter(model, None)
        if arm == "plain":
            plain_loop(model, source, opts, n_steps, device, dtype)
        else:
            trainer_loop(model, source, opts, n_steps)
        out[arch] = meter.report(opts["warmup"])
    print("RESULT " + json.dumps(out))


def archs(opts: dict[str, Any]) -> list[str]:
    return [a.strip() for a in str(opts["archs"]).split(",") if a.strip()]


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        child(argv[1], json.loads(argv[2]))
        return
    opts = options(DEFAULTS, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    peak, peak_source = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    runs = run_rounds(__file__, ["lmlab", "plain"], opts["rounds"], [json.dumps(opts)],
                      lambda r: ", ".join(f"{a} {v['tokens_per_s']:.0f} tok/s" for a, v in r.items() if isinstance(v, dict))
                      + f", load {r['load_avg_1m']:.1f}")
    figures = {arm: medians(rs, spread=("tokens_per_s", "tokens_per_cpu_s")) for arm, rs in runs.items()}
    rows, result = [], {"device": str(device), "precision": "bf16" if bf16 else "fp32", "peak_flops": peak,
                        "peak_source": peak_source, "machine": machine(),
                        **{k: v for k, v in opts.items() if k != "archs"}}
    for arch in archs(opts):
        n_params = matmul_params(build(arch, opts))
        lm, pl = figures["lmlab"][arch], figures["plain"][arch]
        ratio, cpu_ratio = lm["tokens_per_s"] / pl["tokens_per_s"], lm["tokens_per_cpu_s"] / pl["tokens_per_cpu_s"]
        rows.append({"arch": arch, "params": n_params, "plain tok/s": pl["tokens_per_s"],
                     "lmlab tok/s": lm["tokens_per_s"], "lmlab min": lm["tokens_per_s_min"], "lmlab max": lm["tokens_per_s_max"],
                     "vs plain": ratio, "cpu vs plain": cpu_ratio, "mfu": mfu(n_params, lm["tokens_per_s"], peak),
                     "plain mfu": mfu(n_params, pl["tokens_per_s"], peak)})
        result.update({f"{arch}_tokens_per_s": lm["tokens_per_s"], f"{arch}_plain_tokens_per_s": pl["tokens_per_s"],
                       f"{arch}_tokens_per_s_vs_plain": ratio, f"{arch}_tokens_per_cpu_s_vs_plain": cpu_ratio,
                       f"{arch}_tokens_per_s_median_step_vs_plain": pl["median_step_s"] / lm["median_step_s"],
                       f"{arch}_mfu": mfu(n_params, lm["tokens_per_s"], peak),
                       f"{arch}_plain_mfu": mfu(n_params, pl["tokens_per_s"], peak), f"{arch}_params": n_params,
                       f"{arch}_lmlab": lm, f"{arch}_plain": pl})
    result["load_avg_1m"] = figures["lmlab"]["load_avg_1m"]
    print(f"device {device}, {result['precision']}, peak {peak:.3g} FLOP/s ({peak_source}); median of {opts['rounds']} rounds "
          f"(fresh process each), {opts['steps']} steps after {opts['warmup']} warm-up, batch {opts['batch_size']}×{opts['max_length']}, "
          f"load {result['load_avg_1m']:.1f}")
    print(table(rows, ["arch", "params", "plain tok/s", "lmlab tok/s", "lmlab min", "lmlab max", "vs plain", "cpu vs plain",
                       "mfu", "plain mfu"]))
    emit(result)


if __name__ == "__main__":
    main(sys.argv[1:])
