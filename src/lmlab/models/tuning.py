"""Which parameters train: full, freeze (last blocks + head), LoRA, QLoRA.

    model = apply_tuning(model, "lora", LoraSettings(rank=8), FreezeSettings())
    print(describe_trainable(model))        # trainable 74.0K / 20.3M (0.4%)

- full: every parameter.
- freeze: only the last `trainable_layers` blocks, the output head and the final norm (the block
  list is found generically: model.layers, transformer.h, …), or, when `freeze.trainable` is given,
  exactly the parameters whose names match one of its fnmatch patterns (Howard & Ruder 2018 call
  the gradual version "ULMFiT unfreezing").
- lora: peft adapters of rank r on the chosen linear layers, everything else frozen (Hu et al. 2021,
  W + (α/r)·BA); a sequence-classification head stays trainable (peft modules_to_save).
- qlora: LoRA over 4-bit NF4 weights (Dettmers et al. 2023). The quantization happens at load time
  (`load_model(spec, tuning="qlora")`), needs CUDA and bitsandbytes.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmlab.config import opt
from lmlab.errors import ConfigError, LmlabError

QLORA_NEEDS_CUDA = "QLoRA needs a CUDA GPU (bitsandbytes 4-bit); on CPU use tuning=lora"
TUNINGS = ("full", "freeze", "lora", "qlora")

# Where the decoder blocks live in common architectures; the first that exists wins.
BLOCK_PATHS = (
    "model.layers", "model.decoder.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers",
    "model.transformer.h", "transformer.layers", "backbone.layers", "decoder.layers", "layers",
)
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "layer_norm", "final_layernorm", "norm_f")
HEAD_NAMES = ("score", "classifier", "v_head", "value_head", "summary")



@dataclass
class LoraSettings:
    rank: int = opt(16, "LoRA rank r: adapter width; higher = more capacity and memory (Hu et al. 2021)")
    alpha: float = opt(32.0, "LoRA scaling α; the update is scaled by α/r")
    dropout: float = opt(0.05, "dropout on the LoRA input path")
    targets: list[str] = opt(["all-linear"], "module names to adapt, or 'all-linear'")

    def validate(self) -> list[str]:
        problems = []
        if self.rank < 1:
            problems.append(f"rank must be >= 1, got {self.rank} (typical: 8 to 64)")
        if self.alpha <= 0:
            problems.append(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        return problems


@dataclass
class FreezeSettings:
    trainable_layers: int = opt(2, "train only the last N transformer blocks (plus the head)")
    trainable: list[str] = opt([], "train only parameters whose name matches one of these patterns (fnmatch); overrides trainable_layers")
    train_tied_head: bool = opt(False, "when the output head shares its weight with the input embeddings (tied), train "
                                       "it too; off by default because training it moves the first layer as well")

    def validate(self) -> list[str]:
        return [f"trainable_layers must be >= 0, got {self.trainable_layers}"] if self.trainable_layers < 0 else []


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared (tied) tensor counted once."""
    from lmlab.models import count_parameters as _count

    return _count(model)


def describe_trainable(model: nn.Module) -> str:
    """'trainable 1.2M / 20.3M (5.9%)'."""
    from lmlab.models import human

    trainable, total = count_parameters(model)
    return f"trainable {human(trainable)} / {human(total)} ({100 * trainable / max(total, 1):.1f}%)"


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted path, ModuleList) of the repeated blocks: a known path, else the largest ModuleList."""
    base = _base(model)
    for path in BLOCK_PATHS:
        try:
            found = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise LmlabError(
            f"tuning=freeze: {type(base).__name__} has no list of blocks; name the parameters to train with "
            "freeze.trainable (fnmatch patterns such as 'lm_head.*')"
        )
    return max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))


def head_is_tied(model: nn.Module) -> bool:
    """Whether the output head's weight *is* the input embedding matrix (weight tying)."""
    base = _base(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    return head is not None and emb is not None and getattr(head, "weight", None) is getattr(emb, "weight", None)


def freeze_plan(model: nn.Module, trainable_layers: int, train_tied_head: bool = False) -> list[str]:
    """fnmatch patterns of what `freeze` trains: last N blocks, the head, the final norm.

    A head tied to the input embeddings is left out unless `train_tied_head`: it is the same tensor
    as the first layer, so "train the last blocks and the head" would quietly train the first layer too.
    """
    base = _base(model)
    path, blocks = find_blocks(base)
    n = max(0, min(trainable_layers, len(blocks)))
    patterns = [f"{path}.{i}.*" for i in range(len(blocks) - n, len(blocks))]
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    names = {id(m): name for name, m in base.named_modules()}
    if head is not None and id(head) in names and (train_tied_head or not head_is_tied(base)):
        patterns.append(f"{names[id(head)]}.*")
    for name, _ in base.named_children():
        if name in HEAD_NAMES:
            patterns.append(f"{name}.*")
    parent = path.rpartition(".")[0]
    parent_module = base.get_submodule(parent) if parent else base
    for name, _ in parent_module.named_children():
        if name in FINAL_NORM_NAMES:
            patterns.append(f"{parent + '.' if parent else ''}{name}.*")
    return patterns


def _param_names(model: nn.Module) -> list[str]:
    # remove_duplicate=False so a tied head weight is reachable under both names
    return [name for name, _ in model.named_parameters(remove_duplicate=False)]


def apply_freeze(model: nn.Module, trainable_layers: int, patterns: list[str] | None = None,
                 train_tied_head: bool = False) -> nn.Module:
    patterns = list(patterns or []) or freeze_plan(model, trainable_layers, train_tied_head)
    from lmlab.progress import log

    tied = " (the head is tied to the input embeddings and stays frozen; freeze.train_tied_head=true trains both)" \
        if head_is_tied(model) and not train_tied_head and not any("embed" in p or "head" in p for p in patterns) else ""
    log(f"freeze: training {', '.join(patterns)}{tied}")
    matched = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        hit = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
        matched.update(hit)
        param.requires_grad_(False)
        param._lmlab_train = bool(hit) or getattr(param, "_lmlab_train", False)
    for param in model.parameters():  # a tied tensor trains if any of its names matched
        param.requires_grad_(getattr(param, "_lmlab_train", False))
        del param._lmlab_train
    unmatched = [p for p in patterns if p not in matched]
    if unmatched:
        from lmlab.config import closest

        names = _param_names(model)
        hint = closest(unmatched[0].rstrip("*."), names)
        raise ConfigError(
            f"freeze.trainable: pattern '{unmatched[0]}' matches no parameter"
            + (f"; closest name: '{hint}'" if hint else "") + f" (e.g. {', '.join(names[:3])} …)"
        )
    return model


def _task_type(model: nn.Module) -> str:
    name = type(_base(model)).__name__
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if getattr(model.config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    return "CAUSAL_LM"


def apply_lora(model: nn.Module, lora: Any) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = list(lora.targets or ["all-linear"])
    target_modules: str | list[str] = "all-linear" if targets == ["all-linear"] else targets
    head = _base(model).get_output_embeddings() if hasattr(_base(model), "get_output_embeddings") else None
    if target_modules == "all-linear" and not any(
        isinstance(m, nn.Linear) and m is not head for m in _base(model).modules()
    ):
        raise ConfigError(
            f"tuning=lora: {type(_base(model)).__name__} has no linear layers besides its output head for LoRA to "
            "adapt (nn.LSTM / nn.GRU keep their weights inside the cell); use tuning=full or tuning=freeze"
        )
    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=target_modules, task_type=_task_type(model),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        if "not found in the base model" in str(exc) or "Target modules" in str(exc):
            from lmlab.config import closest

            linear = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            bad = [t for t in targets if t not in linear]
            hint = closest(bad[0], linear) if bad else None
            raise ConfigError(
                f"lora.targets: {bad or targets} not found in {type(model).__name__}"
                + (f"; did you mean '{hint}'?" if hint else "") + f" (linear layers: {', '.join(linear)}, or all-linear)"
            ) from None
        raise


def apply_tuning(model: nn.Module, tuning: str | None, lora: Any = None, freeze: Any = None) -> nn.Module:
    """Set which parameters train; returns the model (a PeftModel for lora/qlora)."""
    tuning = tuning or "full"
    lora = lora if lora is not None else LoraSettings()
    freeze = freeze if freeze is not None else FreezeSettings()
    if tuning not in TUNINGS:
        from lmlab.config import closest

        hint = closest(tuning, TUNINGS)
        raise ConfigError(f"tuning={tuning!r} is unknown" + (f"; did you mean '{hint}'?" if hint else "") + f" ({', '.join(TUNINGS)})")
    if tuning == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if tuning == "freeze":
        return apply_freeze(model, freeze.trainable_layers, freeze.trainable, getattr(freeze, "train_tied_head", False))
    if tuning == "qlora":
        if not torch.cuda.is_available():
            raise LmlabError(QLORA_NEEDS_CUDA)
        if not getattr(model, "is_loaded_in_4bit", False):
            raise LmlabError(
                "tuning=qlora needs the base weights quantized while loading: load_model(spec, tuning='qlora') "
                "(a from-scratch architecture cannot be QLoRA-tuned; use tuning=lora)"
            )
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return apply_lora(model, lora)
