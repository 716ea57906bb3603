"""Throughput of the from-scratch architectures: training tokens/s and cached vs uncached decoding.

    python -m lmlab.models.speed [size] [device]        # e.g. python -m lmlab.models.speed tiny cpu

On CPU the clock is the process's CPU time with one thread, so figures stay comparable on a
shared machine; on a GPU it is synchronized wall time. Prints one JSON object: per architecture, fwd+bwd tokens/s on batch 8 × 128 tokens, greedy decoding
tokens/s (batch 4, 32-token prompts, 64 new tokens) with and without the generation cache, and
their ratio `decode_cached_vs_uncached` (what carrying the RNN state / the KV cache buys).
"""
from __future__ import annotations

import json
import sys
import time

import torch

import lmlab.models as zoo

VOCAB = 2048


def _clock(device: str):
    """CPU: process CPU time with one thread (robust on a shared machine); GPU: synchronized wall time."""
    if device.startswith("cuda"):
        def wall() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return wall
    return time.process_time


def _timed(fn, repeats: int, clock) -> float:
    fn()  # warm-up
    start = clock()
    for _ in range(repeats):
        fn()
    return (clock() - start) / repeats


def measure(arch: str, size: str, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = zoo.build_model(f"{arch}:{size}", VOCAB, eos_token_id=0, pad_token_id=0).to(device)
    batch = torch.randint(1, VOCAB, (8, 128), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    clock = _clock(device)
    model.train()
    train_s = _timed(train_step, 3, clock)
    model.eval()
    prompt = torch.randint(1, VOCAB, (4, 32), device=device)
    mask = torch.ones_like(prompt)
    kw = {"attention_mask": mask, "max_new_tokens": 64, "min_new_tokens": 64, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = _timed(lambda: model.generate(prompt, use_cache=True, **kw), 2, clock)
        uncached = _timed(lambda: model.generate(prompt, use_cache=False, **kw), 1, clock)
    new = 4 * 64
    return {
        "params": zoo.count_parameters(model)[1],
        "train_tokens_per_s": round(batch.numel() / train_s),
        "decode_tokens_per_s": round(new / cached),
        "decode_uncached_tokens_per_s": round(new / uncached),
        "decode_cached_vs_uncached": round(uncached / cached, 2),
    }


def main(argv: list[str]) -> None:
    size = argv[0] if argv else "tiny"
    device = argv[1] if len(argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(1)
    result = {"size": size, "device": device, "threads": torch.get_num_threads(),
              "clock": "wall" if device.startswith("cuda") else "process cpu time"}
    for arch in ("rnn", "lstm", "gru", "transformer"):
        result[arch] = measure(arch, size, device)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
