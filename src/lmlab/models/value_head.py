"""A causal LM with a value head: the PPO critic V(s_t) on the policy's last hidden state.

    model = PolicyWithValue(policy)                 # V_t = w·h_t + b, one number per position
    out = model(input_ids=ids, attention_mask=mask)  # out.logits (B, T, V), out.values (B, T)

Sharing the trunk (Stiennon et al. 2020 use a separate network; Ouyang et al. 2022 initialise it
from the RM) halves memory at the cost of the two losses pulling on the same weights; the value
loss is scaled by `vf_coef` for that reason. The head starts at zero so the first values are 0
and the first advantages are the plain returns. `save_pretrained` writes the policy as an
ordinary HF folder (what `generate`, `chat` and `eval` load) plus `value_head.safetensors`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

VALUE_HEAD = "value_head.safetensors"


@dataclass
class PolicyValueOutput:
    logits: Tensor
    """(B, T, V) next-token logits"""
    values: Tensor
    """(B, T) V(s_t): the value of the state after reading tokens ≤ t"""


def hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    return int(model.get_output_embeddings().weight.shape[1])


class PolicyWithValue(nn.Module):
    """The policy plus a linear value head; `generate` and `config` are the policy's."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(hidden_size(policy), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.config = getattr(policy, "config", None)

    def forward(self, **inputs: Any) -> PolicyValueOutput:
        out = self.policy(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (B, T, H)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)  # (B, T)
        return PolicyValueOutput(logits=out.logits, values=values.float())

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.policy.generate(*args, **kwargs)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        self.policy.save_pretrained(folder, **kwargs)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(Path(folder) / VALUE_HEAD))

    def load_value_head(self, folder: str | Path) -> bool:
        """Load a saved head if `folder` has one (True), else keep the zero head (False)."""
        path = Path(folder) / VALUE_HEAD
        if not path.exists():
            return False
        from safetensors.torch import load_file

        self.value_head.load_state_dict(load_file(str(path)))
        return True


def value_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(policy parameters, value-head parameters) that train: two optimizer groups, two lrs."""
    head = {id(p) for p in getattr(model, "value_head", nn.Linear(1, 1)).parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) not in head], [p for p in params if id(p) in head]


def init_head_from(head: nn.Linear, classifier: nn.Module) -> bool:
    """Copy a one-output reward model's score head into the value head when the widths match
    (Ouyang et al. 2022: the value function starts from the RM); False when they do not."""
    score = getattr(classifier, "score", None) or getattr(classifier, "classifier", None)
    weight = getattr(score, "weight", None)
    if weight is None or weight.shape != head.weight.shape:
        return False
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype))
        if getattr(score, "bias", None) is not None:
            head.bias.copy_(score.bias.to(head.bias.dtype))
    return True
