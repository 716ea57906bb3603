"""SFT throughput, CPU time, peak memory and MFU: lmlab vs a plain PyTorch loop vs TRL `SFTTrainer`.

    .venv/bin/python bench/sft.py [steps=24 warmup=4 rounds=3 batch_size=8 max_length=256 n=2000
                                   hidden=256 layers=4 arch=small pad_to_multiple_of=0 arms=...]
    .venv/bin/python bench/sft.py arch=qwen2.5-0.5b batch_size=16 max_length=512 pad_to_multiple_of=64   # GPU anchors

Same model (a Qwen2 built locally and saved once, loaded by every arm from that folder), same
tokenizer, same data (storyworld/instruct rendered once by `lmlab.data.chat`; TRL receives the
ready `input_ids` + `labels` columns so every arm trains on identical tokens and masks), same batch
size, max length, steps, learning rate, AdamW, clipping at 1.0, fp32 on CPU (fp32 weights + bf16
autocast on a GPU), sdpa attention. `arch=qwen2.5-0.5b` builds the Qwen2.5-0.5B architecture
(896 wide, 24 layers, 14 heads / 2 KV heads, vocabulary 151,936) with random weights.

Arms (`arms=` picks some; each runs in its own process per round, so its peak memory is its own):
- `lmlab_padded` / `lmlab_packed`: `Trainer(model, lm_step, PaddedBatches | PackedBatches)`, what
  `lmlab train sft` runs (packed = padding-free rows of <= max_length, `packing=true`);
- `plain_padded` / `plain_packed`: the simplest correct hand-written loop on the *same* micro-batches
  (same examples in the same order, the plan taken from lmlab's batch source): its own collation
  (`pad_sequence` / `torch.cat`), forward, token-mean cross-entropy over the reply tokens,
  backward, clip, AdamW, cosine schedule; nothing else;
- `trl_padded` (no packing, gradient checkpointing off like lmlab), `trl_packed` (`packing=True`:
  BFD, padding-free), `trl_defaults` (padded, gradient checkpointing on: TRL's default; not in the
  default arm list).

Timing: the shared forward pre-hook `common.Meter` stamps the wall clock, the process CPU time
(user + sys) and the real (non-pad) tokens of every training forward; `warmup` steps are not
timed. `rounds` rounds, arms in rotation, median with min/max (see `common.run_rounds`).
`first_step_s` is the single-pass figure (the first step, cold); tokens/s is the steady one.
MFU = 6 · N · real tokens/s / peak, N = parameters in matrix products (all but an untied input
embedding; the tied embedding counts once, as the LM head), the peak measured once by a timed
matmul in the training dtype (`common.peak_flops`).

`profile=1` runs every arm under cProfile with a CPU-time clock and adds `profile_ms_per_step`
(CPU milliseconds per step of the model forward, loss, backward, clipping, AdamW, collation,
`weight_of` and the Trainer's own bookkeeping) to each arm: where lmlab's step differs from the
plain loop's.

Prints a table, then one JSON object. Ratios (`<what>_vs_<baseline>`): `tokens_per_s_vs_plain`
(lmlab padded vs plain padded: the loop alone), `tokens_per_s_packed_vs_plain_packed`,
`tokens_per_s_vs_trl` and `peak_mem_vs_trl` (best lmlab arm vs best TRL arm, by tokens/s),
`tokens_per_s_vs_trl_padded` (padded vs padded), `plain_tokens_per_s_vs_trl`, and the same with
`tokens_per_cpu_s`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Meter, emit, machine, matmul_params, medians, mfu, options, peak_flops, run_rounds, table

__all__ = ["Meter"]  # bench/align.py and bench/rl.py import it from here

DEFAULTS: dict[str, Any] = {"steps": 24, "warmup": 4, "rounds": 3, "batch_size": 8, "max_length": 256, "n": 2000,
                            "hidden": 256, "layers": 4, "vocab_size": 2048, "arch": "small", "pad_to_multiple_of": 0,
                            "lr": 3e-4, "seed": 0, "profile": 0, "arms": "lmlab_padded,plain_padded,trl_padded,lmlab_packed,plain_packed,trl_packed"}
ARMS = ("lmlab_padded", "lmlab_packed", "plain_padded", "plain_packed", "trl_padded", "trl_packed", "trl_defaults")

# The Qwen2.5-0.5B architecture (its config.json), built with random weights for the GPU anchors.
QWEN25_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 32768, "tie_word_embeddings": True}


# -- shared setup (parent) -------------------------------------------------------------------------
def model_config(opts: dict[str, Any], tok: Any) -> Any:
    from transformers import Qwen2Config

    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if opts["arch"] == "qwen2.5-0.5b":
        return Qwen2Config(**QWEN25_05B, **special)
    if opts["arch"] != "small":
        raise SystemExit(f"arch={opts['arch']}: use small (hidden=, layers=) or qwen2.5-0.5b")
    h = opts["hidden"]
    return Qwen2Config(vocab_size=len(tok), hidden_size=h, intermediate_size=3 * h, num_hidden_layers=opts["layers"],
                       num_attention_heads=max(1, h // 64), num_key_value_heads=max(1, h // 128),
                       max_position_embeddings=opts["max_length"] * 8, tie_word_embeddings=True, **special)


def prepare(opts: dict[str, Any], root: Path) -> int:
    """Tokenizer, model folder and the rendered dataset, written once for every arm; returns N (matmul params)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from lmlab.data.chat import encode_dataset
    from lmlab.data.loaders import load_records, load_texts
    from lmlab.tokenizers import train_tokenizer

    records = load_records("storyworld/instruct", "chat", limit=opts["n"])
    tok = train_tokenizer(load_texts("storyworld/pretrain", limit=2000), vocab_size=opts["vocab_size"], out=root / "model")
    torch.manual_seed(opts["seed"])
    model = Qwen2ForCausalLM(model_config(opts, tok))
    model.save_pretrained(root / "model")
    examples, stats = encode_dataset(tok, records, max_length=opts["max_length"])
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "stats.json").write_text(json.dumps(stats.as_dict()))
    return matmul_params(model)


# -- arms (child) ----------------------------------------------------------------------------------
def _load(root: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "model")
    model = AutoModelForCausalLM.from_pretrained(root / "model", attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    if torch.cuda.is_available():
        model = model.cuda()
    rows = [json.loads(line) for line in (root / "data.jsonl").read_text().splitlines()]
    return model, tok, rows


def _source(rows: list[dict[str, Any]], opts: dict[str, Any], pad_id: int, packed: bool) -> Any:
    from lmlab.data.chat import EncodedExample
    from lmlab.data.collate import PackedBatches, PaddedBatches

    examples = [EncodedExample(r["input_ids"], r["labels"]) for r in rows]
    bs, ml = opts["batch_size"], opts["max_length"]
    if packed:
        return PackedBatches(examples, bs, pad_id, ml, seed=opts["seed"])
    return PaddedBatches(examples, bs, pad_id, seed=opts["seed"], pad_to_multiple_of=opts["pad_to_multiple_of"] or None)


def run_lmlab(root: Path, opts: dict[str, Any], packed: bool) -> dict[str, Any]:
    from lmlab.runs import RunDir
    from lmlab.train.config import SFTConfig
    from lmlab.train.steps import lm_step
    from lmlab.train.trainer import Trainer

    model, tok, rows = _load(root)
    meter = Meter(model, tok.pad_token_id)
    src = _source(rows, opts, tok.pad_token_id, packed)
    cfg = SFTConfig(model=str(root / "model"), max_steps=opts["steps"], batch_size=opts["batch_size"],
                    max_length=opts["max_length"], lr=opts["lr"], warmup_steps=0, log_every=10**9, keep_best=False,
                    save_every=0, weight_decay=0.0, precision="auto", clip_grad=1.0)
    out = Path(tempfile.mkdtemp(prefix="lmlab-bench-"))
    Trainer(model, lm_step, src, cfg, RunDir(out / "run")).fit()
    return meter.report(opts["warmup"])


def plain_padded_batch(data: list[tuple[Any, Any]], idx: list[int], pad: int, multiple: int = 0) -> dict[str, Any]:
    """The plain loop's own collation: right-pad (ids, labels) pairs with `pad_sequence`."""
    import torch
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pad_sequence

    ids = pad_sequence([data[i][0] for i in idx], batch_first=True, padding_value=pad)  # (B, T)
    labels = pad_sequence([data[i][1] for i in idx], batch_first=True, padding_value=-100)  # (B, T)
    mask = pad_sequence([torch.ones_like(data[i][0]) for i in idx], batch_first=True)  # (B, T)
    if multiple and ids.size(1) % multiple:
        extra = multiple - ids.size(1) % multiple
        ids, labels, mask = F.pad(ids, (0, extra), value=pad), F.pad(labels, (0, extra), value=-100), F.pad(mask, (0, extra))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def plain_packed_batch(data: list[tuple[Any, Any]], rows: list[list[int]], pad: int) -> dict[str, Any]:
    """The plain loop's packing: concatenate each row's examples, positions restart per example,
    and the first token of an example is not a target (it would be predicted from the previous one)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pad_sequence

    ids = [torch.cat([data[i][0] for i in row]) for row in rows]
    labels = [torch.cat([F.pad(data[i][1][1:], (1, 0), value=-100) for i in row]) for row in rows]
    pos = [torch.cat([torch.arange(len(data[i][0])) for i in row]) for row in rows]
    return {"input_ids": pad_sequence(ids, batch_first=True, padding_value=pad),
            "labels": pad_sequence(labels, batch_first=True, padding_value=-100),
            "position_ids": pad_sequence(pos, batch_first=True)}  # pad tail: position 0 each, one-token segments


def run_plain(root: Path, opts: dict[str, Any], packed: bool) -> dict[str, Any]:
    """The hand-written baseline on the same micro-batches as lmlab (the plan is lmlab's; the
    collation, loss and update are written here as one would by hand)."""
    import torch
    import torch.nn.functional as F

    model, tok, rows = _load(root)
    meter = Meter(model, tok.pad_token_id)
    device = next(model.parameters()).device
    pad = tok.pad_token_id
    data = [(torch.tensor(r["input_ids"]), torch.tensor(r["labels"])) for r in rows]
    src = _source(rows, opts, pad, packed)
    plan = [src.plan(i // len(src))[i % len(src)] for i in range(opts["steps"])]
    if packed:
        batches = (plain_packed_batch(data, [src.rows[r] for r in idx], pad) for idx in plan)
    else:
        batches = (plain_padded_batch(data, idx, pad, opts["pad_to_multiple_of"]) for idx in plan)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], betas=(0.9, 0.95), weight_decay=0.0, fused=cuda)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts["steps"], eta_min=0.1 * opts["lr"])
    model.train()
    for batch in batches:  # collated lazily, one step at a time, as a DataLoader would
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(**batch).logits  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
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
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, pad_to_multiple_of=opts["pad_to_multiple_of"] or None,
        gradient_checkpointing=checkpointing,  # TRL's own default is True; lmlab's is False
    )
    SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train()
    return meter.report(opts["warmup"])


PARTS = {  # profile row -> (file suffix, function name) of what it sums (cumulative CPU time)
    "model forward": ("modeling_qwen2.py", "forward", 415), "loss (cross_entropy)": ("functional.py", "cross_entropy", None),
    "backward": ("", "run_backward", None), "clip_grad_norm_": ("clip_grad.py", "clip_grad_norm_", None),
    "AdamW": ("adam.py", "_single_tensor_adam", None), "collation (lmlab source.get)": ("collate.py", "get", None),
    "collation (plain)": ("sft.py", "plain_", None), "weight_of": ("steps.py", "weight_of", None),
    "Trainer.fit own time": ("trainer.py", "fit", None)}


def profile_parts(prof: Any, steps: int) -> dict[str, float]:
    """CPU milliseconds per step of each part in PARTS (`profile=1`: cProfile with a CPU clock)."""
    import pstats

    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {}
    for name, (suffix, func, line) in PARTS.items():
        own = name.endswith("own time")
        total = sum(v[2] if own else v[3] for (f, ln, fn), v in stats.items()
                    if f.endswith(suffix) and func in fn and (line is None or ln == line))
        out[name] = round(1000 * total / steps, 2)
    return out


def child(arm: str, root: Path, opts: dict[str, Any]) -> None:
    os.environ.setdefault("LMLAB_QUIET", "1")
    if opts.get("profile"):
        import cProfile
        import time

        prof = cProfile.Profile(time.process_time)
        prof.enable()
    runs = {"lmlab_packed": lambda: run_lmlab(root, opts, True), "lmlab_padded": lambda: run_lmlab(root, opts, False),
            "plain_packed": lambda: run_plain(root, opts, True), "plain_padded": lambda: run_plain(root, opts, False),
            "trl_padded": lambda: run_trl(root, opts, False), "trl_packed": lambda: run_trl(root, opts, True),
            "trl_defaults": lambda: run_trl(root, opts, False, checkpointing=True)}
    result = runs[arm]()
    if opts.get("profile"):
        prof.disable()
        result["profile_ms_per_step"] = profile_parts(prof, opts["steps"])
    print("RESULT " + json.dumps(result))


# -- driver ----------------------------------------------------------------------------------------
def best(arms: dict[str, dict[str, Any]], prefix: str) -> str | None:
    """The arm named `prefix_*` with the most real tokens/s (median)."""
    named = [a for a in arms if a.startswith(prefix + "_")]
    return max(named, key=lambda a: arms[a]["tokens_per_s"]) if named else None


def ratios(arms: dict[str, dict[str, Any]], mem: str) -> dict[str, float]:
    """`<what>_vs_<baseline>` for the pairs present among `arms`."""
    out: dict[str, float] = {}

    def pair(a: str | None, b: str | None, name: str) -> None:
        if a in arms and b in arms:
            out[f"tokens_per_s_{name}"] = arms[a]["tokens_per_s"] / arms[b]["tokens_per_s"]
            out[f"tokens_per_cpu_s_{name}"] = arms[a]["tokens_per_cpu_s"] / arms[b]["tokens_per_cpu_s"]
            out[f"peak_mem_{name}"] = arms[a][mem] / arms[b][mem]

    lm, trl = best(arms, "lmlab"), best(arms, "trl")
    pair("lmlab_padded", "plain_padded", "vs_plain")
    pair("lmlab_packed", "plain_packed", "packed_vs_plain_packed")
    pair(lm, trl, "vs_trl")
    pair("lmlab_padded", "trl_padded", "vs_trl_padded")
    pair("lmlab_packed", "trl_packed", "packed_vs_trl_packed")
    pair("lmlab_packed", "trl_defaults", "vs_trl_defaults")
    pair(best(arms, "plain"), trl, "plain_vs_trl")
    if "tokens_per_s_plain_vs_trl" in out:  # named as the issue reads it: the plain loop's speed-up over TRL
        out["plain_tokens_per_s_vs_trl"] = out.pop("tokens_per_s_plain_vs_trl")
        out["plain_tokens_per_cpu_s_vs_trl"] = out.pop("tokens_per_cpu_s_plain_vs_trl")
        out["plain_peak_mem_vs_trl"] = out.pop("peak_mem_plain_vs_trl")
    return out


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        child(argv[1], Path(argv[2]), json.loads(argv[3]))
        return
    opts = options(DEFAULTS, argv)
    arms = [a for a in str(opts["arms"]).split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    import torch

    cuda = torch.cuda.is_available()
    root = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    n_params = prepare(opts, root)
    peak, peak_source = peak_flops(torch.device("cuda" if cuda else "cpu"), torch.bfloat16 if cuda else torch.float32)
    runs = run_rounds(__file__, arms, int(opts["rounds"]), [str(root), json.dumps(opts)],
                      lambda r: f"{r['tokens_per_s']:.0f} tok/s, {r['tokens_per_cpu_s']:.0f} tok/cpu-s, "
                                f"peak RSS {r['peak_rss_mb']:.0f} MB, load {r['load_avg_1m']:.1f}")
    results = {arm: medians(rs, spread=("tokens_per_s", "tokens_per_cpu_s", "load_avg_1m")) for arm, rs in runs.items()}
    mem = "peak_cuda_mb" if cuda else "peak_rss_mb"
    for r in results.values():
        r["mfu"] = mfu(n_params, r["tokens_per_s"], peak)
    summary: dict[str, Any] = {"config": opts, "data": json.loads((root / "stats.json").read_text()),
                               "machine": machine(), "device": "cuda" if cuda else "cpu", "memory_metric": mem,
                               "precision": "fp32 weights + bf16 autocast" if cuda else "fp32",
                               "matmul_params": n_params, "peak_flops": peak, "peak_source": peak_source,
                               "arms": results, **ratios(results, mem)}
    rows = [{"arm": arm, "tok/s": r["tokens_per_s"], "min": r["tokens_per_s_min"], "max": r["tokens_per_s_max"],
             "tok/cpu-s": r["tokens_per_cpu_s"], "first step s": r["first_step_s"], f"{mem}": r[mem],
             "mfu": r["mfu"], "load": r["load_avg_1m"]} for arm, r in results.items()]
    print(f"SFT, {summary['device']} {summary['precision']}, N = {n_params:,} matmul params, peak {peak:.3g} FLOP/s "
          f"({peak_source}); median of {opts['rounds']} rounds, {opts['steps']} steps ({opts['warmup']} not timed), "
          f"batch {opts['batch_size']}, max_length {opts['max_length']}")
    print(table(rows, ["arm", "tok/s", "min", "max", "tok/cpu-s", "first step s", mem, "mfu", "load"]))
    for arm, r in results.items():
        if "profile_ms_per_step" in r:
            print(f"{arm} CPU ms per step: " + ", ".join(f"{k} {v:.1f}" for k, v in r["profile_ms_per_step"].items() if k != "rounds"))
    print("  ".join(f"{k} {v:.3f}" for k, v in summary.items() if "_vs_" in k))
    emit(summary)


if __name__ == "__main__":
    main(sys.argv[1:])
