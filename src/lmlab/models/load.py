"""Load any model by one name: a run folder, a model folder, a LoRA adapter folder or a hub id.

    model, tokenizer = load_model("runs/quickstart/sft")          # its final/
    model, tokenizer = load_model("Qwen/Qwen2.5-0.5B-Instruct")   # hub (or the HF cache offline)
    model, tokenizer = load_model("runs/sft-lora/final")          # base + adapter (peft)

Resolution order: a run folder (has final/ or result.json) → its `final/`; a folder with
`adapter_config.json` → its base model plus the peft adapter; a folder with `config.json` → that
model; anything else is a hub id handed to `from_pretrained`. Our own architectures load through the
same Auto classes because importing `lmlab.models` registers them.

QLoRA is decided here, not later: 4-bit weights must be quantized while they load
(`tuning="qlora"` → bitsandbytes NF4), so on a machine without CUDA it fails before any download.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import torch

import lmlab.models  # noqa: F401  (registers our architectures with the Auto classes)
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.models import architecture, names_architecture
from lmlab.models.tuning import QLORA_NEEDS_CUDA, apply_tuning, count_parameters, describe_trainable

Kind = Literal["causal-lm", "seq2seq", "sequence-classification"]
KINDS = ("causal-lm", "seq2seq", "sequence-classification")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

__all__ = ["apply_tuning", "count_parameters", "describe_trainable", "load_model", "resolve_model_dir"]


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(("/", "\\")) or spec.count("/") > 1


def resolve_model_dir(spec: str) -> Path | None:
    """The folder holding the model `spec` names, or None when `spec` is not a local folder."""
    path = Path(spec).expanduser()
    if names_architecture(spec):
        architecture(spec)  # raises for an unknown architecture or size, naming the known ones
    if not path.is_dir():
        # runs/quickstrat (a typo under an existing folder) is a missing folder, not a hub id
        if _looks_like_path(spec) or ("/" in spec and path.parent.is_dir() and str(path.parent) not in ("", ".")):
            from lmlab.config import closest

            siblings = [p.name for p in path.parent.iterdir() if p.is_dir()] if path.parent.is_dir() else []
            hint = closest(path.name, siblings)
            raise LmlabError(
                f"model={spec}: no such folder" + (f"; did you mean '{path.parent / hint}'?" if hint else "")
                + " (give a run folder, a model folder or a hub id such as Qwen/Qwen2.5-0.5B)"
            )
        return None
    final = path / "final"
    if final.is_dir():
        return final
    if (path / "result.json").exists() and not (path / "config.json").exists():
        raise LmlabError(f"model={spec}: run folder without final/ (the run did not finish; rerun it with --resume)")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise LmlabError(
            f"model={spec}: {path} has neither config.json nor adapter_config.json nor final/; "
            "give a run folder, a folder written by save_pretrained, or a hub id"
        )
    return path


def quiet_hub_progress() -> None:
    """In quiet mode (--quiet, CI) also silence transformers' own loading/saving progress bars."""
    from lmlab.progress import is_quiet

    if is_quiet():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        from lmlab.config import closest

        hint = closest(dtype, DTYPES)
        raise LmlabError(f"dtype={dtype!r} is unknown" + (f"; did you mean '{hint}'?" if hint else "") + f" ({', '.join(DTYPES)})")
    return DTYPES[dtype]


def _offline_error(spec: str, exc: Exception) -> LmlabError:
    return LmlabError(
        f"model={spec}: could not load it from the Hugging Face hub or the local cache ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:200]}). This machine may be offline: pass a local folder instead (on a "
        f"connected machine: `huggingface-cli download {spec} --local-dir DIR`, then model=DIR), or set HF_HOME "
        "to a Hugging Face cache that already holds it"
    )


def _quantization_config() -> Any:
    if not torch.cuda.is_available():
        raise LmlabError(QLORA_NEEDS_CUDA)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LmlabError("tuning=qlora needs bitsandbytes: pip install 'lmlab[gpu]' (or use tuning=lora)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )


def _auto_class(kind: str, source: str, trust_remote_code: bool) -> Any:
    import transformers

    if kind == "sequence-classification":
        return transformers.AutoModelForSequenceClassification
    if kind == "seq2seq":
        return transformers.AutoModelForSeq2SeqLM
    # causal-lm: an encoder-decoder checkpoint still loads (generation treats both alike)
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception:  # reported by from_pretrained below, with the right message
        return transformers.AutoModelForCausalLM
    if getattr(config, "is_encoder_decoder", False):
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM


def _from_pretrained(source: str, kind: str, *, spec: str, dtype: Any, trust_remote_code: bool,
                     num_labels: int, quantization: Any, tokenizer: Any) -> Any:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if kind == "sequence-classification":
        kwargs["num_labels"] = num_labels
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        if pad is not None:
            kwargs["pad_token_id"] = pad  # the head pools the last non-pad token
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    auto = _auto_class(kind, source, trust_remote_code)
    from safetensors import SafetensorError

    try:
        return auto.from_pretrained(source, **kwargs)
    except SafetensorError as exc:
        raise LmlabError(f"model={spec}: {_broken_weights(source)} is corrupt or truncated ({exc}); "
                         "copy or save the model again (a finished run's final/ is written atomically)") from None
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise LmlabError(f"model={spec}: {kind} is not available for this architecture ({str(exc).splitlines()[0]})") from None
        raise
    except OSError as exc:
        if Path(source).is_dir():
            raise LmlabError(f"model={spec}: {exc}") from None
        raise _offline_error(spec, exc) from None


def _broken_weights(source: str) -> str:
    """The first .safetensors file under `source` whose header cannot be read (else the folder)."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []:
        try:
            with safe_open(str(path), "pt") as fh:
                fh.keys()
        except (SafetensorError, OSError):
            return str(path)
    return source


def _load_tokenizer(source: str, spec: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        if Path(source).is_dir():
            raise LmlabError(
                f"model={spec}: no usable tokenizer in {source} ({str(exc).splitlines()[0][:160]}); save one there "
                "(tokenizer.save_pretrained) or pass tokenizer=DIR"
            ) from None
        raise _offline_error(spec, exc) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batching needs a pad id; masked out everywhere it is used
    return tok


def load_model(
    spec: str,
    *,
    kind: Kind = "causal-lm",
    tuning: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    num_labels: int = 1,
    tokenizer: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `spec`; see the module docstring for how `spec` is resolved.

    `kind` picks the head (an encoder-decoder checkpoint loads as seq2seq even for causal-lm);
    `tuning="qlora"` loads the weights in 4-bit (CUDA only); `tokenizer` overrides where the
    tokenizer comes from. The model is returned in eval mode on `device` (auto: CUDA if present).
    """
    from lmlab.models import is_architecture

    quiet_hub_progress()
    if kind not in KINDS:
        raise LmlabError(f"kind={kind!r} must be one of {', '.join(KINDS)}")
    if is_architecture(spec) and not Path(spec).is_dir():
        raise LmlabError(
            f"model={spec} is an architecture without trained weights; pretrain it first "
            f"(lmlab train pt model={spec}) and pass the run folder, or call lmlab.models.build_model"
        )
    quantization = _quantization_config() if tuning == "qlora" else None
    folder = resolve_model_dir(spec)
    torch_dtype = _dtype(dtype)
    if folder is not None and (folder / "adapter_config.json").exists():
        model, tok = _load_adapter(folder, spec, kind=kind, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                   num_labels=num_labels, quantization=quantization, tokenizer=tokenizer)
    else:
        source = str(folder) if folder is not None else spec
        tok = _load_tokenizer(tokenizer or source, spec, trust_remote_code)
        model = _from_pretrained(source, kind, spec=spec, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                 num_labels=num_labels, quantization=quantization, tokenizer=tok)
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    target = resolve_device(device) if not isinstance(device, torch.device) else device
    if target is not None and quantization is None:
        model = model.to(target)
    model.eval()
    return model, tok


def _load_adapter(folder: Path, spec: str, *, kind: str, dtype: Any, trust_remote_code: bool, num_labels: int,
                  quantization: Any, tokenizer: str | None) -> tuple[Any, Any]:
    """Base model (itself resolved like any spec) + the peft adapter in `folder`."""
    from peft import PeftModel

    adapter = json.loads((folder / "adapter_config.json").read_text())
    base = adapter.get("base_model_name_or_path")
    if not base:
        raise LmlabError(f"{folder / 'adapter_config.json'}: no base_model_name_or_path; cannot tell which model it adapts")
    base_folder = resolve_model_dir(base)
    base_source = str(base_folder) if base_folder is not None else base
    has_tokenizer = any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    tok = _load_tokenizer(tokenizer or (str(folder) if has_tokenizer else base_source), spec, trust_remote_code)
    if kind == "causal-lm" and adapter.get("task_type") == "SEQ_CLS":
        kind = "sequence-classification"
    model = _from_pretrained(base_source, kind, spec=base, dtype=dtype, trust_remote_code=trust_remote_code,
                             num_labels=num_labels, quantization=quantization, tokenizer=tok)
    return PeftModel.from_pretrained(model, str(folder)), tok
