"""The model zoo: from-scratch architectures by name, registered with the Hugging Face Auto classes.

    model = build_model("transformer:small", vocab_size=8192, overrides={"num_layers": 4})

`spec` is `arch[:size]`: arch in rnn, lstm, gru (ours, `PreTrainedModel` subclasses), transformer
(a Llama config) or seq2seq (a BART config); size in tiny, small, base, medium (`PRESETS`). Every
variant is a table entry: an architecture names its config and model classes, its defaults, its
size presets and the friendly aliases of config keys (`num_layers` → `num_hidden_layers`).

Importing this package registers our configs with `AutoConfig` and models with
`AutoModelForCausalLM`, so `AutoModelForCausalLM.from_pretrained(folder)` loads an RNN checkpoint
exactly as it loads Qwen2.5.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)

from lmlab.config import closest
from lmlab.errors import ConfigError
from lmlab.models import recurrent, rnn, seq2seq, transformer

DEFAULT_SIZE = "small"


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    presets: dict[str, dict]
    kind: str = "causal-lm"  # or "seq2seq"
    defaults: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    help: str = ""
    classifier_class: type[PreTrainedModel] | None = None  # our archs' sequence-classification twin


_DECODER_ALIASES = {"num_layers": ("num_hidden_layers",), "layers": ("num_hidden_layers",)}
_ATTENTION_ALIASES = {
    **_DECODER_ALIASES,
    "num_heads": ("num_attention_heads",),
    "heads": ("num_attention_heads",),
    "ffn_size": ("intermediate_size",),
    "dropout": ("attention_dropout",),  # Llama has no residual dropout
}
_SEQ2SEQ_ALIASES = {
    "hidden_size": ("d_model",),
    "num_layers": ("encoder_layers", "decoder_layers"),
    "layers": ("encoder_layers", "decoder_layers"),
    "num_heads": ("encoder_attention_heads", "decoder_attention_heads"),
    "heads": ("encoder_attention_heads", "decoder_attention_heads"),
    "ffn_size": ("encoder_ffn_dim", "decoder_ffn_dim"),
    "intermediate_size": ("encoder_ffn_dim", "decoder_ffn_dim"),
}

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture("rnn", rnn.RNNConfig, rnn.RNNForCausalLM, rnn.PRESETS, aliases=_DECODER_ALIASES,
                     help="hand-written Elman RNN (tanh)", classifier_class=rnn.RNNForSequenceClassification),
        Architecture("lstm", recurrent.LSTMConfig, recurrent.LSTMForCausalLM, recurrent.PRESETS,
                     aliases=_DECODER_ALIASES, help="LSTM (nn.LSTM, cuDNN on GPU)",
                     classifier_class=recurrent.LSTMForSequenceClassification),
        Architecture("gru", recurrent.GRUConfig, recurrent.GRUForCausalLM, recurrent.PRESETS,
                     aliases=_DECODER_ALIASES, help="GRU (nn.GRU, cuDNN on GPU)",
                     classifier_class=recurrent.GRUForSequenceClassification),
        Architecture("transformer", transformer.CONFIG_CLASS, transformer.MODEL_CLASS, transformer.PRESETS,
                     defaults=transformer.DEFAULTS, aliases=_ATTENTION_ALIASES,
                     help="decoder-only Llama (RoPE, RMSNorm, SwiGLU)"),
        Architecture("seq2seq", seq2seq.CONFIG_CLASS, seq2seq.MODEL_CLASS, seq2seq.PRESETS, kind="seq2seq",
                     defaults=seq2seq.DEFAULTS, aliases=_SEQ2SEQ_ALIASES, help="encoder-decoder BART"),
    ]
}
PRESETS: dict[str, dict[str, dict]] = {name: arch.presets for name, arch in ARCHITECTURES.items()}


def _register() -> None:
    for arch in ARCHITECTURES.values():
        model_type = arch.config_class.model_type
        if model_type.startswith("lmlab_"):
            AutoConfig.register(model_type, arch.config_class, exist_ok=True)
            AutoModelForCausalLM.register(arch.config_class, arch.model_class, exist_ok=True)
        if arch.classifier_class is not None:
            AutoModelForSequenceClassification.register(arch.config_class, arch.classifier_class, exist_ok=True)


_register()


def parse_spec(spec: str) -> tuple[str, str]:
    """'transformer:small' → ('transformer', 'small'); the size defaults to DEFAULT_SIZE."""
    arch, _, size = spec.strip().partition(":")
    return arch.strip().lower(), (size.strip().lower() or DEFAULT_SIZE)


def is_architecture(spec: str) -> bool:
    """True for 'rnn', 'transformer:tiny' …; False for hub ids and folders."""
    if not isinstance(spec, str) or "/" in spec or "\\" in spec:
        return False
    return parse_spec(spec)[0] in ARCHITECTURES


def names_architecture(spec: str) -> bool:
    """True when `spec` can only mean `arch:size` (a colon, no slash, not a folder): hub ids never
    hold a colon, so 'mamba:tiny' is an unknown architecture, not a repository to download."""
    import os

    return isinstance(spec, str) and ":" in spec and "/" not in spec and "\\" not in spec and not os.path.exists(spec)


def architecture(spec: str) -> tuple[Architecture, str]:
    """The registry entry and size of `spec`, or a ConfigError naming the closest valid name."""
    name, size = parse_spec(spec)
    if name not in ARCHITECTURES:
        hint = closest(name, ARCHITECTURES)
        raise ConfigError(
            f"unknown architecture '{name}' in model='{spec}'" + (f"; did you mean '{hint}'?" if hint else "")
            + f"; known: {', '.join(ARCHITECTURES)} (or give a HF hub id, a model folder or a run folder)"
        )
    arch = ARCHITECTURES[name]
    if size not in arch.presets:
        hint = closest(size, arch.presets)
        raise ConfigError(
            f"unknown size '{size}' in model='{spec}'" + (f"; did you mean '{name}:{hint}'?" if hint else "")
            + f" (sizes of {name}: {', '.join(arch.presets)})"
        )
    return arch, size


def config_keys(arch: Architecture) -> set[str]:
    return {f.name for f in dataclasses.fields(arch.config_class)}


def build_config(
    spec: str,
    vocab_size: int,
    *,
    overrides: dict[str, Any] | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedConfig:
    """The HF config `spec` stands for: defaults, then the size preset, then `overrides`."""
    arch, size = architecture(spec)
    keys = config_keys(arch)
    values: dict[str, Any] = {**arch.defaults, **arch.presets[size]}
    problems = []
    for key, value in (overrides or {}).items():
        targets = arch.aliases.get(key, (key,))
        if any(t not in keys for t in targets):
            hint = closest(key, sorted(keys | set(arch.aliases)))
            problems.append(
                f"model '{spec}': unknown architecture key '{key}'" + (f"; did you mean '{hint}'?" if hint else "")
            )
            continue
        values.update(dict.fromkeys(targets, value))
    if problems:
        raise ConfigError("\n".join(problems))
    if eos_token_id is not None and pad_token_id is None:
        pad_token_id = eos_token_id
    values.update(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if arch.kind == "seq2seq":
        values["decoder_start_token_id"] = bos_token_id if bos_token_id is not None else eos_token_id
    try:
        return arch.config_class(vocab_size=vocab_size, **values)
    except Exception as exc:  # the config's own validation (huggingface_hub strict dataclasses)
        raise ConfigError(f"model '{spec}' with {overrides or {}}: {exc}") from None


def build_model(
    spec: str,
    vocab_size: int,
    *,
    overrides: dict[str, Any] | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised model for `arch[:size]` (seed with torch.manual_seed first)."""
    config = build_config(
        spec, vocab_size, overrides=overrides,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    arch, _ = architecture(spec)
    return arch.model_class(config)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        # 4-bit bitsandbytes weights pack two values per byte
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def human(n: float) -> str:
    """1234567 → '1.2M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def preset_table(vocab_size: int = 8192) -> list[dict[str, Any]]:
    """One row per architecture and size with its parameter count (built on the meta device)."""
    import torch

    rows = []
    for name, arch in ARCHITECTURES.items():
        for size, preset in arch.presets.items():
            config = build_config(f"{name}:{size}", vocab_size, eos_token_id=0)
            with torch.device("meta"):
                model = arch.model_class(config)
            _, total = count_parameters(model)
            rows.append({"model": f"{name}:{size}", **preset, "params": total})
    return rows


from lmlab.models.load import load_model, resolve_model_dir  # noqa: E402  (needs the registry above)
from lmlab.models.tuning import apply_tuning, describe_trainable  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "Architecture",
    "apply_tuning",
    "architecture",
    "build_config",
    "build_model",
    "count_parameters",
    "describe_trainable",
    "human",
    "is_architecture",
    "load_model",
    "names_architecture",
    "parse_spec",
    "preset_table",
    "resolve_model_dir",
]
