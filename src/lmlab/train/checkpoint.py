"""Checkpoints: everything exact resume needs, written atomically; and the final HF weights.

A checkpoint folder `checkpoints/step-N/` holds

    model.safetensors + config.json   the trained weights (also loadable with from_pretrained)
    optimizer.pt, scheduler.pt        AdamW moments and the schedule's step
    rng-R.pt                          Python / NumPy / torch (+ CUDA) RNG of process R
    source-R.pt                       the batch source's state of process R (an RL rollout buffer)
    trainer_state.json                step, global micro-batch position, best metric, log window

It is built under a hidden temporary name and renamed into place, so a kill leaves either no
`step-N` or a complete one. Under FSDP / DeepSpeed the weights and optimizer are sharded: every
process writes its part with `accelerator.save_state` into `accelerate/` instead, and final
weights are gathered with `accelerator.get_state_dict`.

The data position is stored as a *global* micro-batch count, so a checkpoint written by
2 processes × accum 2 resumes in 1 process × accum 4 and vice versa (same global batch).
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmlab.config import to_dict
from lmlab.runs import atomic_dir, atomic_write_json

WEIGHTS = "model.safetensors"


@dataclass
class TrainerState:
    """Everything besides tensors that resume needs; saved as trainer_state.json."""

    step: int = 0
    micro: int = 0  # next local micro-batch index (the checkpoint also stores micro × world)
    best_value: float | None = None  # best value of the selection metric so far
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
    last_val: dict[str, float] = field(default_factory=dict)


def save_weights(model: nn.Module, path: Path) -> None:
    """All weights as safetensors (tied tensors stored once), for checkpoints and best/."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True)


def rng_state(accelerator: Any) -> dict[str, Any]:
    scaler = getattr(accelerator, "scaler", None)
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "scaler": scaler.state_dict() if scaler is not None else None}


def set_rng_state(rng: dict[str, Any], accelerator: Any) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and rng.get("scaler") is not None:
        scaler.load_state_dict(rng["scaler"])


class Checkpointer:
    """Saves and restores a Trainer's state (`trainer.updater`, `trainer.state`, the source)."""

    def __init__(self, trainer: Any):
        self.t = trainer

    @property
    def sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.t.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    # -- write -----------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write checkpoint `path` (every process takes part; the main one renames it into place)."""
        t = self.t
        acc = t.accelerator
        if self.sharded or t.world > 1:
            # every process writes into one shared temporary folder; the main process publishes it
            tmp = path.parent / f".{path.name}.partial"
            if t.main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            self._write(tmp)
            acc.wait_for_everyone()
            if t.main:
                with atomic_dir(path) as final_tmp:
                    for item in tmp.iterdir():
                        item.rename(final_tmp / item.name)
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with atomic_dir(path) as tmp:
                self._write(tmp)
        acc.wait_for_everyone()
        return path

    def _write(self, folder: Path) -> None:
        t = self.t
        rank = t.rank
        if self.sharded:
            t.accelerator.save_state(str(folder / "accelerate"))
        elif t.main:
            save_weights(t.raw, folder / WEIGHTS)
            config = getattr(t.raw, "config", None)
            if config is not None and hasattr(config, "save_pretrained"):
                config.save_pretrained(folder)  # so a checkpoint loads with from_pretrained too
            torch.save(t.updater.optimizer.state_dict(), folder / "optimizer.pt")
        if t.main:
            torch.save(t.updater.scheduler.state_dict(), folder / "scheduler.pt")
            state = to_dict(t.state)
            state["micro_global"] = t.state.micro * t.world
            state["world"] = t.world
            state["global_batch"] = t.cfg.batch_size * t.cfg.grad_accum * t.world
            atomic_write_json(folder / "trainer_state.json", state)
        torch.save(rng_state(t.accelerator), folder / f"rng-{rank}.pt")
        source_state = getattr(t.train_source, "state_dict", None)
        if source_state is not None:
            torch.save(source_state(), folder / f"source-{rank}.pt")

    def save_best(self, value: float) -> None:
        """best/: the weights of the best evaluation so far (main process)."""
        t = self.t
        state = self._full_state_dict() if self.sharded else None
        if not t.main:
            return
        with atomic_dir(t.run.checkpoints_dir / "best") as tmp:
            if state is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
            else:
                save_weights(t.raw, tmp / WEIGHTS)
            atomic_write_json(tmp / "trainer_state.json", {"step": t.state.step, "metric": t.select_metric, "value": value,
                                                           "val_loss": value if t.select_metric == "loss" else None})

    # -- read ------------------------------------------------------------------------------------
    def load(self, path: Path) -> None:
        t = self.t
        acc = t.accelerator
        if (path / "accelerate").is_dir():
            acc.load_state(str(path / "accelerate"))
        else:
            load_weights(t.raw, path / WEIGHTS)
            where = "cpu" if acc.device.type == "cpu" else acc.device  # gloo processes report "cpu:0"
            t.updater.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=where))
        t.updater.scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        t.updater.set_base_lrs()
        rank_rng = path / f"rng-{t.rank}.pt"
        legacy = path / "rng.pt"  # wave-1 checkpoints
        rng_file = rank_rng if rank_rng.exists() else (legacy if legacy.exists() else path / "rng-0.pt")
        set_rng_state(torch.load(rng_file, weights_only=False), acc)
        raw = json.loads((path / "trainer_state.json").read_text())
        micro_global = raw.pop("micro_global", None)
        saved_world = raw.pop("world", None)
        saved_batch = raw.pop("global_batch", None)
        batch = t.cfg.batch_size * t.cfg.grad_accum * t.world
        if saved_batch is not None and saved_batch != batch:
            from lmlab.errors import ConfigError

            raise ConfigError(
                f"{path}: written with a global batch of {saved_batch} (batch_size × grad_accum × {saved_world} processes); "
                f"this run has {batch} ({t.cfg.batch_size} × {t.cfg.grad_accum} × {t.world}). A resumed run keeps the global "
                f"batch: choose grad_accum = {saved_batch // (t.cfg.batch_size * t.world) if saved_batch % (t.cfg.batch_size * t.world) == 0 else '?'}"
                " for this number of processes")
        if "best_loss" in raw:  # wave-1 name of the selection value
            raw["best_value"] = raw.pop("best_loss")
        known = TrainerState.__dataclass_fields__
        t.state = TrainerState(**{k: v for k, v in raw.items() if k in known})
        if micro_global is not None:
            t.state.micro = micro_global // t.world
        source_file = path / f"source-{t.rank}.pt"
        loader = getattr(t.train_source, "load_state_dict", None)
        if loader is not None and source_file.exists():
            loader(torch.load(source_file, weights_only=False))

    # -- final weights ---------------------------------------------------------------------------
    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the main process (gathered from shards; a collective)."""
        return self.t.accelerator.get_state_dict(self.t.updater.model)

    def save_final(self, best: Path | None) -> None:
        """final/: the model in Hugging Face format (save_pretrained) + tokenizer, atomically.

        `best`: a best/ folder whose weights replace the last ones first (keep-best).
        """
        t = self.t
        if best is not None:
            load_weights(t.raw, best / WEIGHTS)  # every process: the weights it holds become the best ones
        state = self._full_state_dict() if self.sharded else None
        if not t.main:
            return
        with atomic_dir(t.run.final_dir) as tmp:
            if hasattr(t.raw, "save_pretrained"):
                kwargs = {"state_dict": state} if state is not None else {}
                t.raw.save_pretrained(tmp, **kwargs)
            else:
                save_weights(t.raw, tmp / WEIGHTS)
            if t.tokenizer is not None:
                t.tokenizer.save_pretrained(tmp)
