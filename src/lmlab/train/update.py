"""One optimizer update: grad_accum micro-batches → exact weighting → clipping → AdamW → schedule.

Exact token weighting, the sharding-safe way (ALIGNMENT-NOTES §4.2): before any forward pass the
window's weights (tokens for LM losses, pairs for preference losses; `steps.with_weight`) are summed
over micro-batches and all-reduced over processes; each micro-batch then back-propagates

    loss_i · w_i · P / W        (W = global weight of the window, P = processes)

DDP/FSDP average gradients over P, so the update is Σ_all ∇(loss·w) / W: batch 8 × accum 1
equals batch 2 × accum 4 equals 2 processes × batch 2 × accum 2, however the tokens fall, and no
gradient is touched after backward (under ZeRO-2/3 and FSDP `p.grad` is only a shard).
A step function that declares no weight falls back to dividing gradients afterwards, which is
exact in one process and refused when distributed.

Also here: the optimizer (AdamW, no decay on 1-D parameters, several parameter groups with their
own lr) and how it is prepared *together with* the model (FSDP2 and DeepSpeed refuse them apart).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.train.schedules import make_scheduler, warmup_steps_for
from lmlab.train.steps import StepContext, StepFn, weight_of

ParamGroupsFn = Callable[[nn.Module], list[dict[str, Any]]]


def decay_split(params: Sequence[nn.Parameter], weight_decay: float, **extra: Any) -> list[dict[str, Any]]:
    """Decay matrices only: decaying norm gains and biases (1-D) just pulls them to 0 for no benefit."""
    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, **extra},
              {"params": no_decay, "weight_decay": 0.0, **extra}]
    return [g for g in groups if g["params"]]


def param_groups(model: nn.Module, weight_decay: float, lr: float, groups_fn: ParamGroupsFn | None = None) -> list[dict[str, Any]]:
    """Optimizer groups: one (policy) by default, or the stage's groups (e.g. a value head with its
    own lr), each split by decay; every group carries `base_lr`, the peak lr the schedule scales."""
    if groups_fn is None:
        specs = [{"params": [p for p in model.parameters() if p.requires_grad], "name": "model"}]
    else:
        specs = groups_fn(model)
    out = []
    for spec in specs:
        spec = dict(spec)
        params = list(spec.pop("params"))
        group_lr = float(spec.pop("lr", lr))
        out += decay_split(params, spec.pop("weight_decay", weight_decay), lr=group_lr, base_lr=group_lr, **spec)
    return out


@dataclass
class UpdateResult:
    """What one update did: Σ loss·w, Σ w, tokens, Σ metric·w (all processes), the gradient norm."""

    loss_sum: float
    weight: float
    tokens: int
    metric_sums: dict[str, float] = field(default_factory=dict)
    grad_norm: float | None = None


class Updater:
    """Owns the optimizer and the schedule; `update(batches)` runs one optimizer step."""

    def __init__(self, accelerator: Any, model: nn.Module, cfg: Any, total_steps: int,
                 groups_fn: ParamGroupsFn | None = None):
        from accelerate.utils import DistributedType

        self.acc, self.cfg = accelerator, cfg
        self.world = accelerator.num_processes
        self.distributed_type = accelerator.distributed_type
        self.deepspeed = self.distributed_type == DistributedType.DEEPSPEED
        groups = param_groups(model, cfg.weight_decay, cfg.lr, groups_fn)
        if not groups:
            raise ConfigError("no trainable parameters (check tuning / freeze settings)")
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas),
                                      fused=accelerator.device.type == "cuda")
        if self.deepspeed:
            # lmlab has no DataLoader for DeepSpeed to read these from (prepare() raises without them)
            ds = accelerator.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
            ds["gradient_accumulation_steps"] = cfg.grad_accum
            ds["gradient_clipping"] = float(cfg.clip_grad) if cfg.clip_grad is not None else 0.0
            ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * self.world
            accelerator.gradient_accumulation_steps = cfg.grad_accum
        # One prepare call for both: FSDP2 and DeepSpeed refuse a model and optimizer prepared apart.
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.raw: nn.Module = accelerator.unwrap_model(self.model)
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        self.torch_opt: torch.optim.Optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        # Single process, no loss scaler: accelerate's per-step wrappers add nothing but cost (its
        # optimizer step and zero_grad look for the `lomo` package on disk every call, ~2 ms a step
        # on CPU), so the step calls torch directly. Distributed and fp16 runs go through accelerate.
        self.direct = self.distributed_type == DistributedType.NO and getattr(accelerator, "scaler", None) is None
        warmup = warmup_steps_for(total_steps, cfg.warmup_steps, cfg.warmup_ratio)
        self.scheduler = make_scheduler(self.torch_opt, total_steps, schedule=cfg.schedule, warmup=warmup,
                                        min_lr_ratio=cfg.min_lr_ratio)
        self.last_lr = cfg.lr

    def set_base_lrs(self) -> None:
        """Re-apply the schedule from each group's `base_lr` at the current step. Needed after a
        resume: the scheduler's saved base lrs would otherwise win over the optimizer's groups."""
        groups = self.torch_opt.param_groups
        self.scheduler.base_lrs = [float(g.get("base_lr", self.cfg.lr)) for g in groups]
        step = self.scheduler.last_epoch
        for group, base, fn in zip(groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * fn(step)

    def rescale_lr(self, new_lr: float, old_lr: float) -> None:
        """`lr` changed on resume: every group's peak lr is scaled by new/old (a value head's own
        lr keeps its ratio to the policy's)."""
        for group in self.torch_opt.param_groups:
            group["base_lr"] = float(group.get("base_lr", old_lr)) * new_lr / old_lr
        self.set_base_lrs()

    # -- one update ------------------------------------------------------------------------------
    def _global(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        local = torch.tensor(values, device=self.acc.device, dtype=torch.float64)
        return [float(v) for v in self.acc.reduce(local, "sum")]

    def update(self, batches: Sequence[dict[str, Tensor]], step_fn: StepFn, forward_model: nn.Module,
               ctx: StepContext, on_nonfinite: Callable[[str, float], Exception], *, need_norm: bool = True) -> UpdateResult:
        """Forward/backward every micro-batch of the window, then clip, step and schedule."""
        acc, _cfg = self.acc, self.cfg
        declared = [weight_of(step_fn, b) for b in batches]
        scaled = all(w is not None for w in declared)
        if not scaled and self.world > 1:
            raise ConfigError(f"step function {getattr(step_fn, '__name__', step_fn)!r} declares no weight_of(batch); "
                              "distributed training needs it (lmlab.train.steps.with_weight)")
        global_weight = self._global([sum(declared)])[0] if scaled else None  # type: ignore[arg-type]
        loss_sum: Tensor | float = 0.0
        weight, tokens, metric_sums = 0.0, 0, {}
        n = len(batches)
        for k, batch in enumerate(batches):
            sync = contextlib.nullcontext() if self.world == 1 or k == n - 1 else acc.no_sync(self.model)
            with sync:
                out = step_fn(forward_model, batch, ctx)
                if scaled:
                    if abs(out.weight - declared[k]) > 1e-6 * max(1.0, out.weight):  # type: ignore[operator]
                        raise AssertionError(f"{getattr(step_fn, '__name__', step_fn)}: weight_of(batch)={declared[k]} "
                                             f"but the step reported weight {out.weight}")
                    factor = out.weight * self.world / global_weight if global_weight else 0.0  # type: ignore[operator]
                    if self.deepspeed:  # DeepSpeed divides every micro-batch loss by its own accumulation count
                        factor *= n
                    loss = out.loss * factor
                elif n > 1:
                    loss = out.loss * out.weight  # divided by the window's weight below
                else:
                    loss = out.loss
                if self.direct:
                    loss.backward()
                else:
                    acc.backward(loss)
            loss_sum = loss_sum + out.loss.detach() * out.weight
            weight += out.weight
            tokens += out.tokens
            for key, v in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + v * out.weight
        keys = sorted(metric_sums)
        totals = self._global([float(loss_sum), weight, float(tokens), *(metric_sums[k] for k in keys)])
        loss_value, weight, tokens = totals[0], totals[1], int(totals[2])
        metric_sums = dict(zip(keys, totals[3:], strict=True))
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise on_nonfinite("loss", loss_value)
        if not scaled and n > 1 and weight > 0:
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads:
                torch._foreach_div_(grads, weight)
        grad_norm = self._clip(need_norm)
        if grad_norm is not None and not math.isfinite(grad_norm) and acc.mixed_precision != "fp16":
            self.optimizer.zero_grad(set_to_none=True)
            raise on_nonfinite("gradient norm", grad_norm)
        opt = self.torch_opt if self.direct else self.optimizer
        self.last_lr = self.torch_opt.param_groups[0]["lr"]  # the lr this update used (logged)
        opt.step()
        self.scheduler.step()
        opt.zero_grad(set_to_none=True)
        return UpdateResult(loss_value, weight, tokens, metric_sums, grad_norm)

    def _clip(self, need_norm: bool) -> float | None:
        """Clip the global gradient norm, or measure it when it will be logged (`need_norm`);
        DeepSpeed clips inside its engine (`gradient_clipping` in its config)."""
        if self.deepspeed:
            engine = getattr(self.model, "get_global_grad_norm", None)
            norm = engine() if engine is not None else None
            return float(norm) if norm is not None else None
        if self.cfg.clip_grad is not None:
            clip = torch.nn.utils.clip_grad_norm_ if self.direct else self.acc.clip_grad_norm_
            return float(clip(self.params, self.cfg.clip_grad))
        if not need_norm:
            return None
        grads = [p.grad for p in self.params if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
