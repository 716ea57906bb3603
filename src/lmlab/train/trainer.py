"""The training loop every stage shares; it knows nothing about stages.

A stage gives it a model, a step function (`steps.py`), a `BatchSource` and a `TrainConfig`;
the loop does the rest on `accelerate` (device placement, mixed precision, distributed):

- AdamW (fused on CUDA), no weight decay on 1-D parameters (norms, biases);
- warm-up + cosine / linear / constant schedule (`schedules.py`);
- gradient accumulation with exact token weighting: each micro-batch back-propagates
  `loss * weight` and the window's gradient is divided by its total weight, so batch 8 × accum 1
  equals batch 2 × accum 4 up to float error, however the tokens fall into micro-batches;
- gradient clipping, bf16/fp16 autocast, gradient checkpointing, optional torch.compile;
- periodic evaluation (val loss, perplexity), early stopping, keep-best (final/ = best weights);
- atomic checkpoints (model, optimizer, scheduler, RNG, data position, best metric) and exact
  resume: a resumed run logs the same losses as one that was never interrupted;
- NaN/inf detection: stops with `TrainingDiverged` before anything is written after the bad step;
- metrics.jsonl rows, TensorBoard scalars, a progress bar with tokens/s and ETA.

    trainer = Trainer(model, lm_step, BlockSource(tokens, 256, 8, seed=0), cfg, RunDir("runs/x"),
                      eval_source=val, tokenizer=tok)
    result = trainer.fit(resume=False)     # also writes final/ and result.json
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmlab.config import to_dict
from lmlab.devices import resolve_device
from lmlab.errors import ConfigError, DataError, TrainingDiverged
from lmlab.progress import is_quiet, log, progress_bar
from lmlab.runs import RunDir, atomic_dir, atomic_write_json
from lmlab.train.config import TrainConfig
from lmlab.train.objectives import perplexity
from lmlab.train.schedules import make_scheduler, warmup_steps_for
from lmlab.train.steps import BatchSource, StepContext, StepFn, StepOutput, reports_perplexity

__all__ = ["BatchSource", "Callback", "StepContext", "StepFn", "StepOutput", "Trainer", "extra_callbacks"]

WEIGHTS = "model.safetensors"


class Callback:
    """Hooks into the loop; override what you need. Set `trainer.should_stop = True` to stop early."""

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer, result: dict[str, Any]) -> None: ...


_EXTRA: ContextVar[tuple[Callback, ...]] = ContextVar("lmlab_extra_callbacks", default=())


@contextmanager
def extra_callbacks(callbacks: Sequence[Callback]) -> Iterator[None]:
    """Attach callbacks to every Trainer built inside this block (how `lmlab sweep` prunes a trial
    run through the ordinary stage command, without the stage knowing)."""
    token = _EXTRA.set(_EXTRA.get() + tuple(callbacks))
    try:
        yield
    finally:
        _EXTRA.reset(token)


@dataclass
class TrainerState:
    """Everything besides tensors that resume needs; saved as trainer_state.json."""

    step: int = 0
    micro: int = 0  # next micro-batch index
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    last_eval_step: int = -1
    elapsed_s: float = 0.0
    tokens: int = 0
    # the open logging window (so a log row spanning a checkpoint is the same after resume)
    win_loss: float = 0.0
    win_weight: float = 0.0
    win_tokens: int = 0
    win_time: float = 0.0
    win_metrics: dict[str, float] = field(default_factory=dict)
    last_train_loss: float | None = None


def resolve_precision(precision: str, device: torch.device) -> str:
    """Config precision → accelerate's mixed_precision ('no', 'bf16', 'fp16')."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision=fp16 needs a CUDA GPU (training on {device.type}); use precision=bf16 or precision=fp32")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def make_accelerator(mixed_precision: str, cpu: bool) -> Any:
    """An Accelerator; several stages in one process may ask for different settings, so a
    single-process state left by an earlier stage is reset instead of refused."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: decaying norm gains and biases (1-D) just pulls them to 0 for no benefit."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def save_weights(model: nn.Module, path: Path) -> None:
    """All weights as safetensors (tied tensors stored once), for checkpoints and best/."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True)


class Trainer:
    """One loop for every stage. See the module docstring for features; `fit()` runs it."""

    def __init__(self, model: nn.Module, step_fn: StepFn, train: BatchSource, cfg: TrainConfig, run: RunDir, *,
                 eval_source: BatchSource | None = None, tokenizer: Any = None, ctx: StepContext | None = None,
                 callbacks: Sequence[Callback] = ()):
        if len(train) < 1:
            raise DataError(f"{run.path}: the training data gives no micro-batch (batch_size={cfg.batch_size}); "
                            "add data or lower batch_size / max_length")
        self.cfg = cfg
        self.run = run
        self.step_fn = step_fn
        self.train_source = train
        self.eval_source = eval_source
        self.tokenizer = tokenizer
        self.ctx = ctx or StepContext()
        self.callbacks: list[Callback] = [*callbacks, *_EXTRA.get()]
        self.should_stop = False
        self.state = TrainerState()
        self.last_lr = cfg.lr

        device = resolve_device(cfg.device)
        self.mixed_precision = resolve_precision(cfg.precision, device)
        self.accelerator = make_accelerator(self.mixed_precision, cpu=device.type == "cpu")
        # Data parallel: process r of P takes global micro-batches i·P + r, so one optimizer step
        # sees batch_size × grad_accum × P examples and every process sees different data.
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(train) / (cfg.grad_accum * self.world)))
        if cfg.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(f"gradient_checkpointing=true: {type(model).__name__} does not support it; set it to false")
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = self.accelerator.prepare(model)
        self.raw: nn.Module = self.accelerator.unwrap_model(self.model)
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("no trainable parameters (check tuning / freeze settings)")
        optimizer = torch.optim.AdamW(param_groups(self.raw, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                                      fused=self.accelerator.device.type == "cuda")
        self.optimizer = self.accelerator.prepare(optimizer)
        # Single process, no loss scaler: accelerate's per-step wrappers add nothing but cost (its
        # optimizer step and zero_grad look for the `lomo` package on disk every call, ~2 ms a step
        # on CPU), so the step calls torch directly. Distributed and fp16 runs go through accelerate.
        from accelerate.utils import DistributedType

        self._direct = self.accelerator.distributed_type == DistributedType.NO and getattr(self.accelerator, "scaler", None) is None
        self._torch_opt: torch.optim.Optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        warmup = warmup_steps_for(self.total_steps, cfg.warmup_steps, cfg.warmup_ratio)
        self.scheduler = make_scheduler(self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
                                        self.total_steps, schedule=cfg.schedule, warmup=warmup, min_lr_ratio=cfg.min_lr_ratio)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model

    # -- batches -----------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        if dev.type == "cpu":
            return batch
        return {k: v.to(dev, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Weighted mean loss over the first `eval_batches` micro-batches of the eval source."""
        assert self.eval_source is not None
        n = len(self.eval_source) if self.cfg.eval_batches <= 0 else min(self.cfg.eval_batches, len(self.eval_source))
        self.forward_model.eval()
        self.ctx.training = False
        loss_sum, weight_sum, sums = 0.0, 0.0, {}
        try:
            for i in range(n):
                out = self.step_fn(self.forward_model, self._to_device(self.eval_source.get(i)), self.ctx)
                loss_sum += float(out.loss) * out.weight
                weight_sum += out.weight
                for k, v in out.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * out.weight
        finally:
            self.forward_model.train()
            self.ctx.training = True
        w = max(weight_sum, 1e-12)
        loss = loss_sum / w
        ppl = {"ppl": perplexity(loss)} if reports_perplexity(self.step_fn) else {}
        return {"loss": loss, **ppl, **{k: v / w for k, v in sums.items()}}

    # -- checkpoints -------------------------------------------------------------------------
    def _save_checkpoint(self) -> Path:
        step = self.state.step
        path = self.run.checkpoints_dir / f"step-{step}"
        if self.main:
            self._write_checkpoint(path)
        self.accelerator.wait_for_everyone()
        return path

    def _write_checkpoint(self, path: Path) -> None:
        with atomic_dir(path) as tmp:
            save_weights(self.raw, tmp / WEIGHTS)
            config = getattr(self.raw, "config", None)
            if config is not None and hasattr(config, "save_pretrained"):
                config.save_pretrained(tmp)  # so a checkpoint loads with from_pretrained too
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            scaler = getattr(self.accelerator, "scaler", None)
            rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                   "scaler": scaler.state_dict() if scaler is not None else None}
            torch.save(rng, tmp / "rng.pt")
            atomic_write_json(tmp / "trainer_state.json", to_dict(self.state))
        protect = self.run.checkpoints_dir / f"step-{self.state.best_step}" if self.state.best_step is not None else None
        self.run.prune_checkpoints(self.cfg.save_total_limit, protect=protect)

    def _load_checkpoint(self, path: Path) -> None:
        load_weights(self.raw, path / WEIGHTS)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.accelerator.device))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        rng = torch.load(path / "rng.pt", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and rng.get("scaler") is not None:
            scaler.load_state_dict(rng["scaler"])
        self.state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))

    def _save_best(self) -> None:
        if not self.main:
            return
        with atomic_dir(self.run.checkpoints_dir / "best") as tmp:
            save_weights(self.raw, tmp / WEIGHTS)
            atomic_write_json(tmp / "trainer_state.json", {"step": self.state.step, "val_loss": self.state.best_loss})

    def _save_final(self) -> None:
        from transformers.utils import logging as hf_logging

        if not self.main:
            return
        quiet = is_quiet() and hf_logging.is_progress_bar_enabled()
        if quiet:  # save_pretrained's "Writing model shards" bar
            hf_logging.disable_progress_bar()
        try:
            self._write_final()
        finally:
            if quiet:
                hf_logging.enable_progress_bar()

    def _write_final(self) -> None:
        with atomic_dir(self.run.final_dir) as tmp:
            if hasattr(self.raw, "save_pretrained"):
                self.raw.save_pretrained(tmp)
            else:
                save_weights(self.raw, tmp / WEIGHTS)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)

    # -- the loop ----------------------------------------------------------------------------
    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        last = self.run.latest_checkpoint()
        where = f"last good checkpoint: {last} (rerun with --resume after the fix)" if last else "no checkpoint was written yet"
        cfg = self.cfg
        return TrainingDiverged(
            f"{what} became {value} at step {self.state.step + 1}; {where}; nothing was saved after it. "
            f"Fix: lower lr (now {cfg.lr:g}), set clip_grad (now {cfg.clip_grad}) or use precision=fp32 "
            f"(now {cfg.precision})"
        )

    def _train_step(self) -> tuple[float, float, int, dict[str, float], float | None]:
        """One optimizer update over grad_accum micro-batches; returns (loss·w sum, w, tokens, metrics·w, grad norm)."""
        cfg, acc = self.cfg, self.accelerator
        weighted = cfg.grad_accum > 1 or acc.num_processes > 1
        loss_sum: Tensor | float = 0.0
        weight, tokens, metric_sums = 0.0, 0, {}
        for k in range(cfg.grad_accum):
            batch = self._to_device(self.train_source.get(self.state.micro * self.world + self.rank))
            self.state.micro += 1
            sync = contextlib.nullcontext() if acc.num_processes == 1 or k == cfg.grad_accum - 1 else acc.no_sync(self.model)
            with sync:
                out = self.step_fn(self.forward_model, batch, self.ctx)
                # one micro-batch on one process: backward(loss) is backward(loss·w)/w without the division
                loss = out.loss * out.weight if weighted else out.loss
                if self._direct:
                    loss.backward()
                else:
                    acc.backward(loss)
            loss_sum = loss_sum + out.loss.detach() * out.weight
            weight += out.weight
            tokens += out.tokens
            for key, v in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + v * out.weight
        if self.world > 1:  # the logged loss, the NaN check and the gradient divisor cover every process
            local = torch.tensor([float(loss_sum), weight, float(tokens)], device=acc.device, dtype=torch.float64)
            loss_sum, weight, tokens = (float(v) for v in acc.reduce(local, "sum"))
            tokens = int(tokens)
        loss_value = float(loss_sum)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._diverged("loss", loss_value)
        if weighted:
            # each process holds Σ ∇(loss·w) over its micro-batches; DDP averaged them over P
            # processes, so dividing by (global weight / P) gives Σ_all ∇(loss·w) / Σ_all w
            total = weight / self.world
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads and total > 0:
                torch._foreach_div_(grads, total)
        grad_norm = None
        if cfg.clip_grad is not None:
            clip = torch.nn.utils.clip_grad_norm_ if self._direct else acc.clip_grad_norm_
            grad_norm = float(clip(self.params, cfg.clip_grad))
        elif (self.state.step + 1) % max(cfg.log_every, 1) == 0:
            grads = [p.grad for p in self.params if p.grad is not None]
            grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        if grad_norm is not None and not math.isfinite(grad_norm) and self.mixed_precision != "fp16":
            self.optimizer.zero_grad(set_to_none=True)
            raise self._diverged("gradient norm", grad_norm)
        opt = self._torch_opt if self._direct else self.optimizer
        self.last_lr = self._torch_opt.param_groups[0]["lr"]  # the lr this update used (logged)
        opt.step()
        self.scheduler.step()
        opt.zero_grad(set_to_none=True)
        return loss_value, weight, tokens, metric_sums, grad_norm

    def _log_train(self, grad_norm: float | None, writer: Any) -> dict[str, Any]:
        s = self.state
        w = max(s.win_weight, 1e-12)
        row = {"step": s.step, "split": "train", "loss": s.win_loss / w, "lr": self.last_lr,
               "grad_norm": grad_norm, "tokens": s.tokens,
               "tokens_per_s": s.win_tokens / s.win_time if s.win_time > 0 else 0.0,
               "elapsed_s": s.elapsed_s, "epoch": s.micro * self.world / len(self.train_source),
               **{k: v / w for k, v in s.win_metrics.items()}}
        s.last_train_loss = row["loss"]
        s.win_loss, s.win_weight, s.win_tokens, s.win_time, s.win_metrics = 0.0, 0.0, 0, 0.0, {}
        if self.main:
            self.run.log_metrics(row)
        if writer is not None:
            for k, v in row.items():
                if k not in ("step", "split") and v is not None:
                    writer.add_scalar(f"train/{k}", v, s.step)
        for cb in self.callbacks:
            cb.on_log(self, row)
        return row

    def _eval_and_track(self, writer: Any) -> None:
        s = self.state
        metrics = self.evaluate()
        s.last_eval_step = s.step
        row = {"step": s.step, "split": "val", **metrics}
        if self.main:
            self.run.log_metrics(row)
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, s.step)
        if s.best_loss is None or metrics["loss"] < s.best_loss:
            s.best_loss, s.best_step, s.bad_evals = metrics["loss"], s.step, 0
            if self.cfg.keep_best:
                self._save_best()
        else:
            s.bad_evals += 1
            if self.cfg.early_stopping_patience and s.bad_evals >= self.cfg.early_stopping_patience:
                log(f"early stopping at step {s.step}: no val improvement in {s.bad_evals} evaluations "
                    f"(best {s.best_loss:.4f} at step {s.best_step})")
                self.should_stop = True
        for cb in self.callbacks:
            cb.on_eval(self, row)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to max_steps (or epochs), then write final/ and result.json; returns the result."""
        cfg, s = self.cfg, self.state
        if resume and self.run.latest_checkpoint() is not None:
            ckpt = self.run.latest_checkpoint()
            self._load_checkpoint(ckpt)
            s = self.state
            if self.main:
                self.run.truncate_metrics(s.step)
            log(f"resumed from {ckpt} (step {s.step}/{self.total_steps})")
        elif self.main and self.run.metrics_path.exists():  # nothing to resume from: rows of an earlier attempt go
            self.run.truncate_metrics(0)
        writer = self._writer(purge_step=s.step if s.step else None)
        stopped_early = False
        try:
            self.forward_model.train()
            for cb in self.callbacks:
                cb.on_train_begin(self)
            with progress_bar(self.total_steps, f"train {self.run.path.name}") as bar:
                if s.step:
                    bar.update(s.step)
                while s.step < self.total_steps and not self.should_stop:
                    self.ctx.step = s.step
                    t0 = time.perf_counter()
                    loss_sum, weight, tokens, metric_sums, grad_norm = self._train_step()
                    dt = time.perf_counter() - t0
                    s.step += 1
                    s.tokens += tokens
                    s.elapsed_s += dt
                    s.win_loss += loss_sum
                    s.win_weight += weight
                    s.win_tokens += tokens
                    s.win_time += dt
                    for k, v in metric_sums.items():
                        s.win_metrics[k] = s.win_metrics.get(k, 0.0) + v
                    last = s.step == self.total_steps
                    if s.step % max(cfg.log_every, 1) == 0 or last:
                        self._log_train(grad_norm, writer)
                    if self.eval_source is not None and cfg.eval_every and s.step % cfg.eval_every == 0:
                        self._eval_and_track(writer)
                    if cfg.save_every and s.step % cfg.save_every == 0:
                        self._save_checkpoint()
                    bar.update(1, loss=loss_sum / max(weight, 1e-12), tok_s=tokens / dt if dt > 0 else 0.0)
            stopped_early = self.should_stop and s.step < self.total_steps
            if s.win_weight > 0:  # a stop between log steps: flush the open window
                self._log_train(None, writer)
            if self.eval_source is not None and s.last_eval_step != s.step:
                self._eval_and_track(writer)
            if cfg.keep_best and s.best_step is not None and s.best_step != s.step:
                self.accelerator.wait_for_everyone()  # best/ is written by the main process
                best = self.run.checkpoints_dir / "best"
                saved = json.loads((best / "trainer_state.json").read_text()) if (best / "trainer_state.json").exists() else {}
                if saved.get("step") == s.best_step:
                    load_weights(self.raw, best / WEIGHTS)
                    log(f"final/ holds the best weights on val (step {s.best_step}, val loss {s.best_loss:.4f})")
            self._save_final()
            self.accelerator.wait_for_everyone()
        finally:
            if writer is not None:
                writer.close()
        val_loss = s.best_loss if cfg.keep_best else self._last_val_loss()
        result = {
            "steps": s.step, "train_loss": s.last_train_loss, "val_loss": val_loss,
            "val_ppl": perplexity(val_loss) if val_loss is not None and reports_perplexity(self.step_fn) else None,
            "best_step": s.best_step,
            "tokens": s.tokens, "tokens_per_s": s.tokens / s.elapsed_s if s.elapsed_s > 0 else 0.0,
            "elapsed_s": s.elapsed_s, "stopped_early": stopped_early, "final": str(self.run.final_dir),
        }
        if self.main:
            self.run.finish(result)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _last_val_loss(self) -> float | None:
        rows = [r for r in self.run.metrics() if r.get("split") == "val"]
        return rows[-1]["loss"] if rows else None

    def _writer(self, purge_step: int | None) -> Any:
        """TensorBoard writer in run/tb (None if tensorboard is unavailable or on non-main ranks)."""
        if not self.accelerator.is_main_process:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but stay usable without it
            return None
        return SummaryWriter(log_dir=str(self.run.tb_dir), purge_step=purge_step)
