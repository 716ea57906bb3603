"""The training loop every stage shares; it knows nothing about stages.

A stage gives it a model, a step function (`steps.py`), a batch source and a `TrainConfig`; the
loop does the rest on `accelerate` (device placement, mixed precision, DDP / FSDP2 / DeepSpeed).
Its parts, one job each:

- `update.py`      one optimizer update: accumulation with exact token weighting (the loss is
                   scaled by an all-reduced weight, never the gradients), clipping, AdamW with
                   parameter groups, the schedule;
- `checkpoint.py`  atomic checkpoints (weights, optimizer, schedule, per-process RNG, the source's
                   state) and exact resume, final/ in Hugging Face format;
- `logbook.py`     metrics.jsonl rows and TensorBoard scalars;
- `companions.py`  frozen models beside the policy (reference, reward model), never optimised;
- this file        the loop: fetch micro-batches, update, log, evaluate, select, save.

What a stage may plug in besides the step: `companions` (frozen models, reachable as
`ctx.companions`), `param_groups` (e.g. a value head with its own lr), `evaluator` (metrics such as
mean reward, merged into each val row and usable as the selection metric `cfg.select_metric`), and a
batch source that refills itself between updates (PPO / GRPO rollouts): the loop calls its optional
`bind(trainer)`, `state_dict()` / `load_state_dict()` (saved in every checkpoint) and
`log_metrics()`.

    trainer = Trainer(model, lm_step, BlockSource(tokens, 256, 8, seed=0), cfg, RunDir("runs/x"),
                      eval_source=val, tokenizer=tok)
    result = trainer.fit(resume=False)     # writes final/; the stage writes result.json last
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.devices import resolve_device
from lmlab.errors import ConfigError, DataError, TrainingDiverged
from lmlab.progress import is_quiet, log, progress_bar
from lmlab.runs import RunDir
from lmlab.train.checkpoint import WEIGHTS, Checkpointer, TrainerState, load_weights, save_weights
from lmlab.train.companions import place_companions
from lmlab.train.config import TrainConfig
from lmlab.train.logbook import Logbook
from lmlab.train.objectives import perplexity
from lmlab.train.steps import BatchSource, StepContext, StepFn, StepOutput, reports_perplexity
from lmlab.train.update import ParamGroupsFn, Updater, param_groups

__all__ = ["WEIGHTS", "BatchSource", "Callback", "StepContext", "StepFn", "StepOutput", "Trainer", "TrainerState", "extra_callbacks",
           "load_weights", "param_groups", "save_weights"]

Evaluator = Callable[["Trainer"], dict[str, float]]


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


_MAXIMISED = ("reward", "accuracy", "acc", "gold", "win", "score", "exact", "bleu", "rouge")


def selection_mode(metric: str, mode: str) -> str:
    """'min' or 'max' for `metric`: auto maximises rewards, accuracies and win rates, minimises the rest."""
    if mode in ("min", "max"):
        return mode
    return "max" if any(word in metric.lower() for word in _MAXIMISED) else "min"


class Trainer:
    """One loop for every stage. See the module docstring for its parts; `fit()` runs it."""

    def __init__(self, model: nn.Module, step_fn: StepFn, train: BatchSource, cfg: TrainConfig, run: RunDir, *,
                 eval_source: BatchSource | None = None, tokenizer: Any = None, ctx: StepContext | None = None,
                 callbacks: Sequence[Callback] = (), companions: dict[str, nn.Module] | None = None,
                 param_groups: ParamGroupsFn | None = None, evaluator: Evaluator | None = None):
        if len(train) < 1:
            raise DataError(f"{run.path}: the training data gives no micro-batch (batch_size={cfg.batch_size}); "
                            "add data or lower batch_size / max_length")
        self.cfg = cfg
        self.run = run
        self.step_fn = step_fn
        self.train_source = train
        self.eval_source = eval_source
        self.evaluator = evaluator
        self.tokenizer = tokenizer
        self.ctx = ctx or StepContext()
        self.callbacks: list[Callback] = [*callbacks, *_EXTRA.get()]
        self.should_stop = False
        self.state = TrainerState()
        self.select_metric = getattr(cfg, "select_metric", "loss") or "loss"
        self.select_mode = selection_mode(self.select_metric, getattr(cfg, "select_mode", "auto"))

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
        self.updater = Updater(self.accelerator, model, cfg, self.total_steps, param_groups)
        self.model = self.updater.model
        self.raw: nn.Module = self.updater.raw
        self.optimizer = self.updater.optimizer
        self._torch_opt = self.updater.torch_opt
        self.scheduler = self.updater.scheduler
        self.companions = place_companions(dict(companions or {}), self.accelerator.device, self.mixed_precision)
        self.ctx.companions = {**self.ctx.companions, **self.companions}
        if self.ctx.ref_model is None:
            self.ctx.ref_model = self.ctx.companions.get("ref")
        self.ctx.policy = self.raw
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.checkpointer = Checkpointer(self)

    @property
    def last_lr(self) -> float:
        return self.updater.last_lr

    # -- batches and generation ----------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        if dev.type == "cpu":
            return batch
        return {k: v.to(dev, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    @contextmanager
    def generation_model(self) -> Iterator[nn.Module]:
        """The unwrapped policy in eval mode, ready for `generate` (rollouts, eval samples).

        Under ZeRO-3 its parameters are partitioned: they are gathered for the duration, as TRL's
        `unwrap_model_for_generation` does; FSDP2 gathers per layer inside forward, so every
        process must then generate the same number of steps (`synced_gpus`).
        """
        model = self.raw
        was_training = model.training
        gather: Any = None
        if self.updater.deepspeed:
            import deepspeed  # type: ignore[import-not-found]

            if getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3:
                gather = deepspeed.zero.GatheredParameters(list(model.parameters()))
        model.eval()
        try:
            if gather is not None:
                with gather:
                    yield model
            else:
                yield model
        finally:
            model.train(was_training)

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Weighted mean loss over the first `eval_batches` micro-batches of the eval source, plus
        the stage's evaluator metrics."""
        metrics: dict[str, float] = {}
        if self.eval_source is not None:
            metrics.update(self._eval_loss())
        if self.evaluator is not None:
            metrics.update(self.evaluator(self))
        return metrics

    def _eval_loss(self) -> dict[str, float]:
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

    def _better(self, value: float) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        return value > best if self.select_mode == "max" else value < best

    def _eval_and_track(self, logbook: Logbook) -> None:
        s = self.state
        metrics = self.evaluate()
        s.last_eval_step = s.step
        s.last_val = {k: float(v) for k, v in metrics.items()}
        row = {"step": s.step, "split": "val", **metrics}
        logbook.write(row)
        if self.select_metric not in metrics:
            raise ConfigError(f"select_metric={self.select_metric!r} is not among the evaluation's metrics "
                              f"({', '.join(sorted(metrics)) or 'none'}); pick one of them")
        value = float(metrics[self.select_metric])
        if self._better(value):
            s.best_value, s.best_step, s.bad_evals = value, s.step, 0
            if self.cfg.keep_best:
                self.checkpointer.save_best(value)
        else:
            s.bad_evals += 1
            if self.cfg.early_stopping_patience and s.bad_evals >= self.cfg.early_stopping_patience:
                log(f"early stopping at step {s.step}: no {self.select_metric} improvement in {s.bad_evals} evaluations "
                    f"(best {s.best_value:.4f} at step {s.best_step})")
                self.should_stop = True
        for cb in self.callbacks:
            cb.on_eval(self, row)

    @property
    def evaluates(self) -> bool:
        return self.eval_source is not None or self.evaluator is not None

    # -- checkpoints -----------------------------------------------------------------------------
    def _save_checkpoint(self) -> Path:
        path = self.checkpointer.save(self.run.checkpoints_dir / f"step-{self.state.step}")
        if self.main:
            protect = self.run.checkpoints_dir / f"step-{self.state.best_step}" if self.state.best_step is not None else None
            self.run.prune_checkpoints(self.cfg.save_total_limit, protect=protect)
        return path

    def _save_final(self) -> None:
        from transformers.utils import logging as hf_logging

        s = self.state
        best = None
        if self.cfg.keep_best and s.best_step is not None and s.best_step != s.step:
            self.accelerator.wait_for_everyone()  # best/ is written by the main process
            folder = self.run.checkpoints_dir / "best"
            saved = json.loads((folder / "trainer_state.json").read_text()) if (folder / "trainer_state.json").exists() else {}
            if saved.get("step") == s.best_step:
                best = folder
                log(f"final/ holds the best weights ({self.select_metric} {s.best_value:.4f} at step {s.best_step})")
        quiet = self.main and is_quiet() and hf_logging.is_progress_bar_enabled()
        if quiet:  # save_pretrained's "Writing model shards" bar
            hf_logging.disable_progress_bar()
        try:
            self.checkpointer.save_final(best)
        finally:
            if quiet:
                hf_logging.enable_progress_bar()

    # -- the loop --------------------------------------------------------------------------------
    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        last = self.run.latest_checkpoint()
        where = f"last good checkpoint: {last} (rerun with --resume after the fix)" if last else "no checkpoint was written yet"
        cfg = self.cfg
        return TrainingDiverged(
            f"{what} became {value} at step {self.state.step + 1}; {where}; nothing was saved after it. "
            f"Fix: lower lr (now {cfg.lr:g}; a changed lr takes effect on --resume), set clip_grad (now {cfg.clip_grad}) "
            f"or use precision=fp32 (now {cfg.precision})"
        )

    def _next_batches(self) -> list[dict[str, Any]]:
        batches = []
        for _ in range(self.cfg.grad_accum):
            batches.append(self._to_device(self.train_source.get(self.state.micro * self.world + self.rank)))
            self.state.micro += 1
        return batches

    def _log_train(self, grad_norm: float | None, logbook: Logbook) -> dict[str, Any]:
        s = self.state
        w = max(s.win_weight, 1e-12)
        row = {"step": s.step, "split": "train", "loss": s.win_loss / w, "lr": self.last_lr,
               "grad_norm": grad_norm, "tokens": s.tokens,
               "tokens_per_s": s.win_tokens / s.win_time if s.win_time > 0 else 0.0,
               "elapsed_s": s.elapsed_s, "epoch": s.micro * self.world / len(self.train_source),
               **{k: v / w for k, v in s.win_metrics.items()}}
        source_metrics = getattr(self.train_source, "log_metrics", None)
        if source_metrics is not None:
            row.update(source_metrics())
        s.last_train_loss = row["loss"]
        s.win_loss, s.win_weight, s.win_tokens, s.win_time, s.win_metrics = 0.0, 0.0, 0, 0.0, {}
        logbook.write(row)
        for cb in self.callbacks:
            cb.on_log(self, row)
        return row

    def _resume(self, logbook_rows: list[dict[str, Any]]) -> None:
        """Load the latest checkpoint; keys changed on --resume (run.resume_changes) take effect now."""
        ckpt = self.run.latest_checkpoint()
        assert ckpt is not None
        self.checkpointer.load(ckpt)
        changes = dict(getattr(self.run, "resume_changes", None) or {})
        if "lr" in changes:
            old, new = changes["lr"]
            self.updater.rescale_lr(float(new), float(old))
        if self.main:
            self.run.truncate_metrics(self.state.step, self.state.last_eval_step)
        if changes:
            logbook_rows.append({"step": self.state.step, "event": "resume_changes",
                                 **{k: {"old": o, "new": n} for k, (o, n) in changes.items()}})
            log("resumed with changed keys: " + ", ".join(f"{k} {o} → {n}" for k, (o, n) in changes.items()))
        log(f"resumed from {ckpt} (step {self.state.step}/{self.total_steps})")

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to max_steps (or epochs), then write final/; returns the result. The stage runner
        writes result.json (the "finished" marker) itself, after its own samples and evaluation."""
        cfg = self.cfg
        bind = getattr(self.train_source, "bind", None)
        if bind is not None:
            bind(self)
        pending: list[dict[str, Any]] = []
        if resume and self.run.latest_checkpoint() is not None:
            self._resume(pending)
        elif self.main and self.run.metrics_path.exists():  # nothing to resume from: rows of an earlier attempt go
            self.run.truncate_metrics(0)
        s = self.state
        logbook = Logbook(self.run, self.main, purge_step=s.step + 1 if s.step else None)  # events after the checkpoint go
        for row in pending:
            logbook.write(row)
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
                    log_now = (s.step + 1) % max(cfg.log_every, 1) == 0 or s.step + 1 == self.total_steps
                    t0 = time.perf_counter()
                    out = self.updater.update(self._next_batches(), self.step_fn, self.forward_model, self.ctx,
                                              self._diverged, need_norm=log_now)
                    dt = time.perf_counter() - t0
                    s.step += 1
                    s.tokens += out.tokens
                    s.elapsed_s += dt
                    s.win_loss += out.loss_sum
                    s.win_weight += out.weight
                    s.win_tokens += out.tokens
                    s.win_time += dt
                    for k, v in out.metric_sums.items():
                        s.win_metrics[k] = s.win_metrics.get(k, 0.0) + v
                    if log_now:
                        self._log_train(out.grad_norm, logbook)
                    if self.evaluates and cfg.eval_every and s.step % cfg.eval_every == 0:
                        self._eval_and_track(logbook)
                    if cfg.save_every and s.step % cfg.save_every == 0:
                        self._save_checkpoint()
                        logbook.flush()
                    bar.update(1, loss=out.loss_sum / max(out.weight, 1e-12), tok_s=out.tokens / dt if dt > 0 else 0.0)
            stopped_early = self.should_stop and s.step < self.total_steps
            if s.win_weight > 0:  # a stop between log steps: flush the open window
                self._log_train(None, logbook)
            if self.evaluates and s.last_eval_step != s.step:
                self._eval_and_track(logbook)
            self._save_final()
            self.accelerator.wait_for_everyone()
        finally:
            logbook.close()
        result = self._result(stopped_early)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _result(self, stopped_early: bool) -> dict[str, Any]:
        s = self.state
        selected_loss = self.select_metric == "loss" and self.cfg.keep_best
        val_loss = s.best_value if selected_loss else s.last_val.get("loss")
        result = {
            "steps": s.step, "train_loss": s.last_train_loss, "val_loss": val_loss,
            "val_ppl": perplexity(val_loss) if val_loss is not None and reports_perplexity(self.step_fn) else None,
            "best_step": s.best_step,
            "tokens": s.tokens, "tokens_per_s": s.tokens / s.elapsed_s if s.elapsed_s > 0 else 0.0,
            "elapsed_s": s.elapsed_s, "stopped_early": stopped_early, "final": str(self.run.final_dir),
        }
        if self.select_metric != "loss":
            result.update({"select_metric": self.select_metric, "best_value": s.best_value})
        return result
