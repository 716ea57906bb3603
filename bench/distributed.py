"""The sharded launchers on one GPU: each packaged accelerate config trains, saves, resumes and generates.

    python bench/distributed.py                 # ddp, fsdp2, zero2, zero3 (needs a CUDA GPU; deepspeed for zero*)
    python bench/distributed.py launchers=ddp,fsdp2 steps=20

FSDP2 and DeepSpeed run only on accelerators (accelerate refuses them on a CPU), so this is the
check of `launcher=fsdp2|zero2|zero3` that a CPU-only CI cannot do. One GPU tests the API-level
contract (one prepare call for model + optimizer, loss scaling, gathered final weights, sharded
save/resume, generation under ZeRO-3), not communication between GPUs. Per launcher: SFT of a small
random Qwen2 for steps/2 steps with a checkpoint, `--resume` to `steps`, then `lmlab generate` on the
result; the final losses are compared with the plain one-process run. Ends with one JSON object.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_model(folder: Path) -> None:
    """A random 4-layer Qwen2 (hidden 256) with a byte-level tokenizer trained on storyworld text."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lmlab.data.storyworld import make_dataset
    from lmlab.templates import CHATML
    from lmlab.tokenizers import train_tokenizer

    texts = [r["text"] for r in make_dataset("pretrain", 500, seed=0)]
    tok = train_tokenizer(texts, kind="bpe", vocab_size=2048, out=folder)
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)


def lmlab(*args: str) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True,
                         env={**os.environ, "LMLAB_QUIET": "1"}, timeout=900)
    return out.returncode, time.perf_counter() - t0, (out.stdout + out.stderr)[-1500:]


def losses(run: Path) -> list[float]:
    if not (run / "metrics.jsonl").exists():
        return []
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def main(argv: list[str]) -> dict:
    import torch

    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    launchers = opts.get("launchers", "ddp,fsdp2,zero2,zero3").split(",")
    steps = int(opts.get("steps", "20"))
    if not torch.cuda.is_available():
        result = {"gpu": None, "note": "no CUDA GPU: FSDP2 and DeepSpeed cannot run (accelerate enables them only on accelerators)"}
        print(json.dumps(result))
        return result
    root = Path(tempfile.mkdtemp(prefix="lmlab-dist-"))
    model = root / "model"
    build_model(model)
    common = ["train", "sft", f"model={model}", "data=storyworld/instruct", "limit=2000", "batch_size=8",
              "max_length=256", "log_every=1", "schedule=constant", "lr=3e-4", "keep_best=false", "eval_every=0",
              f"save_every={steps // 2}", "--quiet"]
    code, _, _ = lmlab(*common, f"max_steps={steps}", f"out={root / 'plain'}")
    reference = losses(root / "plain")
    rows = {}
    for name in launchers:
        run = root / name
        row: dict = {}
        if name.startswith("zero"):
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                rows[name] = {"ok": False, "note": "deepspeed not installed (pip install deepspeed)"}
                continue
        code, secs, tail = lmlab(*common, f"max_steps={steps // 2}", f"out={run}", f"launcher={name}", "num_processes=1")
        row["first_half_s"] = round(secs, 1)
        if code == 0:  # what a kill after the checkpoint leaves: drop the finished marker and final/
            (run / "result.json").unlink(missing_ok=True)
            subprocess.run(["rm", "-rf", str(run / "final")], check=False)
            code, secs, tail = lmlab(*common, f"max_steps={steps}", f"out={run}", f"launcher={name}", "num_processes=1",
                                     "--resume")
            row["resume_s"] = round(secs, 1)
        if code == 0:
            code, secs, tail = lmlab("generate", str(run), "prompt=Once upon a time", "max_new_tokens=20", "temperature=0")
            row["generate_s"] = round(secs, 1)
        got = losses(run)
        row["ok"] = code == 0
        row["steps_logged"] = len(got)
        if got and reference:
            n = min(len(got), len(reference))
            row["max_loss_diff_vs_plain"] = max(abs(a - b) for a, b in zip(got[:n], reference[:n], strict=True))
        if code != 0:
            row["error_tail"] = tail
        rows[name] = row
    result = {"gpu": torch.cuda.get_device_name(0), "steps": steps, "plain_final_loss": reference[-1] if reference else None,
              "launchers": rows}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
