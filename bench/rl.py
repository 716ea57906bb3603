"""GRPO throughput and peak memory: lmlab `train grpo` machinery vs TRL `GRPOTrainer`, same everything else.

    .venv/bin/python bench/rl.py [steps=12 warmup=2 rounds=1 prompts_per_step=4 num_generations=4 max_new_tokens=32 hidden=64 layers=2]

Same model (a Qwen2 built locally and saved once, loaded by both arms from that folder), same
tokenizer, same prompts (the first 6 words of storyworld stories, raw text), same reward function
(the share of 'e' characters: cheap, so the reward is not what is measured), same sampling
(temperature 1, no top-k/top-p, max_new_tokens, num_generations), β = 0 (no reference model in
either), one optimizer step per generation round (TRL: per_device_train_batch_size = prompts ×
generations, num_iterations = 1; lmlab: batch_size = rollout_batch, ppo_epochs = 1), loss dapo,
fp32 on CPU. Each arm runs in its own subprocess, so peak memory is its own; `rounds=N` repeats
both arms in rotation and reports medians (`common.run_rounds`).

Timing: a global optimizer step hook stamps every optimizer step (TRL generates with the model in
train mode, so training forwards cannot be told from generation forwards); the span from the end
of step `warmup` to the end of the last step covers whole steps (generation + scoring + update).
The generating call (TRL: the policy's `generate`; lmlab: `lmlab.train.sampler.generate_tokens`, its own
KV-cache decode loop for Llama-family models) is wrapped to time each call and count the generated
(non-pad) tokens, so the JSON also says which share of a step is generation. Prints one JSON object:
`prompts_per_s_vs_trl`, `gen_tokens_per_s_vs_trl`, `peak_mem_vs_trl`, and per arm the figures.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

DEFAULTS: dict[str, Any] = {"steps": 12, "warmup": 2, "prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 32,
                            "hidden": 64, "layers": 2, "vocab_size": 1024, "lr": 1e-5, "seed": 0, "n_prompts": 256,
                            "rounds": 1}
ARMS = ("lmlab", "trl")


def e_share(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """The reward both arms optimise: share of 'e' characters in the completion."""
    return [c.count("e") / max(len(c), 1) for c in completions]


def prepare(opts: dict[str, Any], root: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lmlab.data.loaders import load_texts
    from lmlab.tokenizers import train_tokenizer

    texts = load_texts("storyworld/pretrain", limit=2000)
    tok = train_tokenizer(texts, vocab_size=opts["vocab_size"], out=root / "model")
    h = opts["hidden"]
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=h, intermediate_size=3 * h, num_hidden_layers=opts["layers"],
                      num_attention_heads=max(1, h // 32), num_key_value_heads=max(1, h // 64), max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(opts["seed"])
    Qwen2ForCausalLM(cfg).save_pretrained(root / "model")
    prompts = [" ".join(t.split()[:6]) for t in texts[: opts["n_prompts"]]]
    (root / "prompts.json").write_text(json.dumps(prompts))


class StepClock:
    """Stamps the end of every optimizer step (any torch optimizer in this process)."""

    def __init__(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.stamps: list[float] = []
        register_optimizer_step_post_hook(lambda opt, args, kwargs: self.stamps.append(time.perf_counter()))


class GenerateTimer:
    """Wraps the function that generates (HF `model.generate` for TRL, `lmlab.train.sampler.generate_tokens`
    for lmlab): (start, end, new tokens) of every call."""

    def __init__(self, owner: Any, name: str, pad_id: int):
        self.calls: list[tuple[float, float, int]] = []
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            seqs = out.sequences if hasattr(out, "sequences") else out
            if "input_ids" in kwargs:
                prompt_len = kwargs["input_ids"].shape[1]
            else:  # generate_tokens(model, enc, kwargs, n)
                prompt_len = args[1]["input_ids"].shape[1] if isinstance(args[1], dict) else args[0].shape[1]
            self.calls.append((t0, time.perf_counter(), int((seqs[:, prompt_len:] != pad_id).sum())))
            return out

        setattr(owner, name, timed)

    def within(self, a: float, b: float) -> tuple[float, int]:
        calls = [c for c in self.calls if c[0] >= a and c[1] <= b]
        return sum(e - s for s, e, _ in calls), sum(n for _, _, n in calls)


def _load(root: Path) -> tuple[Any, Any, list[str]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "model")
    model = AutoModelForCausalLM.from_pretrained(root / "model", attn_implementation="sdpa")
    return model, tok, json.loads((root / "prompts.json").read_text())


def run_lmlab(root: Path, opts: dict[str, Any]) -> tuple[Any, Any]:
    from common import Meter

    from lmlab.runs import RunDir
    from lmlab.train import sampler
    from lmlab.train.advantages import KLController
    from lmlab.train.config import GRPOConfig
    from lmlab.train.online import grpo_advantages, make_grpo_step
    from lmlab.train.rewards import load_rewards
    from lmlab.train.rollout import PromptItem, RolloutSource, RoundPlan, Sampling
    from lmlab.train.trainer import Trainer

    model, tok, prompts = _load(root)
    meter, timer = Meter(model, tok.pad_token_id), GenerateTimer(sampler, "generate_tokens", tok.pad_token_id)
    meter.clock = StepClock()
    G, B = opts["num_generations"], opts["prompts_per_step"] * opts["num_generations"]
    cfg = GRPOConfig(model=str(root / "model"), max_steps=opts["steps"], batch_size=B, rollout_batch=B, num_generations=G,
                     max_new_tokens=opts["max_new_tokens"], lr=opts["lr"], warmup_steps=0, log_every=10**9,
                     keep_best=False, save_every=0, weight_decay=0.0, clip_grad=1.0, eval_prompts=0, beta=0.0, loss="dapo")
    items = [PromptItem(p, p) for p in prompts]
    source = RolloutSource(items, load_rewards([e_share]), RoundPlan(B, G, B, 1),
                           Sampling(cfg.max_new_tokens, 1.0, 0, 1.0), tok, advantages=grpo_advantages(cfg), seed=0,
                           kl=KLController(0.0), on_policy=True)
    step = make_grpo_step("dapo", 0.0, 0.2, None, 1.0, cfg.max_new_tokens)
    out = Path(tempfile.mkdtemp(prefix="lmlab-bench-rl-"))
    Trainer(model, step, source, cfg, RunDir(out / "run")).fit()
    return meter, timer


def run_trl(root: Path, opts: dict[str, Any]) -> tuple[Any, Any]:
    import datasets
    from common import Meter
    from trl import GRPOConfig, GRPOTrainer

    model, tok, prompts = _load(root)
    meter, timer = Meter(model, tok.pad_token_id), GenerateTimer(model, "generate", tok.pad_token_id)
    meter.clock = StepClock()
    G, B = opts["num_generations"], opts["prompts_per_step"] * opts["num_generations"]
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-bench-rl-"), max_steps=opts["steps"],
                      per_device_train_batch_size=B, num_generations=G, max_completion_length=opts["max_new_tokens"],
                      learning_rate=opts["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                      max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[], seed=opts["seed"],
                      temperature=1.0, top_p=1.0, top_k=0, beta=0.0, loss_type="dapo", num_iterations=1,
                      use_cpu=True, bf16=False, disable_tqdm=True, dataloader_num_workers=0)
    ds = datasets.Dataset.from_list([{"prompt": p} for p in prompts])
    GRPOTrainer(model=model, reward_funcs=[e_share], args=args, train_dataset=ds, processing_class=tok).train()
    return meter, timer


def child(arm: str, root: Path, opts: dict[str, Any]) -> None:
    os.environ.setdefault("LMLAB_QUIET", "1")
    meter, timer = (run_lmlab if arm == "lmlab" else run_trl)(root, opts)
    stats = meter.report(0)  # peak memory (its forward stamps are not used: see StepClock)
    stamps = meter.clock.stamps
    a, b = stamps[opts["warmup"]], stamps[-1]
    steps = len(stamps) - 1 - opts["warmup"]
    gen_s, gen_tokens = timer.within(a, b)
    span = b - a
    print("RESULT " + json.dumps({
        "steps_timed": steps, "s_per_step": span / steps,
        "prompts_per_s": steps * opts["prompts_per_step"] / span,
        "gen_tokens_per_s": gen_tokens / gen_s if gen_s else 0.0, "gen_tokens": gen_tokens,
        "generation_share_of_step": gen_s / span, "peak_rss_mb": stats["peak_rss_mb"],
        "peak_rss_above_model_mb": stats["peak_rss_above_model_mb"]}))


def main(argv: list[str]) -> None:
    from common import emit, machine, medians, options, run_rounds

    if argv and argv[0] == "--child":
        child(argv[1], Path(argv[2]), json.loads(argv[3]))
        return
    opts = options(DEFAULTS, argv)
    root = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    prepare(opts, root)

    def describe(r: dict[str, Any]) -> str:
        return (f"{r['prompts_per_s']:.2f} prompts/s, {r['gen_tokens_per_s']:.0f} generated tok/s, "
                f"generation {r['generation_share_of_step']:.0%} of a step, peak RSS {r['peak_rss_mb']:.0f} MB")

    runs = run_rounds(__file__, ARMS, int(opts["rounds"]), [str(root), json.dumps(opts)], describe)
    results = {arm: medians(rs, spread=("prompts_per_s",)) for arm, rs in runs.items()}
    lm, trl = results["lmlab"], results["trl"]
    emit({"config": opts, "machine": machine(), "arms": results,
          "prompts_per_s_vs_trl": lm["prompts_per_s"] / trl["prompts_per_s"],
          "gen_tokens_per_s_vs_trl": lm["gen_tokens_per_s"] / max(trl["gen_tokens_per_s"], 1e-9),
          "peak_mem_vs_trl": lm["peak_rss_mb"] / trl["peak_rss_mb"]})


if __name__ == "__main__":
    main(sys.argv[1:])
