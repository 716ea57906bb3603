"""Configs of the training stages: one dataclass per stage, fields grouped, help under each.

The field names are the canonical keys of the command-line contract (DESIGN.md), so the same
key works in a recipe YAML, on the command line (`lmlab train sft lora.rank=8`) and in Python
(`lmlab.train("sft", lora={"rank": 8})`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmlab.config import opt


@dataclass
class LoraSettings:
    rank: int = opt(16, "LoRA rank r: adapter width; higher = more capacity and memory (Hu et al. 2021)")
    alpha: float = opt(32.0, "LoRA scaling α; the update is scaled by α/r")
    dropout: float = opt(0.05, "dropout on the LoRA input path")
    targets: list[str] = opt(["all-linear"], "module names to adapt, or 'all-linear'")


@dataclass
class FreezeSettings:
    trainable_layers: int = opt(2, "train only the last N transformer blocks (plus the head)")
    trainable: list[str] = opt([], "train only parameters whose name matches one of these patterns (fnmatch); overrides trainable_layers")


@dataclass
class TrainConfig:
    """Settings shared by every training stage (the loop's knobs)."""

    # what
    model: str = opt("transformer:tiny", "architecture[:size] (rnn, lstm, gru, transformer, seq2seq), a HF hub id, a model folder or a run folder")
    data: str = opt("storyworld/pretrain", "dataset: a named set (lmlab data list), a file or a hub id")
    eval_data: str | None = opt(None, "held-out set; default: a split of `data` (val_fraction)")
    val_fraction: float = opt(0.05, "fraction of `data` held out for validation when eval_data is not given")
    columns: dict[str, str] = opt({}, "column mapping, e.g. {prompt: question, response: answer}")
    limit: int | None = opt(None, "use only the first N records of the data (quick runs)")
    tokenizer: str | None = opt(None, "tokenizer folder; default: the model's own, or one trained on `data` for from-scratch models")
    out: str | None = opt(None, "run folder; default runs/<stage>-<model>")
    seed: int = opt(0, "seed for init, data order and sampling")
    # how long
    max_steps: int | None = opt(None, "optimizer steps to run; overrides epochs")
    epochs: float = opt(1.0, "passes over the training data when max_steps is not set")
    # batch
    batch_size: int = opt(8, "examples (or blocks) per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimizer step; effective batch = batch_size × grad_accum")
    max_length: int = opt(256, "tokens per example / block; longer examples are truncated")
    # optimiser
    lr: float = opt(3e-4, "peak learning rate (AdamW)")
    weight_decay: float = opt(0.01, "AdamW decoupled weight decay (not applied to norms and biases)")
    betas: list[float] = opt([0.9, 0.95], "AdamW β1, β2")
    schedule: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate shape after warm-up")
    warmup_steps: int = opt(0, "linear warm-up steps (0 = none)")
    warmup_ratio: float = opt(0.0, "warm-up as a fraction of all steps (used when warmup_steps is 0)")
    min_lr_ratio: float = opt(0.1, "final lr as a fraction of peak for cosine/linear")
    clip_grad: float | None = opt(1.0, "clip the global gradient norm to this (None = off)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "autocast dtype; auto = bf16 on GPUs that support it, else fp32")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward: less memory, ~30% slower")
    # bookkeeping
    eval_every: int = opt(0, "evaluate on eval_data every N steps (0 = only at the end)")
    eval_batches: int = opt(20, "micro-batches per evaluation (bounds eval time)")
    save_every: int = opt(0, "checkpoint every N steps (0 = only at the end)")
    save_total_limit: int = opt(2, "keep at most this many checkpoints (the best one is kept too)")
    log_every: int = opt(10, "write a metrics.jsonl row every N steps")
    early_stopping_patience: int = opt(0, "stop after this many evaluations without val improvement (0 = off)")
    keep_best: bool = opt(True, "final/ holds the best-on-val weights instead of the last ones")
    samples: list[str] = opt([], "prompts to sample from at the end (written to samples.jsonl)")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    compile: bool = opt(False, "torch.compile the model (GPU speed-up; slow start on CPU)")

    def validate(self) -> list[str]:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 1:
            problems.append(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        return problems


@dataclass
class PretrainConfig(TrainConfig):
    """`lmlab train pt`: next-token prediction on raw text (from scratch or continued)."""

    vocab_size: int = opt(4096, "tokenizer size when a tokenizer is trained for a from-scratch model")
    tokenizer_kind: Literal["bpe", "char"] = opt("bpe", "tokenizer trained for from-scratch models")
    arch: dict[str, Any] = opt({}, "architecture overrides, e.g. {hidden_size: 256, num_layers: 4}")

    def validate(self) -> list[str]:
        """Also check `arch` keys against the architecture now, not after the data is loaded."""
        from lmlab.errors import ConfigError
        from lmlab.models import build_config, is_architecture

        problems = super().validate()
        if is_architecture(self.model):
            try:
                build_config(self.model, self.vocab_size, overrides=self.arch or None)
            except ConfigError as exc:
                problems.append(str(exc))
        elif self.arch:
            problems.append(f"arch={self.arch} only applies to architectures built from scratch "
                            f"(rnn, lstm, gru, transformer, seq2seq), not model={self.model}")
        return problems


@dataclass
class SFTConfig(TrainConfig):
    """`lmlab train sft`: supervised fine-tuning on instructions / chats, loss on responses."""

    data: str = opt("storyworld/instruct", "instruction or chat dataset")
    lr: float = opt(1e-4, "peak learning rate (AdamW)")
    epochs: float = opt(1.0, "passes over the data")
    tuning: Literal["full", "freeze", "lora", "qlora"] = opt("full", "which parameters train")
    lora: LoraSettings = opt(LoraSettings, "LoRA settings (tuning=lora/qlora)")
    freeze: FreezeSettings = opt(FreezeSettings, "partial unfreezing (tuning=freeze)")
    template: str = opt("auto", "chat template: auto (the tokenizer's, else chatml), chatml, alpaca, llama3, qwen, plain")
    system: str | None = opt(None, "system prompt added to every example that has none")
    train_on_prompt: bool = opt(False, "also train on prompt tokens (default: loss on responses only)")
    packing: bool = opt(False, "pack several examples per row, with no attention across examples")
    group_by_length: bool = opt(False, "batch examples of similar length together (less padding)")
    data_fraction: float = opt(1.0, "train on this fraction of the training records (nested subsets: 0.25 ⊂ 0.5 ⊂ 1; for data-size ablations)")
    trust_remote_code: bool = opt(False, "allow model code from the hub (off: safer)")

    def validate(self) -> list[str]:
        problems = super().validate()
        if not 0 < self.data_fraction <= 1:
            problems.append(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        return problems


@dataclass
class RewardConfig(TrainConfig):
    """`lmlab train rm`: a Bradley–Terry reward model on preference pairs."""

    data: str = opt("storyworld/prefs", "preference dataset (prompt, chosen, rejected)")
    lr: float = opt(5e-5, "peak learning rate (AdamW)")
    margin: float = opt(0.0, "extra margin m in -log σ(r_c - r_r - m) (Llama 2 paper, eq. 2)")
    center_rewards: float = opt(0.0, "coefficient of the (r_c + r_r)^2 penalty that keeps rewards near 0")
    tuning: Literal["full", "freeze", "lora"] = opt("full", "which parameters train")
    lora: LoraSettings = opt(LoraSettings, "LoRA settings (tuning=lora)")
    freeze: FreezeSettings = opt(FreezeSettings, "partial unfreezing (tuning=freeze)")
    template: str = opt("auto", "chat template used to render prompt + response")
    trust_remote_code: bool = opt(False, "allow model code from the hub")


STAGE_CONFIGS: dict[str, type[TrainConfig]] = {
    "pt": PretrainConfig,
    "sft": SFTConfig,
    "rm": RewardConfig,
}
