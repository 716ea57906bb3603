"""Pretraining throughput: the lmlab Trainer vs a plain PyTorch loop, for rnn, lstm, gru, transformer.

    .venv/bin/python bench/pretrain.py [archs=rnn,lstm,gru,transformer steps=20 warmup=3 rounds=3
                                        batch_size=8 max_length=64 hidden=128 layers=2 vocab_size=512]

Both arms train the same model (same initial weights), on the same micro-batches (one
`BlockSource`, fixed seed), with the same AdamW (lr, betas, weight decay), the same gradient
clipping (1.0) and the same precision (fp32 on CPU, bf16 autocast on a bf16 GPU). The plain loop
is what one would write by hand: forward, cross-entropy on shifted logits, backward, clip, step.
The Trainer arm is `Trainer(...).fit()` with logging, evaluation and checkpoints off in the timed
window (log_every beyond the run), exactly as `lmlab train pt` runs between log steps.

Timing: `bench.common.ForwardClock` (forward pre-hook stamps), steps after `warmup`; each arm runs
`rounds` times, alternating which goes first. tokens/s = tokens per step / the *median* step time
over all rounds' timed steps: on a shared machine other processes add bursts of delay to some
steps, and the median over many steps of both arms, interleaved, is robust to them where a mean
or a single run's total is not. `threads=N` pins torch's intra-op threads (default: torch's). MFU = 6·N·tokens/s / peak (see bench/common.py for N and how
the peak is obtained). Prints a table, then one JSON object with `<arch>_tokens_per_s`,
`<arch>_tokens_per_s_vs_plain`, `<arch>_mfu` and the plain loop's figures.
"""
from __future__ import annotations

import copy
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
from common import ForwardClock, emit, matmul_params, mfu, options, peak_flops, table

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


def main() -> None:
    from lmlab.data.tokencache import BlockSource

    opts = options(DEFAULTS)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else None
    peak, peak_source = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    tokens = np.random.default_rng(opts["seed"]).integers(0, opts["vocab_size"], size=200_000).astype(np.uint16)
    source = BlockSource(tokens, opts["max_length"], opts["batch_size"], seed=opts["seed"])
    n_steps = opts["warmup"] + opts["steps"] + 1  # one more forward closes the timed window
    per_step = opts["batch_size"] * opts["max_length"]
    rows, result = [], {"device": str(device), "precision": "bf16" if bf16 else "fp32", "peak_flops": peak,
                        "peak_source": peak_source, "threads": torch.get_num_threads(),
                        **{k: v for k, v in opts.items() if k != "archs"}}
    for arch in [a.strip() for a in str(opts["archs"]).split(",") if a.strip()]:
        base = build(arch, opts)
        n_params = matmul_params(base)
        times: dict[str, list[float]] = {"plain": [], "lmlab": []}
        for r in range(opts["rounds"]):
            for arm in (("plain", "lmlab") if r % 2 == 0 else ("lmlab", "plain")):
                model = copy.deepcopy(base)
                clock = ForwardClock(model)
                if arm == "plain":
                    plain_loop(model, source, opts, n_steps, device, dtype)
                else:
                    trainer_loop(model, source, opts, n_steps)
                clock.close()
                times[arm] += clock.step_times(opts["warmup"], opts["steps"])
        tps = {arm: per_step / float(np.median(t)) for arm, t in times.items()}
        ratio = tps["lmlab"] / tps["plain"]
        rows.append({"arch": arch, "params": n_params, "plain tok/s": tps["plain"], "lmlab tok/s": tps["lmlab"],
                     "vs plain": ratio, "mfu": mfu(n_params, tps["lmlab"], peak)})
        result.update({f"{arch}_tokens_per_s": tps["lmlab"], f"{arch}_plain_tokens_per_s": tps["plain"],
                       f"{arch}_tokens_per_s_vs_plain": ratio, f"{arch}_mfu": mfu(n_params, tps["lmlab"], peak),
                       f"{arch}_plain_mfu": mfu(n_params, tps["plain"], peak), f"{arch}_params": n_params})
    print(f"device {device}, {result['precision']}, peak {peak:.3g} FLOP/s ({peak_source}); median step of {opts['rounds']} rounds, "
          f"{opts['steps']} steps after {opts['warmup']} warm-up, batch {opts['batch_size']}×{opts['max_length']}")
    print(table(rows, ["arch", "params", "plain tok/s", "lmlab tok/s", "vs plain", "mfu"]))
    emit(result)


if __name__ == "__main__":
    main()
