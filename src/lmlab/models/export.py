"""Export a model as a standalone Hugging Face folder (weights + config + tokenizer).

    lmlab export runs/sft-lora out=exported/storyteller merge_lora=true

A LoRA run is merged into its base weights (W + (α/r)·BA, peft `merge_and_unload`) so the result
needs neither peft nor the base model; `merge_lora=false` copies the adapter alone. The exported
folder loads with `AutoModelForCausalLM.from_pretrained` (our RNN/LSTM/GRU need `import
lmlab.models` first; transformer and seq2seq exports are plain Llama / BART checkpoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import opt
from lmlab.errors import LmlabError


@dataclass
class ExportConfig:
    """`lmlab export MODEL out=DIR`: a standalone HF model folder (LoRA merged by default)."""

    model: str = opt(help="a run folder, a model folder, a LoRA adapter folder or a hub id")
    out: str = opt(help="folder to write (created; an existing one is replaced atomically)")
    merge_lora: bool = opt(True, "merge LoRA adapters into the base weights (false: write the adapter only)")
    dtype: str | None = opt(None, "cast the weights: float32, bfloat16, float16 (default: keep)")
    trust_remote_code: bool = opt(False, "allow model code from the hub")


def export(model_spec: str, out: str | Path, merge_lora: bool = True, *, dtype: str | None = None,
           trust_remote_code: bool = False) -> Path:
    """Write `model_spec` to `out` as a folder `from_pretrained` reads; returns `out`."""
    from lmlab.models.load import load_model
    from lmlab.runs import atomic_dir

    if Path(out).resolve() == Path(model_spec).expanduser().resolve():
        raise LmlabError(f"out={out} is the model folder itself; choose another folder")
    model, tokenizer = load_model(str(model_spec), dtype=dtype, device="cpu", trust_remote_code=trust_remote_code)
    is_adapter = hasattr(model, "peft_config")
    if is_adapter and merge_lora:
        if getattr(model.get_base_model(), "is_loaded_in_4bit", False):  # pragma: no cover - GPU only
            raise LmlabError("cannot merge into 4-bit weights; export the adapter (merge_lora=false)")
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    from lmlab.models import human

    path = export(cfg.model, cfg.out, cfg.merge_lora, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    files = sorted(p.name for p in path.iterdir())
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    print(f"exported {cfg.model} → {path} ({human(size)}B: {', '.join(files)})")
    return {"out": str(path), "files": files, "bytes": size}
