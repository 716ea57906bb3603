"""Configs of the training stages: one dataclass per stage, fields grouped, help under each.

The field names are the canonical keys of the command-line contract (DESIGN.md), so the same
key works in a recipe YAML, on the command line (`lmlab train sft lora.rank=8`) and in Python
(`lmlab.train("sft", lora={"rank": 8})`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmlab.config import opt
from lmlab.errors import ConfigError
from lmlab.models.tuning import FreezeSettings, LoraSettings


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
    select_metric: str = opt("loss", "the evaluation metric that picks the kept checkpoint and drives early stopping "
                             "(loss, accuracy, reward, gold …: any key of the val rows)")
    select_mode: Literal["auto", "min", "max"] = opt("auto", "whether a lower or higher select_metric is better; "
                                                      "auto: higher for reward / accuracy / gold / win, lower otherwise")
    samples: list[str] = opt([], "prompts to sample from at the end (written to samples.jsonl)")
    device: str = opt("auto", "auto, cpu, cuda, mps")
    compile: bool = opt(False, "torch.compile the model (GPU speed-up; slow start on CPU)")
    launcher: str | None = opt(None, "run under `accelerate launch` with a packaged config: ddp, fsdp2, zero2, zero3, "
                               "or a path to your own accelerate config YAML (see docs/training.md)")
    num_processes: int | None = opt(None, "processes for launcher= (default: one per GPU; 2 CPU processes for ddp without GPUs)")

    def validate(self) -> list[str]:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 1:
            problems.append(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 < self.lr < float("inf"):
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        # sizes and counts: a zero or negative value would truncate every example away, run no step
        # or divide by zero, and still mark the run finished
        if self.max_length < 2:
            problems.append(f"max_length must be >= 2 tokens (one to read, one to predict), got {self.max_length}")
        if not 0 < self.epochs < float("inf"):
            problems.append(f"epochs must be a number > 0, got {self.epochs}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1 (or null for all records), got {self.limit}")
        for key in ("eval_every", "save_every", "eval_batches", "warmup_steps", "early_stopping_patience"):
            if getattr(self, key) < 0:
                problems.append(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("log_every", "save_total_limit"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            problems.append(f"clip_grad must be > 0 (or null for no clipping), got {self.clip_grad}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas}")
        from lmlab.models import architecture, is_architecture, names_architecture

        if names_architecture(self.model) and not is_architecture(self.model):  # sizes: checked where it is built
            try:
                architecture(self.model)
            except ConfigError as exc:
                problems.append(str(exc))
        for name in ("lora", "freeze"):  # nested settings of the stages that have them
            sub = getattr(self, name, None)
            if hasattr(sub, "validate"):
                problems += [f"{name}.{p}" for p in sub.validate()]
        return problems


@dataclass
class PretrainConfig(TrainConfig):
    """`lmlab train pt`: next-token prediction on raw text (from scratch or continued)."""

    vocab_size: int = opt(4096, "tokenizer size when a tokenizer is trained for a from-scratch model")
    tokenizer_kind: Literal["bpe", "char"] = opt("bpe", "tokenizer trained for from-scratch models")
    arch: dict[str, Any] = opt({}, "architecture overrides, e.g. {hidden_size: 256, num_layers: 4}")
    data_fraction: float = opt(1.0, "train on this fraction of the training texts (nested subsets: 0.25 ⊂ 0.5 ⊂ 1; for data-size ablations, `lmlab ablate stage=pt`)")

    def validate(self) -> list[str]:
        """Also check `arch` keys against the architecture now, not after the data is loaded."""
        from lmlab.errors import ConfigError
        from lmlab.models import build_config, is_architecture

        problems = super().validate()
        if not 0 < self.data_fraction <= 1:
            problems.append(f"data_fraction must be in (0, 1], got {self.data_fraction}")
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
    group_by_length: bool = opt(False, "batch pairs of similar length together: less padding, faster steps (batches then "
                                "mix less: a small model may learn length shortcuts a shuffled batch hides)")
    trust_remote_code: bool = opt(False, "allow model code from the hub")
    kind: Literal["pairwise", "classifier"] = opt("pairwise", "pairwise: Bradley–Terry on preference pairs; classifier: cross-entropy on "
                                                  "labelled text (data=imdb), an RL reward as a label's logit/probability (train/classifier.py)")


# -- preference optimisation (issue 11): DPO and variants, KTO, SimPO/CPO, ORPO -------------------

@dataclass
class PreferenceConfig(TrainConfig):
    """Keys shared by the preference stages (`train dpo|kto|simpo|orpo`); not a command itself."""

    model: str = opt("runs/sft", "the model to align: an SFT run folder, a model folder (or LoRA adapter folder) or a hub id")
    data: str = opt("storyworld/prefs", "preference pairs (prompt, chosen, rejected)")
    lr: float = opt(5e-6, "peak learning rate (AdamW); TRL's default is 1e-6 for 0.5B+ models, tiny models take ~1e-4")
    max_length: int = opt(512, "tokens per prompt + response; longer rows lose their end (keep_start), a pair left with no response token is dropped")
    beta: float = opt(0.1, "β: strength of the pull towards the reference (DPO eq. 7's β, IPO's τ); higher = stay closer")
    tuning: Literal["full", "freeze", "lora"] = opt("full", "which parameters train; with lora on a full model the reference is that model (adapters off)")
    lora: LoraSettings = opt(LoraSettings, "LoRA settings (tuning=lora)")
    freeze: FreezeSettings = opt(FreezeSettings, "partial unfreezing (tuning=freeze)")
    template: str = opt("auto", "chat template, as in SFT: auto (the tokenizer's, else chatml), chatml, alpaca, llama3, qwen, plain")
    system: str | None = opt(None, "system prompt added to every example that has none")
    ref_model: str | None = opt(None, "reference policy π_ref; default: the starting `model` (an SFT LoRA adapter folder: that SFT model merged, not its base)")
    precompute_ref: bool = opt(False, "compute π_ref's log-probs once before training (cached in the run folder, reused by a rerun) and never load π_ref while training: less memory, faster steps")
    judge_prompts: int = opt(32, "held-out prompts answered greedily at the end and scored by the storyworld gold judge (storyworld data; 0 = off)")
    max_new_tokens: int = opt(96, "tokens generated per held-out answer")
    group_by_length: bool = opt(False, "batch pairs (examples) of similar length together: less padding, faster steps")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    # the loss names a stage accepts; None = any key of the stage's table
    uses_reference = True

    def loss_names(self) -> tuple[str, ...]:
        return ()

    def validate(self) -> list[str]:
        from lmlab.config import closest

        problems = super().validate()
        if self.beta <= 0:
            problems.append(f"beta must be > 0 (β scales the log-ratios; β → 0 ignores the data), got {self.beta}")
        names = self.loss_names()
        for part in str(getattr(self, "loss", "")).split("+") if names else ():
            if part not in names:
                hint = closest(part, names)
                problems.append(f"loss={part!r} is unknown" + (f"; did you mean '{hint}'?" if hint else "")
                                + f" (losses: {', '.join(names)})")
        if not self.uses_reference and (self.ref_model or self.precompute_ref):
            key = "ref_model" if self.ref_model else "precompute_ref"
            problems.append(f"{key}: {type(self).__name__.removesuffix('Config')} uses no reference model "
                            f"({self.reference_free_why}); remove {key}")
        if self.judge_prompts < 0:
            problems.append(f"judge_prompts must be >= 0, got {self.judge_prompts}")
        return problems

    reference_free_why = ""


@dataclass
class DPOConfig(PreferenceConfig):
    """`lmlab train dpo`: direct preference optimisation (Rafailov et al. 2023) and its variants."""

    loss: str = opt("sigmoid", "sigmoid (DPO eq. 7), ipo (Azar et al. eq. 17, per-token as TRL), hinge (SLiC), robust (Chowdhury et al., needs label_smoothing), "
                    "… any TRL loss_type; join several with + (sigmoid+sft = RPO) and weight them with loss_weights")
    loss_weights: list[float] = opt([], "one weight per '+'-joined loss (default: 1 each), e.g. loss=sigmoid+sft loss_weights=1,0.2")
    label_smoothing: float = opt(0.0, "ε: assumed fraction of flipped labels (robust, exo_pair, aot); 0 = trust every label")

    def loss_names(self) -> tuple[str, ...]:
        from lmlab.train.objectives import DPO_LOSS_TYPES

        return tuple(DPO_LOSS_TYPES)

    def validate(self) -> list[str]:
        from lmlab.errors import ConfigError
        from lmlab.train.objectives import check_dpo_options

        problems = super().validate()
        kinds = self.loss.split("+")
        if self.loss_weights and len(self.loss_weights) != len(kinds):
            problems.append(f"loss_weights={self.loss_weights} has {len(self.loss_weights)} weights for {len(kinds)} "
                            f"loss(es) in loss={self.loss}; give one per loss")
        if not problems:
            try:  # settings a loss needs (label_smoothing ranges of robust / exo_pair)
                check_dpo_options(kinds, self.beta, self.label_smoothing)
            except ConfigError as exc:
                problems.append(str(exc))
        return problems


@dataclass
class KTOConfig(PreferenceConfig):
    """`lmlab train kto`: Kahneman–Tversky optimisation on unpaired good/bad examples (Ethayarajh et al. 2024)."""

    data: str = opt("storyworld/kto", "unpaired feedback (prompt, completion, label)")
    desirable_weight: float = opt(1.0, "λ_D: weight of desirable examples; keep λ_D·n_D / (λ_U·n_U) in [1, 4/3] (paper eq. 8)")
    undesirable_weight: float = opt(1.0, "λ_U: weight of undesirable examples")
    loss: str = opt("kto", "kto (eq. 7 with the batch KL reference point z0) or apo_zero_unpaired (no reference point)")

    def loss_names(self) -> tuple[str, ...]:
        from lmlab.train.objectives import KTO_LOSSES

        return tuple(KTO_LOSSES)

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.batch_size < 2 and self.loss == "kto":
            problems.append(f"batch_size={self.batch_size}: KTO estimates its reference point z0 from the other examples "
                            "of a micro-batch (mismatched completions), which needs batch_size >= 2")
        if self.desirable_weight < 0 or self.undesirable_weight < 0:
            problems.append("desirable_weight and undesirable_weight must be >= 0")
        return problems


@dataclass
class SimPOConfig(PreferenceConfig):
    """`lmlab train simpo`: reference-free, length-normalised preference optimisation (Meng et al. 2024); CPO (Xu et al. 2024)."""

    beta: float = opt(2.0, "β: scale of the length-normalised reward β·log π(y|x)/|y| (SimPO eq. 6; paper uses 2–2.5)")
    gamma: float = opt(1.0, "γ: target reward margin in −log σ(β(l_w − l_l) − γ) (SimPO eq. 6)")
    loss: str = opt("simpo", "simpo (Meng et al. eq. 6, per-token averaged log-probs); CPO's sigmoid (Xu et al. eq. 3, summed), hinge (summed) or ipo (averaged), as TRL's CPOTrainer")
    cpo_alpha: float = opt(0.0, "weight of the NLL on chosen responses (CPO eq. 5's behaviour cloning); 0 = real SimPO, 1 = CPO, simpo with >0 = CPO-SimPO")
    label_smoothing: float = opt(0.0, "ε: conservative sigmoid −(1−ε)logσ(z) − ε·logσ(−z) for simpo and sigmoid")

    uses_reference = False
    reference_free_why = "its reward is the policy's own length-normalised log-probability"

    def loss_names(self) -> tuple[str, ...]:
        from lmlab.train.objectives import CPO_LOSSES

        return tuple(CPO_LOSSES)


@dataclass
class ORPOConfig(PreferenceConfig):
    """`lmlab train orpo`: odds-ratio preference optimisation, SFT and alignment in one loss (Hong et al. 2024)."""

    beta: float = opt(0.1, "λ: weight of the odds-ratio term beside the NLL (ORPO eq. 6)")
    nll_on_prompt: bool = opt(False, "NLL over prompt + response as TRL does (true), or over the response only as the paper's L_SFT (false)")

    uses_reference = False
    reference_free_why = "the odds ratio compares the policy with itself"


# -- online RL (train/online.py) ---------------------------------------------------------------

@dataclass
class OnlineRLConfig(TrainConfig):
    """Keys every online-RL stage shares: prompts, rewards, sampling, rounds."""

    data: str = opt("storyworld/instruct", "prompt dataset: chat records (the prompt is every turn before the last reply, "
                    "which becomes the `answer` column) or text / labelled records (the first prompt_words words)")
    lr: float = opt(1e-5, "peak learning rate (AdamW); RL wants it small")
    reward: str = opt("storyworld:gold", "reward spec: storyworld:gold|happy|qa_exact, a reward-model / classifier folder, "
                      "or package.module:function; several comma-separated")
    reward_weights: list[float] = opt([], "one weight per reward (default 1 each); the weighted sum is optimised")
    reward_label: str | None = opt(None, "classifier rewards: the label whose logit/probability is the reward (name or index; default: the last)")
    reward_output: Literal["logit", "prob"] = opt("logit", "classifier rewards: the label's logit or its softmax probability")
    num_generations: int = opt(1, "G: completions sampled per prompt (a group)")
    rollout_batch: int | None = opt(None, "rollouts per round (prompts × G); default batch_size × grad_accum; a multiple of both G and batch_size × grad_accum")
    ppo_epochs: int = opt(1, "passes over each round's rollouts (PPO's K epochs; GRPO's μ = num_iterations)")
    max_new_tokens: int = opt(32, "completion length cap; a completion that reaches it without a stop token is 'truncated'")
    temperature: float = opt(1.0, "sampling temperature T; log-probs are computed from logits / T, as sampled")
    top_k: int = opt(0, "sample among the k most likely tokens (0 = off)")
    top_p: float = opt(1.0, "nucleus sampling mass (1 = off)")
    prompt_words: int = opt(8, "text / labelled prompts: words of each text used as the prompt (review prefixes)")
    missing_eos_penalty: float = opt(0.0, "subtracted from the reward of a completion with no stop token (TRL missing_eos_penalty)")
    repetition_penalty: float = opt(0.0, "subtracted × the share of repeated word 3-grams in the completion")
    length_penalty: float = opt(0.0, "subtracted × every token beyond target_length")
    target_length: int = opt(0, "tokens free of length_penalty")
    eval_prompts: int = opt(32, "held-out prompts the evaluator samples (reward and gold reward); 0 = no evaluation")
    eval_temperature: float | None = opt(None, "the evaluator's sampling temperature (0 = greedy: a steadier measure for "
                                         "exact-match rewards); default: the training temperature")
    log_rollouts_every: int = opt(1, "append every N-th round's rollouts with their rewards to rollouts.jsonl")
    select_metric: str = opt("reward", "the evaluation metric that picks the kept checkpoint (the evaluator's mean reward)")
    tuning: Literal["full", "freeze", "lora"] = opt("full", "which parameters train")
    lora: LoraSettings = opt(LoraSettings, "LoRA settings (tuning=lora); the reference is then the policy with adapters off")
    freeze: FreezeSettings = opt(FreezeSettings, "partial unfreezing (tuning=freeze)")
    trust_remote_code: bool = opt(False, "allow model code from the hub")

    def rollouts_per_round(self) -> int:
        return self.rollout_batch or self.batch_size * self.grad_accum

    def validate(self) -> list[str]:
        problems = super().validate()
        n, step = self.rollouts_per_round(), self.batch_size * self.grad_accum
        if self.num_generations < 1:
            problems.append(f"num_generations must be >= 1, got {self.num_generations}")
        elif n % self.num_generations:
            problems.append(f"num_generations={self.num_generations} does not divide the rollouts per round ({n} = "
                            "rollout_batch, default batch_size × grad_accum); pick a divisor or change batch_size")
        if n % step:
            problems.append(f"rollout_batch={n} must be a multiple of batch_size × grad_accum = {step} (whole optimizer steps per round)")
        if self.ppo_epochs < 1:
            problems.append(f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0 for RL sampling, got {self.temperature}")
        if self.eval_temperature is not None and self.eval_temperature < 0:
            problems.append(f"eval_temperature must be >= 0 (0 = greedy), got {self.eval_temperature}")
        return problems


@dataclass
class GRPOConfig(OnlineRLConfig):
    """`lmlab train grpo`: group-relative policy optimisation (Shao et al. 2024, DeepSeekMath eq. 3); no critic."""

    num_generations: int = opt(4, "G: completions per prompt; advantages are relative within each group")
    loss: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = opt("dapo", "token-loss aggregation: grpo (per-sequence mean, eq. 3), "
                                                         "dr_grpo (Σ / (B·max_new_tokens), Liu et al. 2025), dapo (Σ / all tokens, Yu et al. 2025), bnpo (micro-batch token mean)")
    scale_rewards: Literal["group", "batch", "none"] = opt("group", "divide (R − mean_G) by the group std (eq. 3), the batch std (Lite-PPO) or nothing (Dr. GRPO)")
    beta: float = opt(0.0, "β: weight of the k3 KL to the reference in the loss (eq. 3's β·D_KL); 0 = no reference loaded")
    epsilon: float = opt(0.2, "ε: ratio clip 1 ± ε (PPO eq. 7)")
    epsilon_high: float | None = opt(None, "upper clip 1 + ε_high (DAPO's clip-higher suggests 0.28); default ε")
    advantage: Literal["grpo", "rloo"] = opt("grpo", "grpo: (R − mean)/std; rloo: R − mean of the other G−1 (Ahmadian et al. 2024)")

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.advantage == "rloo" and self.num_generations < 2:
            problems.append("advantage=rloo needs num_generations >= 2 (a leave-one-out baseline needs siblings)")
        if self.num_generations < 2 and self.advantage == "grpo":
            problems.append("GRPO needs num_generations >= 2: with one completion per prompt every advantage is 0")
        return problems


@dataclass
class RLOOConfig(GRPOConfig):
    """`lmlab train rloo`: REINFORCE leave-one-out (Ahmadian et al. 2024): A_i = R_i − mean_{j≠i} R_j, k1 KL in the reward."""

    num_generations: int = opt(2, "G ≥ 2 completions per prompt")
    advantage: Literal["grpo", "rloo"] = opt("rloo", "rloo (leave-one-out baseline)")
    beta: float = opt(0.05, "β: R_i ← R_i − β·Σ_t (logπ_old − logπ_ref) (k1, sequence level, in the reward; TRL's RLOO default)")
    loss: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = opt("dapo", "token-loss aggregation (see train grpo)")


@dataclass
class PPOConfig(OnlineRLConfig):
    """`lmlab train ppo`: PPO with a value head, per-token KL penalty and GAE (Schulman et al. 2017; Ouyang et al. 2022)."""

    temperature: float = opt(0.7, "sampling temperature T (TRL PPO's default); log-probs from logits / T")
    ppo_epochs: int = opt(4, "K: passes over each round's rollouts")
    kl_coef: float = opt(0.05, "β: per-token penalty −β·(logπ − logπ_ref) in the reward (Ziegler et al. 2019 eq. 2); initial value when kl_target is set")
    kl_target: float | None = opt(None, "target KL per completion for the adaptive β (Ziegler et al. 2019); None = fixed β")
    kl_horizon: int = opt(10000, "adaptive β horizon: β ← β(1 + clip(KL/target − 1, ±0.2)·n/horizon)")
    cliprange: float = opt(0.2, "ε: policy ratio clip 1 ± ε (PPO eq. 7)")
    cliprange_value: float = opt(0.2, "value clip: V within V_old ± this")
    vf_coef: float = opt(0.1, "c1: weight of the value loss (PPO eq. 9)")
    gamma: float = opt(1.0, "γ: discount in GAE (1 = none, as for language)")
    lam: float = opt(0.95, "λ: GAE bias–variance trade-off (Schulman et al. 2016 eq. 16)")
    whiten_rewards: bool = opt(False, "scale (not centre) the per-token rewards each round before GAE")
    value_lr: float | None = opt(None, "learning rate of the value head (default: lr)")
