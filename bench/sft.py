"""SFT throughput and peak memory: lmlab (packed / padded) vs TRL `SFTTrainer`, same everything else.

    .venv/bin/python bench/sft.py [steps=40 warmup=5 batch_size=8 max_length=256 n=2000 hidden=256 layers=4 rounds=1]

Same model (a Qwen2 built locally and saved once, loaded by every arm from that folder), same
tokenizer, same data (storyworld/instruct rendered once by `lmlab.data.chat`; TRL receives the
ready `input_ids` + `labels` columns so both train on identical tokens and masks), same batch
size, max length, steps, learning rate, AdamW, fp32 on CPU (bf16 on a GPU), sdpa attention.

Each arm runs in its own subprocess so peak memory is its own. Timing excludes `warmup` steps
and counts real (non-pad) tokens, measured the same way for every arm: a forward pre-hook on the
model counts `input_ids != pad` and stamps the wall and process CPU time of each training forward
(tokens per CPU-second is the steadier figure on a shared machine; `rounds=N` repeats every arm
in alternating order and reports medians). Peak memory: RSS
sampled every 5 ms by a thread (CPU), `torch.cuda.max_memory_allocated` (GPU); reported as the
peak and as the peak above the RSS after the model was loaded.

Arms: lmlab packed (padding-free rows, `packing=true`), lmlab padded, TRL padded (no packing,
gradient checkpointing off like lmlab), TRL packed (`packing=True`: BFD, padding-free, one
flattened row per batch) and TRL defaults (padded with gradient checkpointing on, TRL's default).
Prints one JSON object. Headline: `tokens_per_s_vs_trl` / `peak_mem_vs_trl` = lmlab packed vs TRL
padded (identical settings but packing); `_vs_trl_packed`, `_vs_trl_defaults`, `_vs_trl_padded`
(lmlab padded vs TRL padded: the loop alone) are the other comparisons.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {"steps": 40, "warmup": 5, "batch_size": 8, "max_length": 256, "n": 2000, "hidden": 256,
                            "layers": 4, "vocab_size": 2048, "lr": 3e-4, "seed": 0}
ARMS = ("lmlab_packed", "lmlab_padded", "trl_padded", "trl_packed", "trl_defaults")


# -- shared setup (parent) -------------------------------------------------------------------------
def prepare(opts: dict[str, Any], root: Path) -> None:
    """Tokenizer, model folder and the rendered dataset, written once for every arm."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lmlab.data.chat import encode_dataset
    from lmlab.data.loaders import load_records, load_texts
    from lmlab.tokenizers import train_tokenizer

    records = load_records("storyworld/instruct", "chat", limit=opts["n"])
    tok = train_tokenizer(load_texts("storyworld/pretrain", limit=2000), vocab_size=opts["vocab_size"], out=root / "model")
    h = opts["hidden"]
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=h, intermediate_size=3 * h, num_hidden_layers=opts["layers"],
                      num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128),
                      max_position_embeddings=opts["max_length"] * 8, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(opts["seed"])
    Qwen2ForCausalLM(cfg).save_pretrained(root / "model")
    examples, stats = encode_dataset(tok, records, max_length=opts["max_length"])
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "stats.json").write_text(json.dumps(stats.as_dict()))


# -- measurement (child) ---------------------------------------------------------------------------
class Meter:
    """Forward pre-hook: per training forward, real tokens and a start time; RSS sampler thread."""

    def __init__(self, model: Any, pad_id: int):
        import psutil
        import torch

        self.pad_id = pad_id
        self.stamps: list[tuple[float, int]] = []
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

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and module.training:
            self.stamps.append((time.perf_counter(), time.process_time(), int((ids != self.pad_id).sum())))

    def _sample(self) -> None:
        while not self._stop:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            time.sleep(0.005)

    def report(self, warmup: int) -> dict[str, Any]:
        import torch

        self._stop = True
        self._thread.join()
        times = [t for t, _, _ in self.stamps]
        cpu = [c for _, c, _ in self.stamps]
        tokens = [n for _, _, n in self.stamps]
        if len(times) < warmup + 2:
            raise RuntimeError(f"only {len(times)} training forwards recorded")
        # steps warmup .. last-1: from the start of step `warmup` to the start of the last step
        span = times[-1] - times[warmup]
        cpu_span = cpu[-1] - cpu[warmup]
        real = sum(tokens[warmup:-1])
        out = {"tokens_per_s": real / span, "tokens_per_cpu_s": real / cpu_span,
               "s_per_step": span / (len(times) - 1 - warmup), "real_tokens": real,
               "steps_timed": len(times) - 1 - warmup, "peak_rss_mb": self.peak_rss / 2**20,
               "peak_rss_above_model_mb": (self.peak_rss - self.base_rss) / 2**20}
        if self.cuda:
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def _load(root: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "model")
    dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(root / "model", attn_implementation="sdpa", dtype=dtype)
    model.config.use_cache = False
    if torch.cuda.is_available():
        model = model.cuda()
    rows = [json.loads(line) for line in (root / "data.jsonl").read_text().splitlines()]
    return model, tok, rows


def run_lmlab(root: Path, opts: dict[str, Any], packed: bool) -> dict[str, Any]:
    from lmlab.data.chat import EncodedExample
    from lmlab.data.collate import PackedBatches, PaddedBatches
    from lmlab.runs import RunDir
    from lmlab.train.config import SFTConfig
    from lmlab.train.steps import lm_step
    from lmlab.train.trainer import Trainer

    model, tok, rows = _load(root)
    meter = Meter(model, tok.pad_token_id)
    examples = [EncodedExample(r["input_ids"], r["labels"]) for r in rows]
    bs, ml = opts["batch_size"], opts["max_length"]
    src = (PackedBatches(examples, bs, tok.pad_token_id, ml, seed=opts["seed"]) if packed
           else PaddedBatches(examples, bs, tok.pad_token_id, seed=opts["seed"]))
    cfg = SFTConfig(model=str(root / "model"), max_steps=opts["steps"], batch_size=bs, max_length=ml, lr=opts["lr"],
                    warmup_steps=0, log_every=10**9, keep_best=False, save_every=0, weight_decay=0.0,
                    precision="auto", clip_grad=1.0)
    out = Path(tempfile.mkdtemp(prefix="lmlab-bench-"))
    Trainer(model, lm_step, src, cfg, RunDir(out / "run")).fit()
    return meter.report(opts["warmup"])


def run_trl(root: Path, opts: dict[str, Any], packed: bool, checkpointing: bool = False) -> dict[str, Any]:
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    model, tok, rows = _load(root)
    meter = Meter(model, tok.pad_token_id)
    ds = datasets.Dataset.from_list(rows)
    out = tempfile.mkdtemp(prefix="trl-bench-")
    args = SFTConfig(
        output_dir=out, max_steps=opts["steps"], per_device_train_batch_size=opts["batch_size"],
        max_length=opts["max_length"], learning_rate=opts["lr"], lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[],
        packing=packed, seed=opts["seed"], dataloader_num_workers=0, bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        gradient_checkpointing=checkpointing,  # TRL's own default is True; lmlab's is False
    )
    SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()
    return meter.report(opts["warmup"])


def child(arm: str, root: Path, opts: dict[str, Any]) -> None:
    os.environ.setdefault("LMLAB_QUIET", "1")
    runs = {"lmlab_packed": lambda: run_lmlab(root, opts, True), "lmlab_padded": lambda: run_lmlab(root, opts, False),
            "trl_padded": lambda: run_trl(root, opts, False), "trl_packed": lambda: run_trl(root, opts, True),
            "trl_defaults": lambda: run_trl(root, opts, False, checkpointing=True)}
    print("RESULT " + json.dumps(runs[arm]()))


# -- driver ----------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    from lmlab.config import parse_overrides

    if argv and argv[0] == "--child":
        child(argv[1], Path(argv[2]), json.loads(argv[3]))
        return
    opts = {**DEFAULTS, **parse_overrides(argv)}
    arms = str(opts.pop("arms", ",".join(ARMS))).split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    prepare(opts, root)
    rounds = int(opts.pop("rounds", 1))
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for r in range(rounds):
        # alternate the order every round so a slow drift in machine load hits every arm alike
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            proc = subprocess.run([sys.executable, __file__, "--child", arm, str(root), json.dumps(opts)],
                                  capture_output=True, text=True, env={**os.environ, "LMLAB_QUIET": "1"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"arm {arm} failed (exit {proc.returncode})")
            runs[arm].append(json.loads(line[len("RESULT "):]))
            print(f"round {r}: {arm}: {runs[arm][-1]['tokens_per_s']:.0f} tok/s, "
                  f"{runs[arm][-1]['tokens_per_cpu_s']:.0f} tok/cpu-s, peak RSS {runs[arm][-1]['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)
    # per arm: the median of each figure over rounds (robust to one disturbed run)
    results = {arm: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for arm, rs in runs.items()}
    mem = "peak_cuda_mb" if "peak_cuda_mb" in results.get(arms[0], {}) else "peak_rss_mb"
    summary: dict[str, Any] = {"config": opts, "data": json.loads((root / "stats.json").read_text()),
                               "device": "cuda" if mem == "peak_cuda_mb" else "cpu", "memory_metric": mem,
                               "rounds": rounds, "arms": results}
    def ratio(a: str, b: str, key: str) -> float:
        return results[a][key] / results[b][key]

    if "lmlab_packed" in results and "trl_padded" in results:
        summary["tokens_per_s_vs_trl"] = results["lmlab_packed"]["tokens_per_s"] / results["trl_padded"]["tokens_per_s"]
        summary["peak_mem_vs_trl"] = results["lmlab_packed"][mem] / results["trl_padded"][mem]
        summary["tokens_per_cpu_s_vs_trl"] = ratio("lmlab_packed", "trl_padded", "tokens_per_cpu_s")
    if "lmlab_packed" in results and "trl_defaults" in results:
        summary["tokens_per_s_vs_trl_defaults"] = ratio("lmlab_packed", "trl_defaults", "tokens_per_s")
        summary["tokens_per_cpu_s_vs_trl_defaults"] = ratio("lmlab_packed", "trl_defaults", "tokens_per_cpu_s")
        summary["peak_mem_vs_trl_defaults"] = ratio("lmlab_packed", "trl_defaults", mem)
    if "lmlab_packed" in results and "trl_packed" in results:
        summary["tokens_per_s_vs_trl_packed"] = results["lmlab_packed"]["tokens_per_s"] / results["trl_packed"]["tokens_per_s"]
        summary["peak_mem_vs_trl_packed"] = results["lmlab_packed"][mem] / results["trl_packed"][mem]
        summary["tokens_per_cpu_s_vs_trl_packed"] = ratio("lmlab_packed", "trl_packed", "tokens_per_cpu_s")
    if "lmlab_padded" in results and "trl_padded" in results:
        summary["tokens_per_s_vs_trl_padded"] = results["lmlab_padded"]["tokens_per_s"] / results["trl_padded"]["tokens_per_s"]
        summary["peak_mem_vs_trl_padded"] = results["lmlab_padded"][mem] / results["trl_padded"][mem]
        summary["tokens_per_cpu_s_vs_trl_padded"] = ratio("lmlab_padded", "trl_padded", "tokens_per_cpu_s")
    print(json.dumps(summary, indent=None))


if __name__ == "__main__":
    main(sys.argv[1:])
