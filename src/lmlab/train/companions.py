"""Companion models: frozen models that live beside the policy (reference, reward model, classifier).

The loop places them (device, dtype, `eval()`, `requires_grad=False`) and hands them to the step
through `ctx.companions`; it never optimises, checkpoints or `accelerator.prepare`s them, so
FSDP2 / DeepSpeed see exactly one trained model (they refuse more than one per `prepare`).

Which model is the *reference* is the subtle part (LLaMA-Factory#8459, trl#1263):

- the policy is LoRA on a full model M: the reference is M, i.e. the policy with its adapters
  switched off, no second copy in memory (`load_reference` returns None);
- the starting model is itself a LoRA adapter A on a base B (an SFT run with tuning=lora): "adapters
  off" would be B, not the SFT model B+A. The reference is B+A, merged and frozen;
- otherwise: a frozen copy of the starting model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError


def freeze(model: nn.Module) -> nn.Module:
    """eval() mode (no dropout) and no gradients: a companion is a fixed function."""
    model.eval()
    model.requires_grad_(False)
    return model


def place_companions(companions: dict[str, nn.Module], device: torch.device, mixed_precision: str) -> dict[str, nn.Module]:
    """Move each companion to the training device, frozen; under bf16 training on a GPU, in bf16
    (a frozen model needs no fp32 master weights, so this halves its memory)."""
    placed = {}
    for name, model in companions.items():
        if model is None:
            continue
        if device.type == "cuda" and mixed_precision == "bf16" and not getattr(model, "is_loaded_in_4bit", False):
            model = model.to(dtype=torch.bfloat16)
        if not getattr(model, "is_loaded_in_4bit", False):
            model = model.to(device)
        placed[name] = freeze(model)
    return placed


def _is_adapter(spec: str) -> bool:
    from lmlab.models.load import resolve_model_dir

    try:
        folder = resolve_model_dir(spec)
    except Exception:  # a bad spec is reported where the policy itself is loaded
        return False
    return folder is not None and (Path(folder) / "adapter_config.json").exists()


def load_reference(model_spec: str, *, policy: nn.Module | None, kind: str = "causal-lm",
                   trust_remote_code: bool = False, policy_spec: str | None = None) -> nn.Module | None:
    """The frozen reference policy `model_spec`, or None when the policy with adapters disabled
    *is* that model (see the module docstring). `policy_spec`: where the policy was loaded from,
    when it may differ from `model_spec` (a separately given reference is then always loaded)."""
    from lmlab.models.load import load_model

    if policy_spec is not None and policy_spec != model_spec:
        policy = None  # another model than the policy's start: adapters off would not be it
    if _is_adapter(model_spec):
        ref, _ = load_model(model_spec, kind=kind, trust_remote_code=trust_remote_code)
        ref = ref.merge_and_unload()  # the SFT model itself (base + its adapter), one plain module
        return freeze(ref)
    if hasattr(policy, "disable_adapter"):
        return None
    ref, _ = load_model(model_spec, kind=kind, trust_remote_code=trust_remote_code)
    return freeze(ref)


def _frozen_reference(ctx: Any) -> nn.Module | None:
    """The separately loaded reference: the "ref" companion, else `ctx.ref_model` (None: use the policy)."""
    ref = ctx.companions.get("ref") if ctx.companions else None
    return ref if ref is not None else ctx.ref_model


def reference_model(ctx: Any) -> Any:
    """The module `reference_logits` runs: the frozen reference, else the policy (with adapters off)."""
    ref = _frozen_reference(ctx)
    return ref if ref is not None else ctx.policy


@torch.no_grad()
def reference_logits(ctx: Any, **inputs: Any) -> Tensor:
    """Logits of the reference: the "ref" companion, else the policy with its adapters off."""
    ref = _frozen_reference(ctx)
    if ref is not None:
        return ref(**inputs).logits
    policy = ctx.policy
    if policy is None or not hasattr(policy, "disable_adapter"):
        raise ConfigError("this stage needs a reference model: none was given and the policy has no LoRA adapters "
                          "to switch off (load one with lmlab.train.companions.load_reference)")
    was_training = policy.training
    policy.eval()  # the reference is a fixed function: no dropout
    try:
        with policy.disable_adapter():
            return policy(**inputs).logits
    finally:
        policy.train(was_training)
