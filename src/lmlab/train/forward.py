"""Forward passes that run the LM head only where a loss reads it.

Preference and RL losses score the *reply* tokens only, yet a plain `model(**inputs).logits`
projects every position — prompt and padding included — onto the vocabulary: (N, T, V) floats,
a matmul of H × V per position and its backward. For a small model the head is a large share of
the work (hidden 128, vocabulary 2,048: the head costs as much per token as a whole decoder layer),
so computing it on the reply window alone is the cheapest speed-up there is.

transformers' causal LMs (and lmlab's recurrent models) take `logits_to_keep=k`: logits of the
last k positions only. The window is the same for every row of the batch (the earliest reply
position to the end), so rows stay rectangular and the call still goes through whatever wraps the
model (DDP, FSDP2, DeepSpeed, PEFT, torch.compile) — calling the decoder and the head separately
would bypass DDP's gradient hooks. A model without the argument gets the full forward pass.
"""
from __future__ import annotations

import inspect
from functools import lru_cache

from torch import Tensor, nn

from lmlab.train.objectives import IGNORE_INDEX


def innermost(model: nn.Module) -> nn.Module:
    """The module whose forward decides which keyword arguments reach the model's own code."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):  # DDP, DeepSpeed engine
            model = model.module
        elif isinstance(getattr(model, "policy", None), nn.Module):  # policy + value head
            model = model.policy
        else:
            break
    return model


@lru_cache(maxsize=64)
def _forward_takes(klass: type, name: str) -> bool:
    return name in inspect.signature(klass.forward).parameters


def accepts(model: nn.Module | None, name: str) -> bool:
    """Does the model's own forward take keyword `name` (looking through wrappers)?"""
    if model is None:
        return False
    return _forward_takes(type(innermost(model)), name)


def reply_window(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """k such that the last k positions hold every logit a loss on `labels` (N, T) reads.

    Position t predicts label t+1, so the first label at position f needs the logit at f−1; the
    window is [f−1, T): k = T − f + 1 (the whole row when no label is set).
    """
    T = labels.size(1)
    counted = (labels[:, 1:] != ignore_index).any(0).nonzero()
    if counted.numel() == 0:
        return T
    first = int(counted[0]) + 1  # earliest label position over the batch
    return T - first + 1


def window_kwargs(model: nn.Module | None, labels: Tensor) -> dict[str, int]:
    """`{"logits_to_keep": k}` for the reply window of `labels` when the model takes it, else {}."""
    k = reply_window(labels)
    return {"logits_to_keep": k} if k < labels.size(1) and accepts(model, "logits_to_keep") else {}


def align_labels(labels: Tensor, logits: Tensor) -> Tensor:
    """The last L = logits.size(1) label columns: what `token_logps(logits, ·)` pairs with a windowed
    forward pass (all of them when the model returned every position)."""
    return labels[:, labels.size(1) - logits.size(1):]

